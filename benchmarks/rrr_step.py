"""Time of one RRR training step over one ERM step (double back-propagation costs extra).

For each architecture, times the training step of train.fit (train.batch_loss, backward, Adam; the
parameters channels-last where fit puts them so) on a batch of 64: an ERM batch, and a mixed batch whose
last quarter are alignment images with masks and the gradient penalty (the default mix, in which
batch-norm layers normalise with the ordinary rows' statistics). Prints both times and their ratio.

    python benchmarks/rrr_step.py [--device cuda] [--repeats 20] [--archs small_cnn resnet18] [--one-pass]

--one-pass also times the RRR step as it was before the alignment rows got a pass of their own (one pass
over the whole mixed batch; the formula tests/core/test_rrr_two_pass.py keeps verbatim), in the same loop.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _common import ROOT  # noqa: F401

from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.method.train import batch_loss
from lvlmva_desktop.core.runtime.devices import channels_last, describe_device, in_layout, resolve_device

SHAPES = {"mlp": (1, 28), "small_cnn": (3, 64), "resnet18": (3, 224), "resnet50": (3, 224)}


def step_times(
    arch: str, device: torch.device, repeats: int, batch: int, one_pass: bool = False
) -> list[float]:
    """Median seconds of an ERM step and of an RRR step (and of the one-pass RRR step), alternating (so
    that a load that comes and goes on the machine falls on all alike), each on its own copy of the model."""
    c, s = SHAPES[arch]
    x = torch.rand(batch, c, s, s, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    n_align = batch // 4
    masks = torch.rand(n_align, s, s, device=device) > 0.9
    steps = {}
    kinds = ("erm", "rrr", "one_pass") if one_pass else ("erm", "rrr")
    if one_pass:
        sys.path.insert(0, str(ROOT / "tests" / "core"))
        from test_rrr_two_pass import _one_pass
    for rrr in kinds:
        torch.manual_seed(0)
        model = build_model(ModelSpec(arch, 2, c, (s, s))).to(device).train()
        last = channels_last(model)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        xb = in_layout(x, last)

        def one(model=model, opt=opt, xb=xb, rrr=rrr):
            if rrr == "rrr":
                loss = batch_loss(model, xb, y, masks, batch - n_align, lambda_=1.0, penalty="gradient")[0]
            elif rrr == "one_pass":
                loss = _one_pass(model, xb.clone(), y, masks, batch - n_align, 1.0, "gradient", False)[0]
            else:
                loss = batch_loss(model, xb, y, None, batch)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[rrr] = one
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(repeats + 2):
        for rrr in kinds:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            steps[rrr]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:  # two warm-up rounds
                times[rrr].append(time.perf_counter() - t)
    return [statistics.median(times[k]) for k in kinds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--archs", nargs="+", default=list(SHAPES))
    ap.add_argument("--one-pass", action="store_true", help="also time the step as it was before (one pass)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}; batch {args.batch}")
    print(f"{'arch':10s} {'input':>10s} {'ERM step':>12s} {'RRR step':>12s} {'ratio':>7s}")
    for arch in args.archs:
        c, s = SHAPES[arch]
        reps = args.repeats if device.type == "cuda" or s < 100 else max(3, args.repeats // 3)
        erm, rrr, *old = step_times(arch, device, reps, args.batch, args.one_pass)
        line = f"{arch:10s} {f'{c}x{s}x{s}':>10s} {erm * 1000:10.1f}ms {rrr * 1000:10.1f}ms {rrr / erm:6.2f}x"
        if old:
            line += f"   one pass: {old[0] * 1000:10.1f}ms {old[0] / erm:6.2f}x"
        print(line)


if __name__ == "__main__":
    main()
