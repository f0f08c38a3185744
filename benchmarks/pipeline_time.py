"""Wall-clock time of the whole pipeline (steps 1-9) on the ISIC-like set with the small CNN.

Generates the set at its default size (2,000 train / 1,000 test images, 64x64 RGB), imports it into a
fresh project and runs ``run_pipeline`` exactly as ``lvlmva run`` does, with the simulated critic at
verdict accuracy 0.87 (benchmark only). Prints the time of every step and the total.

    python benchmarks/pipeline_time.py [--device cpu] [--size 64]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from lvlmva_desktop.core.data.benchsets import GENERATORS, default_class_descriptions
from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.pipeline import PipelineSettings, results_table, run_pipeline
from lvlmva_desktop.core.runtime.devices import describe_device, resolve_device
from lvlmva_desktop.core.store.project import Project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--keep", help="keep the project in this folder")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="lvlmva-pipeline-"))
    t0 = time.perf_counter()
    manifest = GENERATORS["isic-like"](tmp / "data", seed=0, size=args.size)
    report = import_csv_manifest(manifest)
    t_data = time.perf_counter() - t0
    with Project.create(tmp / "proj", "pipeline timing", report.classes, (args.size, args.size), 3) as p:
        p.add_samples(report)
        p.set_class_descriptions(default_class_descriptions("isic-like"))
        t1 = time.perf_counter()
        res = run_pipeline(p, PipelineSettings(), GroundTruthCritic(error_rate=0.13), device)
        t_pipe = time.perf_counter() - t1
    print(results_table(res))
    print(f"images: {len(report.samples)} ({args.size}x{args.size} RGB); generate+import {t_data:.1f} s")
    print("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["timings_s"].items()))
    print(f"FULL PIPELINE (steps 1-9, incl. decoding): {t_pipe:.1f} s = {t_pipe / 60:.1f} min")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
