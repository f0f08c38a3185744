"""DecoyMNIST: how much of the decoy square the segments can cover (a diagnosis, not a benchmark table).

Trains the ERM MLP of benchmarks/alignment.py (seed 0), takes its low-entropy alignment set, and for three
attribution references (`explain.background`: random training images, the paper's; black images; the
typical (median) training image, the default) and two segmentations (`segment.evidence`: PPEPS-WGM on the
positive part, the paper's; on the absolute value, the default) prints, per class, the square's share of the
attribution and how much of the square the mask of *exactly judged* segments covers.

    python benchmarks/decoy_coverage.py
"""

import torch
from _common import ROOT, project_for
from alignment import SETS

from lvlmva_desktop.core.method.critic import ground_truth_segment_labels
from lvlmva_desktop.core.method.explain import ExplainSettings, attribute, reference_images
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.method.sampling import SamplingSettings, select_alignment_set
from lvlmva_desktop.core.method.segment import SegmentSettings, evidence_map, ppeps_wgm
from lvlmva_desktop.core.method.train import TrainSettings, predict_proba, train_erm

torch.set_num_threads(1)
cfg = SETS["decoymnist"]
seed = 0
dev = torch.device("cpu")
p = project_for("decoymnist", seed, ROOT / "bench_out", cfg["params"], cfg["size"], cfg["channels"])
train = p.load_split("train")
torch.manual_seed(seed)
erm = build_model(ModelSpec("mlp", 10, 1, (28, 28)))
train_erm(erm, train.x, train.y, TrainSettings(seed=seed), dev)  # the program's defaults
probs = predict_proba(erm, train.x, dev)
aidx = select_alignment_set(probs, train.y, SamplingSettings(n=300, seed=seed))
ax, ay, agt = train.x[aidx], train.y[aidx], train.masks[aidx]
for bgkind in ("train", "black", "median"):
    explain = ExplainSettings(seed=seed, background=bgkind)
    e = attribute(erm, ax, ay, reference_images(train.x, explain), explain, dev)
    A = e.maps
    pos, neg = A.clamp_min(0), (-A).clamp_min(0)
    m = agt.float()
    ps = (pos * m).sum((1, 2)) / pos.sum((1, 2)).clamp_min(1e-12)
    ns = (neg * m).sum((1, 2)) / neg.sum((1, 2)).clamp_min(1e-12)
    ab = (A.abs() * m).sum((1, 2)) / A.abs().sum((1, 2)).clamp_min(1e-12)
    for mode in ("positive", "absolute"):
        seg = ppeps_wgm(A, SegmentSettings(seed=seed, evidence=mode))
        ev = evidence_map(A, mode)
        cov = []
        for k in range(len(ax)):
            t = ground_truth_segment_labels(ev[k], seg.labels[k], agt[k], 4)
            mk = torch.zeros_like(agt[k])
            for j, tv in enumerate(t):
                if tv:
                    mk |= seg.labels[k] == j
            cov.append(float((mk & agt[k]).sum() / agt[k].sum().clamp_min(1)))
        cov = torch.tensor(cov)
        print(
            f"bg={bgkind} seg on {mode}: square share pos {ps.mean():.3f} neg {ns.mean():.3f} abs {ab.mean():.3f}; square covered by exact-verdict mask: mean {cov.mean():.2f}, zero in {(cov == 0).float().mean():.2f}"
        )
        for c in range(10):
            sel = ay == c
            print(
                f"   class {c}: pos share {ps[sel].mean():.2f} abs share {ab[sel].mean():.2f} covered {cov[sel].mean():.2f}"
            )
