"""Alignment benchmark (issue 2, METHOD.md step 9): ERM vs RRR with ground-truth masks vs LVLM-VA.

For each benchmark set and seed: train the original model with cross-entropy (ERM); choose the
alignment set by low entropy; explain it (DeepLIFT-SHAP), segment it (PPEPS-WGM); then fine-tune with RRR
  - with ground-truth artefact masks on the same alignment set ("RRR-GT (set)"),
  - with ground-truth masks on every training image, mixed in the same way ("RRR-GT (all)"),
  - with masks from segments judged by the simulated critic at verdict accuracy 1.0, 0.87 and 0.42
    ("LVLM-VA sim@acc": the ground-truth critic with deliberate verdict errors; benchmark only),
    once without and once with the verdict consistency check before the masks ("+check"; the pipeline's
    default, core/consistency.py; the masks come from the same core function as pipeline.alignment_masks),
and report test accuracy and worst-group accuracy (mean +/- std over seeds), plus the share of artefact
images in alignment sets chosen by low-entropy, random and high-entropy sampling.

    python benchmarks/alignment.py                       # all sets, 3 seeds
    python benchmarks/alignment.py --sets isic-like --seeds 0
    python benchmarks/alignment.py --sets isic-like --seeds 0 --attribution-images 0 --skip-gt-all --consistency on
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from _common import ROOT, project_for

from lvlmva_desktop.core.consistency import verdict_masks
from lvlmva_desktop.core.critic import SPURIOUS, GroundTruthCritic
from lvlmva_desktop.core.explain import ExplainSettings, attribute, background_set, reference_images
from lvlmva_desktop.core.metrics import alignment_score, evaluate_predictions
from lvlmva_desktop.core.models import ModelSpec, build_model
from lvlmva_desktop.core.sampling import SamplingSettings, select_alignment_set
from lvlmva_desktop.core.segment import SegmentSettings, evidence_map, ppeps_wgm
from lvlmva_desktop.core.train import AlignSettings, TrainSettings, fine_tune_rrr, predict_proba, train_erm

# Per-set configuration: data parameters, model, ERM and RRR settings (lambda calibrated per set).
CONFIGS = {
    "decoymnist": {
        "params": {"n_train": 3500, "n_test": 1500},
        "size": 28,
        "channels": 1,
        "arch": "mlp",
        "train": {"epochs": 8, "lr": 1e-3},
        "align": {"lambda_": 0.003, "epochs": 5, "lr": 1e-3},
        "n_align": 300,
    },
    "isic-like": {
        "params": {"n_train": 1600, "n_test": 800, "size": 32, "p_benign_patch": 0.9},
        "size": 32,
        "channels": 3,
        "arch": "small_cnn",
        "train": {"epochs": 8, "lr": 1e-3},
        "align": {"lambda_": 1.0, "epochs": 5, "lr": 1e-3},
        "n_align": 200,
    },
    "elpv-tags": {
        "params": {"size": 64},
        "size": 64,
        "channels": 1,
        "arch": "small_cnn",
        "train": {"epochs": 10, "lr": 1e-3},
        "align": {"lambda_": 30.0, "epochs": 5, "lr": 1e-3},
        "n_align": 200,
    },
}
CRITIC_ACCURACIES = (1.0, 0.87, 0.42)
MIN_GROUP = 20  # groups smaller than this are left out of WGA (DecoyMNIST has ~15 "decoy matches" per digit)


def evaluate(model, test, classes, device, min_group_size, bg=None, n_attr=0):
    probs = predict_proba(model, test.x, device)
    ev = evaluate_predictions(probs.argmax(1), test.y, test.groups, classes, min_group_size)
    out = {"acc": ev.accuracy, "wga": ev.worst_group_accuracy}
    if n_attr:
        idx = torch.nonzero(test.has_mask).flatten()[:n_attr]
        a = attribute(model, test.x[idx], test.y[idx], bg, ExplainSettings(n_background=len(bg)), device)
        out["alignment"] = alignment_score(a.maps, test.masks[idx])
    return out


def run_one(
    name: str,
    seed: int,
    out: Path,
    device: torch.device,
    n_attr: int,
    overrides: dict,
    critic_errors: str = "both",
    consistency: str = "both",
    skip_gt_all: bool = False,
) -> dict:
    cfg = json.loads(json.dumps(CONFIGS[name]))
    for k, v in overrides.items():
        cfg[k].update(v) if isinstance(cfg.get(k), dict) else cfg.__setitem__(k, v)
    t_start = time.perf_counter()
    project = project_for(name, seed, out, cfg["params"], cfg["size"], cfg["channels"])
    train, test = project.load_split("train"), project.load_split("test")
    classes = project.classes
    spec = ModelSpec(cfg["arch"], len(classes), cfg["channels"], (cfg["size"], cfg["size"]))
    torch.manual_seed(seed)
    erm = build_model(spec)
    t0 = time.perf_counter()
    train_erm(erm, train.x, train.y, TrainSettings(seed=seed, **cfg["train"]), device)
    t_erm = time.perf_counter() - t0
    bg = background_set(train.x, 8, seed)
    rows = {"ERM": evaluate(erm, test, classes, device, MIN_GROUP, bg, n_attr)}

    probs = predict_proba(erm, train.x, device)
    shares = {}
    for strategy in ("low_entropy", "random", "high_entropy"):
        idx = select_alignment_set(
            probs, train.y, SamplingSettings(n=cfg["n_align"], strategy=strategy, seed=seed)
        )
        shares[strategy] = float(train.has_mask[idx].float().mean())
    aidx = select_alignment_set(probs, train.y, SamplingSettings(n=cfg["n_align"], seed=seed))
    ax, ay, agt = train.x[aidx], train.y[aidx], train.masks[aidx]
    align = AlignSettings(seed=seed, **cfg["align"])

    def rrr(masks, images=None):
        """RRR from the ERM model; ``images`` = (x, y) of the set the masks belong to (default: alignment set)."""
        t = time.perf_counter()
        sx, sy = images if images is not None else (ax, ay)
        tuned, _ = fine_tune_rrr(erm, train.x, train.y, sx, sy, masks, align, device)
        return tuned, time.perf_counter() - t

    m, t_rrr = rrr(agt)
    rows["RRR-GT (set)"] = evaluate(m, test, classes, device, MIN_GROUP, bg, n_attr)
    if not skip_gt_all:
        m, _ = rrr(train.masks, images=(train.x, train.y))  # the same procedure with every training image
        rows["RRR-GT (all)"] = evaluate(m, test, classes, device, MIN_GROUP, bg, n_attr)

    # the LVLM-VA path: attributions -> PPEPS-WGM segments -> critic verdicts -> masks
    t0 = time.perf_counter()
    explain = ExplainSettings(**{"seed": seed, **cfg.get("explain", {})})
    expl = attribute(erm, ax, ay, reference_images(train.x, explain), explain, device)
    seg_settings = SegmentSettings(**{"seed": seed, **cfg.get("segment", {})})
    seg = ppeps_wgm(expl.maps.to(device), seg_settings)
    t_explain = time.perf_counter() - t0
    # build critique requests the same way the pipeline does
    from lvlmva_desktop.core.critic import CritiqueRequest

    reqs = [
        CritiqueRequest(
            int(i),
            ax[k],
            int(ay[k]),
            classes[int(ay[k])],
            "",
            expl.maps[k],
            seg.labels[k].cpu(),
            seg.evidence[k].tolist(),
            agt[k] if bool(train.has_mask[i]) else None,
            seg_settings.evidence,
        )
        for k, i in enumerate(aidx.tolist())
    ]
    verdict_acc, held_back = {}, {}
    variants = {"off": [False], "on": [True], "both": [False, True]}[consistency]
    for acc in CRITIC_ACCURACIES:
        critic = GroundTruthCritic(error_rate=round(1.0 - acc, 4), seed=seed, errors=critic_errors)
        crits = list(critic.critique(reqs))
        truth = torch.tensor([c.raw["truth"] for c in crits], dtype=torch.bool)
        spurious = torch.tensor(
            [[v.verdict == SPURIOUS for v in c.verdicts] for c in crits], dtype=torch.bool
        )
        verdict_acc[acc] = float((spurious == truth).float().mean())
        for on in variants:
            # the same core function as pipeline.alignment_masks; the simulated critic is no expert
            settings = dataclasses.replace(align, consistency_check=on)
            masks, check = verdict_masks(
                ax,
                evidence_map(expl.maps, seg_settings.evidence),
                seg.labels.cpu(),
                spurious,
                torch.ones_like(spurious),
                torch.zeros_like(spurious),
                settings,
            )
            m, _ = rrr(masks)
            rows[f"LVLM-VA sim@{acc:.2f}{' +check' if on else ''}"] = evaluate(
                m, test, classes, device, MIN_GROUP, bg, n_attr
            )
            if check is not None:  # diagnostics only: which verdicts the check held back, by ground truth
                held_back[acc] = {
                    "judged_spurious": int(spurious.sum()),
                    "false_spurious": int((spurious & ~truth).sum()),
                    "held_back": int(check.held.sum()),
                    "held_back_false_spurious": int((check.held & ~truth).sum()),
                    "held_back_true_spurious": int((check.held & truth).sum()),
                }
    project.close()
    return {
        "set": name,
        "seed": seed,
        "rows": rows,
        "sampling_artefact_share": shares,
        "artefact_share_train": float(train.has_mask.float().mean()),
        "verdict_accuracy": verdict_acc,
        "consistency_held_back": held_back,
        "times_s": {
            "erm": t_erm,
            "rrr_one": t_rrr,
            "explain_segment": t_explain,
            "total": time.perf_counter() - t_start,
        },
        "config": cfg,
    }


def summarise(results: list[dict]) -> str:
    lines = []
    by_set: dict[str, list[dict]] = {}
    for r in results:
        by_set.setdefault(r["set"], []).append(r)

    def ms(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "   n/a      "
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.3f}±{sd:.3f}"

    for name, rs in by_set.items():
        seeds = [r["seed"] for r in rs]
        lines.append(
            f"\n## {name} (seeds {seeds}; {rs[0]['config']['arch']}, "
            f"N={rs[0]['config']['n_align']}, lambda={rs[0]['config']['align']['lambda_']:g})"
        )
        has_al = "alignment" in rs[0]["rows"]["ERM"]
        lines.append(
            f"{'method':22s} {'accuracy':>12s} {'WGA':>12s}" + (f" {'alignment':>12s}" if has_al else "")
        )
        for method in rs[0]["rows"]:
            acc = ms([r["rows"][method]["acc"] for r in rs])
            wga = ms([r["rows"][method]["wga"] for r in rs])
            al = ms([r["rows"][method].get("alignment") for r in rs]) if has_al else ""
            lines.append(f"{method:22s} {acc:>12s} {wga:>12s}" + (f" {al:>12s}" if has_al else ""))
        erm_w = [r["rows"]["ERM"]["wga"] for r in rs]
        gt_w = [r["rows"]["RRR-GT (set)"]["wga"] for r in rs]
        gap = statistics.mean(g - e for g, e in zip(gt_w, erm_w))
        lines.append(f"WGA gap RRR-GT(set) - ERM: {gap:+.3f}")
        for method in rs[0]["rows"]:
            if not method.startswith("LVLM-VA"):
                continue
            v = [r["rows"][method]["wga"] for r in rs]
            rec = statistics.mean(x - e for x, e in zip(v, erm_w)) / gap if gap > 0 else float("nan")
            d_acc = statistics.mean(r["rows"][method]["acc"] - r["rows"]["ERM"]["acc"] for r in rs)
            lines.append(
                f"  {method:22s} recovers {rec:5.0%} of the gap; accuracy change vs ERM {d_acc:+.3f}"
            )
        for a in CRITIC_ACCURACIES:
            hb = [r["consistency_held_back"][a] for r in rs if a in r.get("consistency_held_back", {})]
            if hb:
                tot = {k: sum(h[k] for h in hb) for k in hb[0]}
                lines.append(
                    f"  check at sim@{a:.2f} (all seeds): held back {tot['held_back']} of "
                    f"{tot['judged_spurious']} 'spurious' verdicts: {tot['held_back_false_spurious']} of the "
                    f"{tot['false_spurious']} false ones, {tot['held_back_true_spurious']} true ones"
                )
        va = {a: statistics.mean(r["verdict_accuracy"][a] for r in rs) for a in CRITIC_ACCURACIES}
        lines.append(
            "measured verdict accuracy of the simulated critics: "
            + ", ".join(f"{a:.2f} -> {v:.3f}" for a, v in va.items())
        )
        sh = {
            s: statistics.mean(r["sampling_artefact_share"][s] for r in rs)
            for s in rs[0]["sampling_artefact_share"]
        }
        lines.append(
            f"artefact share in the alignment set: low-entropy {sh['low_entropy']:.2f}, random "
            f"{sh['random']:.2f}, high-entropy {sh['high_entropy']:.2f} (training set "
            f"{statistics.mean(r['artefact_share_train'] for r in rs):.2f})"
        )
        t = statistics.mean(r["times_s"]["total"] for r in rs)
        lines.append(
            f"time per seed: {t:.0f} s (ERM {statistics.mean(r['times_s']['erm'] for r in rs):.1f} s, one RRR "
            f"fine-tune {statistics.mean(r['times_s']['rrr_one'] for r in rs):.1f} s, explain+segment "
            f"{statistics.mean(r['times_s']['explain_segment'] for r in rs):.1f} s)"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "bench_out"))
    ap.add_argument(
        "--attribution-images",
        type=int,
        default=100,
        help="test images with an artefact used for the alignment score (0 = skip)",
    )
    ap.add_argument(
        "--override", default="{}", help='JSON per-set overrides, e.g. {"align": {"lambda_": 100}}'
    )
    ap.add_argument("--json", help="also write all results here")
    ap.add_argument(
        "--critic-errors",
        choices=GroundTruthCritic.ERROR_KINDS,
        default="both",
        help="which verdicts the simulated critics may flip (both = the headline; the others diagnose)",
    )
    ap.add_argument(
        "--consistency",
        choices=("off", "on", "both"),
        default="both",
        help="the verdict consistency check before masks (AlignSettings.consistency_check): rows without it "
        "('LVLM-VA sim@a'), with it ('LVLM-VA sim@a +check'), or both",
    )
    ap.add_argument("--skip-gt-all", action="store_true", help="leave out the RRR-GT (all) row (saves time)")
    args = ap.parse_args()
    from lvlmva_desktop.core.devices import describe_device, resolve_device

    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.sets:
        for seed in args.seeds:
            r = run_one(
                name,
                seed,
                out,
                device,
                args.attribution_images,
                json.loads(args.override),
                args.critic_errors,
                args.consistency,
                args.skip_gt_all,
            )
            results.append(r)
            print(
                f"[{name} seed {seed}] "
                + ", ".join(f"{k}: acc {v['acc']:.3f} wga {v['wga']:.3f}" for k, v in r["rows"].items()),
                flush=True,
            )
    print(summarise(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
