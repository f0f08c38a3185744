"""Composition root of the application (`lvlmva-desktop`, `python -m lvlmva_desktop`).

The desktop window is not built yet; until it is, starting the application builds the demo project
(a generated ISIC-like skin-lesion set with coloured patches as the shortcut) and runs the whole
LVLM-VA pipeline on it from the command line, printing the before/after table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def default_demo_folder() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lvlmva-desktop" / "demo-project"


DEMO_DATASET = "isic-like"
DEMO_PARAMS = {"n_train": 1200, "n_test": 600, "size": 48}


def run_demo(folder: Path | None = None, device: str = "auto", quiet: bool = False) -> dict:
    """Create (or reuse) the demo project and run steps 1-9 with the simulated critic (no LVLM ships)."""
    from .cli import _Bar
    from .core.benchsets import GENERATORS, default_class_descriptions
    from .core.critic import GroundTruthCritic
    from .core.data import import_csv_manifest
    from .core.devices import resolve_device
    from .core.pipeline import PipelineSettings, results_table, run_pipeline
    from .core.project import Project

    folder = folder or default_demo_folder()
    if (folder / "project.json").exists():
        project = Project.open(folder)
        print(f"Opening the demo project in {folder}")
    else:
        print(f"Building the demo project in {folder} (generated ISIC-like lesions with coloured patches)")
        data_dir = folder / "data"
        manifest = GENERATORS[DEMO_DATASET](data_dir, seed=0, **DEMO_PARAMS)
        report = import_csv_manifest(manifest)
        size = DEMO_PARAMS["size"]
        project = Project.create(folder, "Demo: skin lesions with patches", report.classes, (size, size), 3)
        project.add_samples(report)
        project.set_class_descriptions(default_class_descriptions(DEMO_DATASET))
    with project:
        critic = GroundTruthCritic(error_rate=0.13, seed=0)
        print(
            f"Critic: {critic.name}. With LVLM weights in a folder, critique this project with "
            f"`lvlmva critique {project.root} --critic lvlm --model-dir FOLDER` (docs/lvlm.md)."
        )
        with _Bar(quiet) as state:
            res = run_pipeline(project, PipelineSettings(), critic, resolve_device(device), state)
        print(results_table(res))
        print(f"Results: {res['results_file']}  ({res['total_s']:.0f} s)")
        return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lvlmva-desktop", description="LVLM-VA Desktop (demo project).")
    ap.add_argument("--project", help="demo project folder (default: the user data folder)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    from .cli import main as cli_main

    cmd = ["demo", "--device", args.device] + (["--folder", args.project] if args.project else [])
    return cli_main(cmd)


if __name__ == "__main__":
    sys.exit(main())
