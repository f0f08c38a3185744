"""Benchmark PPEPS-WGM: the batched fit against a Python loop over the one-image reference.

Builds synthetic attribution maps (random mixtures of Gaussian evidence blobs, some negative blobs and
noise, like a summed DeepLIFT-SHAP map), then times ``ppeps_wgm`` over all of them in one call against
``ppeps_wgm_single`` called per image. Prints the times, the speed-up and how closely the two agree.

    python benchmarks/segment.py --images 64 --size 224 --repeats 3 --device auto
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

try:
    import lvlmva_desktop  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from lvlmva_desktop.core.method.segment import SegmentSettings, ppeps_wgm, ppeps_wgm_single
from lvlmva_desktop.core.runtime.devices import describe_device, resolve_device


def synthetic_maps(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, size, size) float32 maps: 1-5 positive blobs, 0-2 negative blobs, noise at 2% of the peak."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32)
    rr, cc = coords[:, None], coords[None, :]
    maps = torch.zeros(n, size, size)
    for i in range(n):
        n_pos = int(torch.randint(1, 6, (1,), generator=gen))
        n_neg = int(torch.randint(0, 3, (1,), generator=gen))
        for k in range(n_pos + n_neg):
            cr, cc0 = (torch.rand(2, generator=gen) * size * 0.9 + size * 0.05).tolist()
            sigma = float(torch.rand(1, generator=gen)) * size / 12 + size / 75
            mass = float(torch.rand(1, generator=gen)) + 0.2
            blob = torch.exp(-((rr - cr) ** 2 + (cc - cc0) ** 2) / (2 * sigma * sigma))
            maps[i] += (mass if k < n_pos else -0.5 * mass) * blob / blob.sum()
        maps[i] += 0.02 * maps[i].abs().max() * torch.randn(size, size, generator=gen)
    return maps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> tuple[list[float], object]:
    out = fn()  # warm-up (allocations, kernels, lazy initialisation)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ap.add_argument("--components", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings = SegmentSettings(n_components=args.components)
    maps = synthetic_maps(args.images, args.size).to(device)
    print(
        f"PPEPS-WGM on {describe_device(device)} ({torch.get_num_threads()} CPU threads): {args.images} maps of "
        f"{args.size}x{args.size}, J={settings.n_components}, {settings.covariance} covariance, "
        f"best of {args.repeats} after a warm-up"
    )

    batched_times, batched = _time(
        lambda: ppeps_wgm(maps, settings, batch_size=args.batch_size), device, args.repeats
    )
    loop_times, singles = _time(lambda: [ppeps_wgm_single(m, settings) for m in maps], device, args.repeats)

    tb, tl = min(batched_times), min(loop_times)
    print(
        f"batched ppeps_wgm       : {tb:8.3f} s  ({1000 * tb / args.images:7.2f} ms/image)  "
        f"runs {', '.join(f'{t:.3f}' for t in batched_times)}"
    )
    print(
        f"per-image loop (single) : {tl:8.3f} s  ({1000 * tl / args.images:7.2f} ms/image)  "
        f"runs {', '.join(f'{t:.3f}' for t in loop_times)}"
    )
    print(
        f"speed-up                : {tl / tb:8.2f}x  (median {statistics.median(loop_times) / statistics.median(batched_times):.2f}x)"
    )

    labels = torch.cat([s.labels for s in singles])
    weights = torch.cat([s.weights for s in singles])
    agree = (labels == batched.labels).float().mean().item()
    print(
        f"agreement               : {100 * agree:.3f}% of pixels share a label, max |weight diff| "
        f"{(weights - batched.weights).abs().max().item():.2e}; EM iterations mean "
        f"{batched.n_iter.float().mean().item():.1f}, max {int(batched.n_iter.max())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
