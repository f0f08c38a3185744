"""Every step of the method as a user runs it (`lvlmva` commands, each its own process): wall time and peak
memory (the process's maximum resident set, from os.wait4), on a generated set at a given image size.

The default is issue 14's case: the ISIC-like set at 224x224 RGB, 1,000 training and 500 test images,
ResNet-18 trained here, the simulated critic at verdict accuracy 0.87, program defaults for everything else.

    OMP_NUM_THREADS=2 python benchmarks/steps_time.py [--size 224] [--n-train 1000] [--n-test 500]
        [--arch resnet18] [--device cpu] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)


def run(step: str, args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident GiB) of ``lvlmva args`` in a child process; exits on failure."""
    cmd = [sys.executable, "-m", "lvlmva_desktop.cli", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    last = [ln for ln in out.splitlines() if ln.strip()][-3:]
    print(
        f"  {step:9s} {secs:7.1f} s  {usage.ru_maxrss / 2**20:5.2f} GiB   " + " | ".join(last)[:220],
        flush=True,
    )
    if rc != 0:
        print(out)
        sys.exit(f"{step} failed with exit code {rc}")
    return secs, usage.ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", help="keep the data and the project in this folder")
    args = ap.parse_args()
    import torch

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="lvlmva-steps-"))
    tmp.mkdir(parents=True, exist_ok=True)
    data, proj = tmp / "data", tmp / "proj"
    print(
        f"isic-like {args.size}x{args.size} RGB, {args.n_train} train / {args.n_test} test, {args.arch}, "
        f"device {args.device}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    dev = ["--device", args.device, "--quiet"]
    steps = [
        ("generate", ["generate", "isic-like", str(data), "--quiet", "--param", f"n_train={args.n_train}",
                      "--param", f"n_test={args.n_test}", "--param", f"size={args.size}"]),
        ("import", ["import", str(proj), "--csv", str(data / "manifest.csv"), "--image-size", str(args.size),
                    "--channels", "3", "--name", "timing"]),
        ("describe", ["describe", str(proj), "--defaults", "isic-like"]),
        ("train", ["train", str(proj), "--arch", args.arch, *dev]),
        ("sample", ["sample", str(proj), *dev]),
        ("explain", ["explain", str(proj), *dev]),
        ("critique", ["critique", str(proj), "--critic", "simulated", "--verdict-accuracy", "0.87", *dev]),
        ("align", ["align", str(proj), *dev]),
        ("evaluate", ["evaluate", str(proj), *dev]),
    ]  # fmt: skip
    total, peak = 0.0, 0.0
    for name, cmd in steps:
        s, m = run(name, cmd)
        total += s
        peak = max(peak, m)
    print(f"ALL STEPS ({args.size}px, {args.n_train} train images, {args.arch}): {total:.0f} s = "
          f"{total / 60:.1f} min; peak memory {peak:.2f} GiB")  # fmt: skip
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
