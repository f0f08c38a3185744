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


def run_demo(folder: Path | None = None, device: str = "auto", quiet: bool = False) -> dict:
    """Create (or reuse) the demo project and run steps 1-9 with the simulated critic (no LVLM ships)."""
    from .cli import _Bar
    from .core.critic import GroundTruthCritic
    from .core.demo import create_demo_project, default_demo_folder
    from .core.devices import resolve_device
    from .core.pipeline import PipelineSettings, results_table, run_pipeline
    from .core.project import Project

    folder = folder or default_demo_folder()
    if (folder / "project.json").exists():
        project = Project.open(folder)
        print(f"Opening the demo project in {folder}")
    else:
        print(f"Building the demo project in {folder} (generated ISIC-like lesions with coloured patches)")
        project = Project.open(create_demo_project(folder))
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
