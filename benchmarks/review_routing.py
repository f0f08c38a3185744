"""Review routing (issue 13): does reviewing the critic's least certain verdicts first pay off?

A simulated expert reviews the alignment set image by image and corrects every segment of each image it
reviews to the ground truth. After k reviewed images the masks are built with the program's defaults (the
consistency check, the counterfactual penalty, the automatic strength: core.method.qualify's ``Setup``, the code
behind `lvlmva qualify` and benchmarks/alignment.py) and the original model is aligned; the worst-group
accuracy (WGA) after alignment is recorded against k, for two orders of review:

- **routed**: core.views.review's queue (``doubt_scores`` and ``priorities``, the functions behind the window's
  review queue), recomputed at every point from the verdicts as they stand, the expert's corrections
  included (they are look-alikes for the rest);
- **random**: the images in a random order, averaged over ``--random-orders`` permutations per seed.

The critic is the simulated one at verdict accuracy 0.87 (GroundTruthCritic, error rate 0.13, the paper's
GPT-4o). It decides every segment and has no token probabilities, so the routing uses only the
consistency doubt of its verdicts (and, with the check on, the verdicts the check held back). The same is
measured without the consistency check (``align.consistency_check=false``, the paper's method), where every
false "spurious" verdict reaches the masks and the order should matter more.

    OMP_NUM_THREADS=1 python benchmarks/review_routing.py --sets isic-like --seeds 0 1 2
    python benchmarks/review_routing.py --summarise bench_out/review_routing_isic-like.json

It ends with one line per set: ``routing: R reviews routed vs Q random to reach 90% of RRR-GT WGA (set S)``
(interpolated on the mean curve over seeds; 0 where the critic's verdicts reach it before any review).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import ROOT, project_for
from alignment import MIN_GROUP, SETS, method_settings

from lvlmva_desktop.core.method.consistency import segment_descriptors
from lvlmva_desktop.core.method.qualify import prepare, seeded
from lvlmva_desktop.core.views.review import doubt_scores, order_of, priorities

ACCURACY = 0.87
POINTS = (0, 10, 20, 40, 80, 120, 200)
TARGETS = (0.90, 0.98, 1.00)  # shares of RRR-GT (set)'s WGA
VARIANTS = {"check": "program defaults (consistency check on)", "no-check": "without the consistency check"}
SIGNALS = (
    "routing signals for the simulated critic: undecided segments (none: it decides every segment), the "
    "consistency doubt of each verdict (its look-alikes' verdicts, weighted by the segment's evidence share) "
    "and, with the check on, the verdicts the check held back; no token probabilities (a simulated critic has "
    "none)"
)


def _key(masks: torch.Tensor) -> str:
    return hashlib.sha256(masks.contiguous().numpy().tobytes()).hexdigest()


def run_seed(name: str, seed: int, points: list[int], n_random: int, device: torch.device, out: Path) -> dict:
    cfg = SETS[name]
    t0 = time.perf_counter()
    settings = seeded(method_settings(cfg["arch"], None), seed)
    settings.evaluate.min_group_size = MIN_GROUP
    project = project_for(cfg["gen"], seed, out, cfg["params"], cfg["size"], cfg["channels"])
    with project:
        setup = prepare(project, settings, device)
    erm = {**setup.evaluate(setup.erm), "reliance": setup.true_reliance(setup.erm)}
    gt = setup.align(setup.agt)
    setup.explain()
    critic, truth = setup.simulated_verdicts(ACCURACY, seed)
    n, j = critic.shape
    points = sorted({min(max(k, 0), n) for k in points})
    desc, present = segment_descriptors(setup.ax, setup.evidence, setup.labels, j)
    share = setup.segment_evidence
    decided = torch.ones_like(critic)
    considered = torch.ones_like(critic)  # the simulated critic judges every segment
    wrong = critic != truth
    false_spurious = critic & ~truth
    cache: dict[str, dict] = {}
    n_aligned = 0

    def evaluate(reviewed: torch.Tensor, align_settings) -> tuple[dict, object]:
        nonlocal n_aligned
        expert = reviewed[:, None].expand(n, j)
        flags = torch.where(expert, truth, critic)
        masks, check = setup.masks(flags, expert, align_settings)
        key = _key(masks)
        if key not in cache:  # the same masks align the same way (every seed is fixed)
            cache[key] = setup.align(masks)
            n_aligned += 1
        r = cache[key]
        row = {
            "k": int(reviewed.sum()),
            "wga": r["wga"],
            "accuracy": r["accuracy"],
            "strength": r["strength"],
            "wrong_fixed": int((wrong & reviewed[:, None]).sum()),
            "false_spurious_fixed": int((false_spurious & reviewed[:, None]).sum()),
            "held_back": 0 if check is None else int(check.held.sum()),
        }
        return row, check

    def routed_curve(align_settings) -> list[dict]:
        reviewed = torch.zeros(n, dtype=torch.bool)
        curve, done, last_check = [], 0, None
        for k in points:
            if k > done:
                expert = reviewed[:, None].expand(n, j)
                flags = torch.where(expert, truth, critic)
                doubt = doubt_scores(desc, flags, decided & present, share, expert)
                held = None if last_check is None else last_check.held
                prios = priorities(flags, decided, expert, considered, share, doubt, None, held)
                todo = [i for i in order_of(prios) if not bool(reviewed[i])]
                reviewed[todo[: k - done]] = True
                done = k
            row, last_check = evaluate(reviewed, align_settings)
            curve.append(row)
        return curve

    variants = {}
    for variant in VARIANTS:
        align_settings = replace(settings.align, consistency_check=(variant == "check"))
        routed = routed_curve(align_settings)
        randoms = []
        for r in range(n_random):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(1000 * seed + r))
            curve = []
            for k in points:
                reviewed = torch.zeros(n, dtype=torch.bool)
                reviewed[perm[:k]] = True
                curve.append(evaluate(reviewed, align_settings)[0])
            randoms.append(curve)
        variants[variant] = {"routed": routed, "random": randoms}
        print(
            f"[{name} seed {seed} {variant}] routed WGA "
            + " ".join(f"{c['k']}:{c['wga']:.3f}" for c in routed)
            + " | random (mean of "
            + f"{n_random}) "
            + " ".join(
                f"{k}:{statistics.mean(c[i]['wga'] for c in randoms):.3f}" for i, k in enumerate(points)
            ),
            flush=True,
        )
    return {
        "set": name,
        "seed": seed,
        "arch": cfg["arch"],
        "points": points,
        "n_align": n,
        "n_segments": j,
        "critic_accuracy": ACCURACY,
        "verdict_accuracy": float((~wrong).float().mean()),
        "wrong_verdicts": int(wrong.sum()),
        "false_spurious": int(false_spurious.sum()),
        "erm": erm,
        "gt": gt,
        "variants": variants,
        "n_random": n_random,
        "alignments": n_aligned,
        "seconds": time.perf_counter() - t0,
    }


def mean_curves(results: list[dict], variant: str) -> tuple[list[int], list[float], list[float], dict]:
    """Points, mean WGA over seeds of the routed and the random order (random: first the mean over the
    permutations of a seed), and per-seed curves."""
    points = results[0]["points"]
    routed = [[c["wga"] for c in r["variants"][variant]["routed"]] for r in results]
    random = [
        [statistics.mean(p[i]["wga"] for p in r["variants"][variant]["random"]) for i in range(len(points))]
        for r in results
    ]
    mr = [statistics.mean(s[i] for s in routed) for i in range(len(points))]
    mq = [statistics.mean(s[i] for s in random) for i in range(len(points))]
    return points, mr, mq, {"routed": routed, "random": random}


def reviews_to_reach(points: list[int], curve: list[float], target: float) -> float | None:
    """The first k at which ``curve`` reaches ``target``, interpolated linearly between points; None if it
    never does."""
    if curve[0] >= target:
        return float(points[0])
    for i in range(1, len(points)):
        if curve[i] >= target:
            a, b = curve[i - 1], curve[i]
            return points[i - 1] + (target - a) / (b - a) * (points[i] - points[i - 1])
    return None


def _wgas(results: list[dict], row: str) -> str:
    return " ".join(f"{r[row]['wga']:.3f}" for r in results)


def _k(v: float | None, n: int) -> str:
    return f"not reached by {n}" if v is None else f"{v:.0f}"


def summarise(results: list[dict]) -> tuple[str, str]:
    """The tables of one set over its seeds, and its ``routing:`` line."""
    name = results[0]["set"]
    seeds = [r["seed"] for r in results]
    n = results[0]["n_align"]
    last = results[0]["points"][-1]
    erm = statistics.mean(r["erm"]["wga"] for r in results)
    gt = statistics.mean(r["gt"]["wga"] for r in results)

    def sd(vals):
        return statistics.stdev(vals) if len(vals) > 1 else 0.0

    lines = [
        f"\n## {name} (seeds {seeds}; {results[0]['arch']}; alignment set of {n} images, "
        f"{results[0]['n_segments']} segments each; simulated critic at {ACCURACY} "
        f"(measured {statistics.mean(r['verdict_accuracy'] for r in results):.3f}: "
        f"{statistics.mean(r['wrong_verdicts'] for r in results):.0f} wrong verdicts per seed, "
        f"{statistics.mean(r['false_spurious'] for r in results):.0f} of them false 'spurious'); "
        f"random order: mean of {results[0]['n_random']} permutations per seed)",
        SIGNALS,
        f"ERM WGA {erm:.3f} (per seed {_wgas(results, 'erm')}); RRR-GT (set) WGA "
        f"{gt:.3f} (per seed {_wgas(results, 'gt')}); targets: "
        + ", ".join(f"{t:.0%} of it = {t * gt:.3f}" for t in TARGETS),
    ]
    found = {}
    for variant, words in VARIANTS.items():
        points, mr, mq, per = mean_curves(results, variant)
        lines.append(f"### {words}")
        lines.append(
            f"{'reviewed':>8s}  {'WGA routed':>13s}  {'WGA random':>13s}  {'wrong fixed routed/random':>26s}  "
            f"{'false spurious fixed':>21s}  held back r/q"
        )
        for i, k in enumerate(points):
            rt = [r["variants"][variant]["routed"][i] for r in results]
            rq = [p[i] for r in results for p in r["variants"][variant]["random"]]
            wf = f"{statistics.mean(c['wrong_fixed'] for c in rt):.0f} / {statistics.mean(c['wrong_fixed'] for c in rq):.0f}"
            fs = f"{statistics.mean(c['false_spurious_fixed'] for c in rt):.0f} / {statistics.mean(c['false_spurious_fixed'] for c in rq):.0f}"
            hb = f"{statistics.mean(c['held_back'] for c in rt):.0f} / {statistics.mean(c['held_back'] for c in rq):.0f}"
            routed_s = [s[i] for s in per["routed"]]
            random_s = [s[i] for s in per["random"]]
            lines.append(
                f"{k:>8d}  {mr[i]:.3f}±{sd(routed_s):.3f}  {mq[i]:.3f}±{sd(random_s):.3f}  {wf:>26s}  {fs:>21s}  {hb}"
            )
        for t in TARGETS:
            r_k = reviews_to_reach(points, mr, t * gt)
            q_k = reviews_to_reach(points, mq, t * gt)
            found[(variant, t)] = (r_k, q_k)
            lines.append(
                f"  {words}: to reach {t:.0%} of RRR-GT WGA ({t * gt:.3f}): {_k(r_k, last)} reviews routed vs "
                f"{_k(q_k, last)} random"
            )
        gap = gt - erm
        if gap > 0:
            lines.append(
                f"  {words}: share of the ERM -> RRR-GT gap recovered: routed "
                + " ".join(f"{k}:{(w - erm) / gap:.0%}" for k, w in zip(points, mr))
                + "; random "
                + " ".join(f"{k}:{(w - erm) / gap:.0%}" for k, w in zip(points, mq))
            )
    r_k, q_k = found[("check", 0.90)]
    if r_k == 0 and q_k == 0:
        lines.append(
            "  note: with the program's defaults the critic's verdicts already reach 90% of RRR-GT WGA before "
            "any review, for either order: the 90% target cannot show the routing; see the stricter targets "
            "and the run without the check above"
        )
    lines.append(
        f"time per seed: {statistics.mean(r['seconds'] for r in results):.0f} s "
        f"({statistics.mean(r['alignments'] for r in results):.0f} alignments)"
    )
    routing = f"routing: {_k(r_k, last)} reviews routed vs {_k(q_k, last)} random to reach 90% of RRR-GT WGA (set {name})"
    return "\n".join(lines), routing


def plot(by_set: dict[str, list[dict]], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed here: no plot written"
    fig, axes = plt.subplots(1, len(by_set), figsize=(5.5 * len(by_set), 4), squeeze=False)
    for ax, (name, results) in zip(axes[0], by_set.items()):
        gt = statistics.mean(r["gt"]["wga"] for r in results)
        erm = statistics.mean(r["erm"]["wga"] for r in results)
        for variant, style in (("check", "-"), ("no-check", "--")):
            points, mr, mq, _ = mean_curves(results, variant)
            ax.plot(points, mr, style, marker="o", color="C0", label=f"routed ({variant})")
            ax.plot(points, mq, style, marker="s", color="C1", label=f"random ({variant})")
        ax.axhline(gt, color="k", lw=0.8, label="RRR-GT (set)")
        ax.axhline(0.9 * gt, color="k", lw=0.8, ls=":", label="90% of RRR-GT")
        ax.axhline(erm, color="grey", lw=0.8, ls="-.", label="ERM")
        ax.set_title(f"{name} (seeds {[r['seed'] for r in results]})")
        ax.set_xlabel("images reviewed")
        ax.set_ylabel("WGA after alignment")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written: {path}"


def report(everything: list[dict], plot_path: Path | None) -> None:
    by_set: dict[str, list[dict]] = {}
    for r in everything:
        by_set.setdefault(r["set"], []).append(r)
    texts, lines = [], []
    for results in by_set.values():
        text, line = summarise(sorted(results, key=lambda r: r["seed"]))
        texts.append(text)
        lines.append(line)
    print("\n".join(["", "# Summary"] + texts))
    if plot_path is not None:
        print(plot(by_set, plot_path))
    print("\n".join(lines), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["isic-like", "elpv-tags"], metavar="NAME")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--points", nargs="+", type=int, default=list(POINTS), help="images reviewed")
    ap.add_argument("--random-orders", type=int, default=3, help="random permutations per seed")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "bench_out"))
    ap.add_argument("--json", help="also write all results here (rewritten after every seed)")
    ap.add_argument("--plot", help="the PNG to write (default: OUT/review_routing_<sets>.png)")
    ap.add_argument(
        "--summarise", nargs="+", metavar="JSON", help="print the summary of stored results and stop"
    )
    args = ap.parse_args()
    if args.summarise:
        everything = [r for f in args.summarise for r in json.loads(Path(f).read_text())]
        report(everything, Path(args.plot) if args.plot else None)
        return 0
    unknown = [s for s in args.sets if s not in SETS]
    if unknown:
        ap.error(f"unknown set {', '.join(unknown)}; known sets: {', '.join(SETS)}")
    if args.random_orders < 1:
        ap.error("--random-orders must be at least 1")
    from lvlmva_desktop.core.runtime.devices import describe_device, resolve_device

    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(SIGNALS, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    everything = []
    for name in args.sets:
        for seed in args.seeds:
            r = run_seed(name, seed, args.points, args.random_orders, device, out)
            everything.append(r)
            print(f"[{name} seed {seed}] {r['alignments']} alignments in {r['seconds']:.0f} s", flush=True)
            if args.json:  # after every seed: an interrupted run keeps what it finished
                Path(args.json).write_text(json.dumps(everything, indent=1))
    plot_path = Path(args.plot) if args.plot else out / f"review_routing_{'_'.join(args.sets)}.png"
    report(everything, plot_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
