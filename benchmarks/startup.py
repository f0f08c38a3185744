"""Benchmark the program's start: time from the process start to the first painted window, and to the first
thumbnails of the demo project, for the installed program or the packaged build.

Each run is a fresh process started as ``lvlmva-desktop --project DEMO --measure-startup FILE`` (the
program's own probe, gui/startup_probe.py: the same code measures a frozen build), with an offscreen
window and an empty HOME (fresh user settings, the first start's layout). From the moment just before the
process is spawned (so interpreter start-up counts) it reports:

* the window painted: the first event-loop turn after ``show()``, where the window is grabbed (a full
  paint); which of torch, torchvision, captum and transformers were imported by then;
* the project open: the first event-loop turn after the project was opened (torch loads there);
* the first thumbnails: every visible cell of the browser has its decoded thumbnail and a paint drew them.

The demo project (1,800 generated 48x48 images, as on the first start) is built once under bench_out/.

    python benchmarks/startup.py                                       # this checkout, best of 3
    python benchmarks/startup.py --executable dist/lvlmva-desktop/lvlmva-desktop   # the packaged build
    python benchmarks/startup.py --runs 5 --project /path/to/project
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEAVY = ("torch", "torchvision", "captum", "transformers")
FIGURES = [
    ("window painted", "window_painted"),
    ("project open (torch and torchvision imported)", "project_open"),
    ("first thumbnails painted", "first_thumbnails"),
]


def build_demo(folder: Path) -> Path:
    """The demo project with its default size (as built on the program's first start), reused later."""
    if (folder / "project.json").exists():
        return folder
    from lvlmva_desktop.core.data.demo import create_demo_project

    t = time.perf_counter()
    tmp = folder.with_name(folder.name + ".tmp")
    create_demo_project(tmp)
    os.replace(tmp, folder)
    print(f"built the demo project in {folder} ({time.perf_counter() - t:.1f} s)")
    return folder


def run_once(command: list[str], project: Path) -> dict:
    """One fresh process; the milestones in seconds from just before it was spawned."""
    with tempfile.TemporaryDirectory(prefix="lvlmva-startup-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "XDG_"))}
        env.update(
            QT_QPA_PLATFORM="offscreen",
            HOME=home,  # fresh user settings: the first start's window layout
            XDG_CONFIG_HOME=str(Path(home) / "config"),
            XDG_DATA_HOME=str(Path(home) / "data"),
            XDG_CACHE_HOME=str(Path(home) / "cache"),
        )
        report = Path(home) / "startup.json"
        t0 = time.time()
        res = subprocess.run(
            [*command, "--project", str(project), "--device", "cpu", "--measure-startup", str(report)],
            capture_output=True,
            text=True,
            env=env,
            cwd=home,
            check=False,
        )
        if res.returncode != 0 or not report.exists():
            sys.exit(f"the measured process failed (exit {res.returncode}):\n{res.stderr[-4000:]}")
        r = json.loads(report.read_text("utf-8"))
    if "error" in r:
        sys.exit(f"the measured process: {r['error']}")
    for _, key in FIGURES:
        r[key] = r[key] - t0
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="fresh processes; the best of them is shown")
    ap.add_argument("--project", help="project to open (default: the demo, built once in bench_out/)")
    ap.add_argument("--executable", help="the packaged program (default: this checkout's app.main)")
    args = ap.parse_args()
    project = Path(args.project) if args.project else build_demo(ROOT / "bench_out" / "startup-demo")
    if args.executable:
        command = [str(Path(args.executable).resolve())]
    else:
        command = [sys.executable, "-c", "import sys; from lvlmva_desktop.app import main; sys.exit(main())"]
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    runs = [run_once(command, project) for _ in range(args.runs)]
    r0 = runs[0]
    print(
        f"\n{' '.join(command[:1])}: {r0['images']:,} images, {r0['visible_cells']} thumbnails visible, "
        f"offscreen window; best of {len(runs)} fresh processes (every run in brackets), from the process start:"
    )
    for text, key in FIGURES:
        values = [r[key] for r in runs]
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {text:52s} {min(values):6.2f} s   [{each}]")
    imported = sorted({m for r in runs for m in r["imported_at_first_paint"]})
    print(
        f"imported when the window was painted: {', '.join(imported) if imported else 'none of ' + ', '.join(HEAVY)}"
    )


if __name__ == "__main__":
    main()
