"""Time of one RRR training step over one ERM step (double back-propagation costs extra).

For each architecture, times forward+backward+Adam on a batch of 64 with plain cross-entropy and with
the RRR penalty on a quarter of the batch (the default mix), and prints the ratio.

    python benchmarks/rrr_step.py [--device cuda] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import ROOT  # noqa: F401
from torch import nn

from lvlmva_desktop.core.align import rrr_penalty
from lvlmva_desktop.core.devices import describe_device, resolve_device
from lvlmva_desktop.core.models import ModelSpec, build_model

SHAPES = {"mlp": (1, 28), "small_cnn": (3, 64), "resnet18": (3, 224), "resnet50": (3, 224)}


def step_time(arch: str, device: torch.device, repeats: int, rrr: bool, batch: int) -> float:
    c, s = SHAPES[arch]
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, 2, c, (s, s))).to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(batch, c, s, s, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    n_align = batch // 4
    masks = torch.rand(n_align, s, s, device=device) > 0.9

    def one():
        xb = x.clone().requires_grad_(rrr)
        logits = model(xb)
        loss = nn.functional.cross_entropy(logits, y)
        if rrr:
            loss = loss + rrr_penalty(logits[batch - n_align :], xb, masks, batch - n_align)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--archs", nargs="+", default=list(SHAPES))
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}; batch {args.batch}")
    print(f"{'arch':10s} {'input':>10s} {'ERM step':>12s} {'RRR step':>12s} {'ratio':>7s}")
    for arch in args.archs:
        c, s = SHAPES[arch]
        reps = args.repeats if device.type == "cuda" or s < 100 else max(2, args.repeats // 5)
        erm = step_time(arch, device, reps, False, args.batch)
        rrr = step_time(arch, device, reps, True, args.batch)
        print(f"{arch:10s} {f'{c}x{s}x{s}':>10s} {erm * 1000:10.1f}ms {rrr * 1000:10.1f}ms {rrr / erm:6.2f}x")


if __name__ == "__main__":
    main()
