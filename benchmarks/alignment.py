"""Alignment benchmark: ERM vs RRR with ground-truth masks vs LVLM-VA with simulated critics, on any set.

Every set runs with the program's defaults (core/method/settings.py): nothing here is tuned per set. A set is
described only by its data (generator parameters, image size, channels) and the user's model (the
architecture); the penalty strength chooses itself (core/method/strength.py). For each set and seed the script
runs `core.method.qualify.qualify` (the function behind `lvlmva qualify`): ERM, RRR-GT (set), and LVLM-VA with the
simulated critic at verdict accuracy 1.0 / 0.87 / 0.42 with the consistency check, then prints the table
over seeds, the share of the ERM -> RRR-GT (set) WGA gap each critic recovers on the mean and per seed, and
what the consistency check held back.

    python benchmarks/alignment.py                                  # the built-in sets, 5 seeds
    python benchmarks/alignment.py --sets isic-like --seeds 0 1
    python benchmarks/alignment.py --sets isic-control               # the control: nothing to fix
    python benchmarks/alignment.py --manifest data/manifest.csv --image-size 64 --channels 1 [--arch small_cnn]

A manifest needs the columns path,label,group,split,mask (docs/data.md): artefact masks and groups.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import ROOT, project_for

from lvlmva_desktop.core.method.qualify import CRITIC_ACCURACIES, ERM, GT, qualify, seeded, sim_row
from lvlmva_desktop.core.method.settings import ARCHITECTURES, PipelineSettings

# What describes each named set: its generator and parameters, image size and channels, and the user's
# model architecture. No method setting lives here.
SETS = {
    "decoymnist": {
        "gen": "decoymnist",
        "params": {"n_train": 3500, "n_test": 1500},
        "size": 28,
        "channels": 1,
        "arch": "mlp",
    },
    "isic-like": {
        "gen": "isic-like",
        "params": {"n_train": 1600, "n_test": 800, "size": 32, "p_benign_patch": 0.9},
        "size": 32,
        "channels": 3,
        "arch": "small_cnn",
    },
    "elpv-tags": {"gen": "elpv-tags", "params": {"size": 64}, "size": 64, "channels": 1, "arch": "small_cnn"},
    # the control: the patch on half of both classes in training, so ERM has no shortcut to unlearn
    "isic-control": {
        "gen": "isic-like",
        "params": {
            "n_train": 1600,
            "n_test": 800,
            "size": 32,
            "p_benign_patch": 0.5,
            "p_malignant_patch": 0.5,
        },
        "size": 32,
        "channels": 3,
        "arch": "small_cnn",
    },
    # sets of our own, unlike the three above (docs/benchmarks.md, "Sets nobody tuned for")
    "surface-tagcode": {
        "gen": "surface",
        "params": {"letter_code": True},
        "size": 64,
        "channels": 1,
        "arch": "small_cnn",
    },
    "surface-ruler": {
        "gen": "surface",
        "params": {
            "artefact": "ruler",
            "channels": 3,
            "size": 48,
            "texture": "fabric",
            "p_defective": 0.0,
            "p_ok": 0.9,
        },
        "size": 48,
        "channels": 3,
        "arch": "small_cnn",
    },
    "surface-dot": {
        "gen": "surface",
        "params": {"artefact": "dot", "p_defective": 0.85},
        "size": 64,
        "channels": 1,
        "arch": "small_cnn",
    },
    "surface-control": {
        "gen": "surface",
        "params": {"artefact": "tag", "p_defective": 0.5, "p_ok": 0.5},
        "size": 64,
        "channels": 1,
        "arch": "small_cnn",
    },
}
BUILT_IN = ("decoymnist", "isic-like", "elpv-tags")
MIN_GROUP = 20  # groups smaller than this are left out of WGA (DecoyMNIST has ~15 "decoy matches" per digit)


def manifest_project(manifest: Path, size: int, channels: int, out: Path):
    """A project (made once) holding the images of a user's manifest."""
    import hashlib

    from lvlmva_desktop.core.data.importing import import_csv_manifest
    from lvlmva_desktop.core.store.project import Project

    key = hashlib.sha256(f"{manifest.resolve()}:{size}:{channels}".encode()).hexdigest()[:12]
    folder = out / f"manifest-{manifest.stem}-{key}"
    if (folder / "project.json").exists():
        return Project.open(folder)
    report = import_csv_manifest(manifest)
    if not report.samples:
        raise SystemExit(f"error: no usable image in {manifest}:\n{report.summary()}")
    p = Project.create(folder, manifest.stem, report.classes, (size, size), channels)
    p.add_samples(report)
    print(report.summary())
    table = report.class_group_table()
    if table:
        print(table)
    return p


def run_one(project, arch: str, seed: int, device: torch.device, changes: list[str] | None = None) -> dict:
    settings = seeded(method_settings(arch, changes), seed)
    settings.evaluate.min_group_size = MIN_GROUP
    t = time.perf_counter()
    res = qualify(project, settings, device, critic_seed=seed, store=False)
    res["seconds"] = time.perf_counter() - t
    return res


def method_settings(arch: str, changes: list[str] | None) -> PipelineSettings:
    """The program's defaults, with ``--set`` changes applied to every set alike (for experiments: the
    published figures use none)."""
    if not changes:
        return PipelineSettings(arch=arch)
    from argparse import Namespace

    from lvlmva_desktop.cli.common import pipeline_settings

    return pipeline_settings(Namespace(set=changes, settings=None, arch=arch, seed=None))


def summarise(name: str, arch: str, results: list[dict]) -> str:
    def ms(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "    n/a     "
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.3f}±{sd:.3f}"

    seeds = [r["seed"] for r in results]
    changed = results[0].get("changes") or []
    lines = [
        f"\n## {name} (seeds {seeds}; {arch}; {'program defaults' if not changed else ', '.join(changed)})"
    ]
    lines.append(f"{'method':26s} {'accuracy':>12s} {'WGA':>12s} {'reliance':>12s}  strength per seed")
    for method in results[0]["rows"]:
        rows = [r["rows"][method] for r in results]
        strengths = " ".join("-" if x.get("strength") is None else f"{x['strength']:g}" for x in rows)
        lines.append(
            f"{method:26s} {ms([x['accuracy'] for x in rows]):>12s} {ms([x['wga'] for x in rows]):>12s} "
            f"{ms([x.get('reliance') for x in rows]):>12s}  {strengths}"
        )
    erm = [r["rows"][ERM]["wga"] for r in results]
    gt = [r["rows"][GT]["wga"] for r in results]
    if all(v is not None for v in erm + gt):
        gap = statistics.mean(g - e for g, e in zip(gt, erm))
        lines.append(
            f"WGA gap RRR-GT (set) - ERM: {gap:+.3f} (per seed {' '.join(f'{g - e:+.3f}' for g, e in zip(gt, erm))})"
        )
        for acc in CRITIC_ACCURACIES:
            m = sim_row(acc)
            if m not in results[0]["rows"]:
                continue
            w = [r["rows"][m]["wga"] for r in results]
            d_acc = statistics.mean(r["rows"][m]["accuracy"] - r["rows"][ERM]["accuracy"] for r in results)
            d_wga = statistics.mean(x - e for x, e in zip(w, erm))
            per = [(x - e) / (g - e) if g - e > 0 else None for x, e, g in zip(w, erm, gt)]
            per_s = " ".join("n/a" if p is None else f"{p:.0%}" for p in per)
            n_ok = sum(1 for p in per if p is not None and p >= 0.7)
            rec = d_wga / gap if gap > 0 else None
            lines.append(
                f"  {m:26s} recovers {'n/a' if rec is None else f'{rec:.0%}'} of the gap on the mean "
                f"(per seed {per_s}; >= 70% on {n_ok} of {len(per)}); WGA change {d_wga:+.3f}, accuracy change "
                f"{d_acc:+.3f}"
            )
    for acc in CRITIC_ACCURACIES:
        key = f"{acc:.2f}"
        cs = [r["consistency"][key] for r in results if key in r["consistency"]]
        if cs:
            tot = {k: sum(c[k] for c in cs) for k in cs[0]}
            share = tot["held_back_true_spurious"] / tot["true_spurious"] if tot["true_spurious"] else 0.0
            lines.append(
                f"  check at sim@{key}: held back {tot['held_back_false_spurious']} of {tot['false_spurious']} false "
                f"and {tot['held_back_true_spurious']} of {tot['true_spurious']} true 'spurious' verdicts ({share:.1%})"
            )
    va = {
        k: statistics.mean(r["verdict_accuracy"][k] for r in results) for k in results[0]["verdict_accuracy"]
    }
    lines.append(
        "measured verdict accuracy of the simulated critics: "
        + ", ".join(f"{k} -> {v:.3f}" for k, v in va.items())
    )
    sh = results[0]["sampling_artefact_share"]
    lines.append(
        "artefact share in the alignment set: "
        + ", ".join(
            f"{k.replace('_', '-')} {statistics.mean(r['sampling_artefact_share'][k] for r in results):.2f}"
            for k in sh
        )
        + f" (training set {statistics.mean(r['artefact_share_train'] for r in results):.2f})"
    )
    lines.append(f"time per seed: {statistics.mean(r['seconds'] for r in results):.0f} s")
    return "\n".join(lines)


def _cell(method: str, row: dict) -> str:
    wga = "n/a" if row["wga"] is None else f"{row['wga']:.3f}"
    return f"{method}: acc {row['accuracy']:.3f} wga {wga}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sets", nargs="+", default=list(BUILT_IN), metavar="NAME", help=f"any of: {', '.join(SETS)}"
    )
    ap.add_argument("--manifest", help="a CSV manifest with artefact masks and groups instead of named sets")
    ap.add_argument("--image-size", type=int, help="with --manifest: the model's input size (square)")
    ap.add_argument("--channels", type=int, choices=(1, 3), help="with --manifest: 1 = grey, 3 = RGB")
    ap.add_argument(
        "--arch", choices=ARCHITECTURES, help="the classifier (default: small_cnn for a manifest)"
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "bench_out"))
    ap.add_argument("--json", help="also write all results here (rewritten after every seed)")
    ap.add_argument(
        "--summarise",
        nargs="+",
        metavar="JSON",
        help="print the summary of stored results (--json files of separate runs, e.g. one per seed) and stop",
    )
    ap.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change a setting for every set alike, e.g. align.penalty=gradient (experiments only)",
    )
    args = ap.parse_args()
    if args.summarise:
        return summarise_files([Path(f) for f in args.summarise])
    unknown = [s for s in args.sets if s not in SETS]
    if unknown:
        ap.error(f"unknown set {', '.join(unknown)}; known sets: {', '.join(SETS)} (or use --manifest CSV)")
    if args.manifest and (not args.image_size or not args.channels):
        ap.error("--manifest needs --image-size and --channels")
    from lvlmva_desktop.core.runtime.devices import describe_device, resolve_device

    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    if args.manifest:
        jobs.append((Path(args.manifest).stem, None, args.arch or "small_cnn"))
    else:
        jobs += [(name, SETS[name], args.arch or SETS[name]["arch"]) for name in args.sets]
    summaries, everything = [], []
    for name, cfg, arch in jobs:
        results = []
        for seed in args.seeds:
            if cfg is None:
                project = manifest_project(Path(args.manifest), args.image_size, args.channels, out)
            else:
                project = project_for(cfg["gen"], seed, out, cfg["params"], cfg["size"], cfg["channels"])
            with project:
                r = run_one(project, arch, seed, device, args.set)
            r.update({"set": name, "seed": seed, "arch": arch, "changes": args.set or []})
            results.append(r)
            everything.append(r)
            print(f"[{name} seed {seed}] " + ", ".join(_cell(k, v) for k, v in r["rows"].items()), flush=True)
            if args.json:  # after every seed: an interrupted run keeps what it finished
                Path(args.json).write_text(json.dumps(everything, indent=2))
        summaries.append(summarise(name, arch, results))
        print(summaries[-1], flush=True)
    print("\n".join(["", "# Summary"] + summaries))
    return 0


def summarise_files(paths: list[Path]) -> int:
    """The summary of results stored by --json, per set and architecture, seeds in order (a seed stored
    twice counts once: the later file wins)."""
    by_key: dict[tuple[str, str], dict[int, dict]] = {}
    for path in paths:
        for r in json.loads(path.read_text()):
            by_key.setdefault((r["set"], r["arch"]), {})[r["seed"]] = r
    summaries = [
        summarise(name, arch, [seeds[k] for k in sorted(seeds)]) for (name, arch), seeds in by_key.items()
    ]
    print("\n".join(["# Summary"] + summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
