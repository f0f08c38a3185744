"""Composition root of the application (`lvlmva-desktop`, `python -m lvlmva_desktop`).

Starting the application opens the desktop window on a project: the one given with --project, else the
built-in demo project (generated ISIC-like skin lesions with coloured patches as the shortcut), built on
first start. ``--headless-demo`` runs the whole pipeline on the demo in the terminal instead (as
``lvlmva demo`` does).
"""

from __future__ import annotations

import argparse
import logging
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
    ap = argparse.ArgumentParser(prog="lvlmva-desktop", description="LVLM-VA Desktop.")
    ap.add_argument("--project", help="project folder to open (default: the demo project)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument(
        "--headless-demo", action="store_true", help="run the whole pipeline on the demo project in the terminal"
    )
    args = ap.parse_args(argv)
    if args.headless_demo:
        from .cli import main as cli_main

        cmd = ["demo", "--device", args.device] + (["--folder", args.project] if args.project else [])
        return cli_main(cmd)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("LVLM-VA")
    app.setApplicationName("LVLM-VA Desktop")
    from .gui.main_window import MainWindow
    from .gui.session import Session
    from .gui.theme import apply_theme

    apply_theme(app)
    window = MainWindow(Session(device=args.device))
    window.show()
    if args.project:
        QTimer.singleShot(0, lambda: window.open_project(args.project))
    else:
        QTimer.singleShot(0, window.open_demo)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
