"""Why alignment normalises a mixed batch with the statistics of its ordinary images (train.fit).

The alignment images are the model's most confident ones, a skewed sample; in a mixed batch they (and the
counterfactual images made from them) shifted the batch-norm statistics, and a model with nothing to
unlearn lost worst-group accuracy from the fine-tuning alone. This script fine-tunes the same ERM model
on the control set (the patch on half of both classes: no shortcut) and on the shortcut set, once as the
program does (statistics of the ordinary images) and once with plain batch statistics over the whole mixed
batch, both without a penalty (strength 0: only the mixing) and with the counterfactual penalty at
strength 1 and the true masks, and prints the change in accuracy and worst-group accuracy against ERM.

    python benchmarks/batchnorm.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from pathlib import Path

import torch
from _common import ROOT, project_for

from lvlmva_desktop.core.method import train as train_mod
from lvlmva_desktop.core.method.metrics import evaluate_predictions
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.method.sampling import SamplingSettings, select_alignment_set
from lvlmva_desktop.core.method.settings import AlignSettings, TrainSettings
from lvlmva_desktop.core.method.train import fine_tune_rrr, predict_proba, train_erm

SETS = {
    "isic-control": {
        "n_train": 1600,
        "n_test": 800,
        "size": 32,
        "p_benign_patch": 0.5,
        "p_malignant_patch": 0.5,
    },
    "isic-like": {"n_train": 1600, "n_test": 800, "size": 32, "p_benign_patch": 0.9},
}


@contextlib.contextmanager
def plain_batch_statistics():
    """Batch norm over the whole mixed batch, as before the fix."""
    saved = train_mod._reference_batchnorm
    train_mod._reference_batchnorm = lambda model, n: contextlib.nullcontext()
    try:
        yield
    finally:
        train_mod._reference_batchnorm = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    out = Path(ROOT / "bench_out")
    for name, params in SETS.items():
        changes: dict[str, list[tuple[float, float]]] = {}
        for seed in args.seeds:
            project = project_for("isic-like", seed, out, params, 32, 3)
            train, test = project.load_split("train"), project.load_split("test")
            torch.manual_seed(seed)
            erm = build_model(ModelSpec("small_cnn", 2, 3, (32, 32)))
            train_erm(erm, train.x, train.y, TrainSettings(seed=seed), cpu)

            def evaluate(model, test=test, classes=project.classes) -> tuple[float, float]:
                pred = predict_proba(model, test.x, cpu).argmax(1)
                ev = evaluate_predictions(pred, test.y, test.groups, classes, 20)
                return ev.accuracy, ev.worst_group_accuracy

            acc0, wga0 = evaluate(erm)
            idx = select_alignment_set(predict_proba(erm, train.x, cpu), train.y, SamplingSettings(seed=seed))
            ax, ay, masks = train.x[idx], train.y[idx], train.masks[idx]
            for strength in (0.0, 1.0):
                for mode in ("ordinary images (the program)", "whole mixed batch"):
                    settings = AlignSettings(lambda_=strength, seed=seed)
                    ctx = plain_batch_statistics() if mode.startswith("whole") else contextlib.nullcontext()
                    with ctx:
                        tuned, _ = fine_tune_rrr(erm, train.x, train.y, ax, ay, masks, settings, cpu)
                    acc, wga = evaluate(tuned)
                    changes.setdefault(f"strength {strength:g}, statistics of the {mode}", []).append(
                        (acc - acc0, wga - wga0)
                    )
            project.close()
        print(f"\n## {name} (seeds {args.seeds}): change against ERM, mean (per seed)")
        for k, v in changes.items():
            d_acc = statistics.mean(a for a, _ in v)
            d_wga = statistics.mean(w for _, w in v)
            per = " ".join(f"{w:+.3f}" for _, w in v)
            print(f"  {k:62s} accuracy {d_acc:+.3f}, WGA {d_wga:+.3f} ({per})")


if __name__ == "__main__":
    main()
