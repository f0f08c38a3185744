"""Benchmark the program's start: time from the process start to the first painted window, and to the first
thumbnails of the demo project.

Each run is a fresh process that starts the program as ``lvlmva-desktop --project DEMO`` does
(``app.main``), with an offscreen window and its own empty user settings. It measures, from the moment the
process was started (the parent's clock just before it spawns the child, so interpreter start-up counts):

* the window painted: the first event-loop turn after ``show()`` (app.main's own project-opening timer
  comes after it), where the window is grabbed (a full paint); which of torch, torchvision, captum and
  transformers were imported by then;
* the project open: the first event-loop turn after ``open_project`` returned (torch loads there);
* the first thumbnails: every visible cell of the browser has its decoded thumbnail and a paint drew them.

The demo project (1,800 generated 48x48 images, as on the first start) is built once under bench_out/.

    python benchmarks/startup.py               # best of 3
    python benchmarks/startup.py --runs 5 --project /path/to/project
"""

from __future__ import annotations

import time

T_CHILD = time.time()  # before the heavy imports: the child's own start-up counts

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEAVY = ("torch", "torchvision", "captum", "transformers")
FIGURES = [
    ("Python started (interpreter, this script)", "interpreter_s"),
    ("window painted", "window_painted_s"),
    ("project open (torch and torchvision imported)", "project_open_s"),
    ("first thumbnails painted", "first_thumbnails_s"),
]


def build_demo(folder: Path) -> Path:
    """The demo project with its default size (as built on the program's first start), reused later."""
    if (folder / "project.json").exists():
        return folder
    from lvlmva_desktop.core.demo import create_demo_project

    t = time.perf_counter()
    tmp = folder.with_name(folder.name + ".tmp")
    create_demo_project(tmp)
    os.replace(tmp, folder)
    print(f"built the demo project in {folder} ({time.perf_counter() - t:.1f} s)")
    return folder


# -- the measured process ----------------------------------------------------------------------------------
def measure(project: Path, t0: float) -> dict:
    """Start the program on `project` (app.main) and time its milestones from t0 (wall clock)."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication([])  # app.main uses this one
    out: dict = {"interpreter_s": T_CHILD - t0}
    wait: dict = {}

    def window():
        from lvlmva_desktop.gui.main_window import MainWindow

        return next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))

    def painted() -> None:  # queued before app.main's own timer: the window is shown, the project not open
        w = window()
        w.grab()
        out["window_painted_s"] = time.time() - t0
        out["imported_at_first_paint"] = [m for m in HEAVY if m in sys.modules]
        QTimer.singleShot(0, poll)

    def poll() -> None:
        w = window()
        if time.time() - t0 > 300:
            out["error"] = "no thumbnails after 300 s"
            app.quit()
            return
        if w.session.project is not None and "project_open_s" not in out:
            out["project_open_s"] = time.time() - t0
        pane = w.browser
        rows = pane.view.visible_rows()
        if "before" not in wait:
            if rows and all(pane.cache.has(pane.model.sample_id(r)) for r in rows):
                wait["before"], wait["n"] = pane.view.delegate.painted_thumbnails, len(rows)
        elif pane.view.delegate.painted_thumbnails >= wait["before"] + wait["n"]:
            out["first_thumbnails_s"] = time.time() - t0
            out["visible_cells"] = wait["n"]
            out["images"] = pane.model.rowCount()
            w.close()
            app.quit()
            return
        QTimer.singleShot(2, poll)

    QTimer.singleShot(0, painted)
    from lvlmva_desktop import app as entry

    out["exit"] = entry.main(["--project", str(project), "--device", "cpu"])
    return out


def run_once(project: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="lvlmva-startup-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "XDG_"))}
        env.update(
            QT_QPA_PLATFORM="offscreen",
            HOME=home,  # fresh user settings: the first start's window layout
            XDG_CONFIG_HOME=str(Path(home) / "config"),
            XDG_DATA_HOME=str(Path(home) / "data"),
            XDG_CACHE_HOME=str(Path(home) / "cache"),
        )
        t0 = time.time()
        res = subprocess.run(
            [sys.executable, __file__, "--measure", str(project), "--t0", repr(t0)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
        )
    if res.returncode != 0:
        sys.exit(f"the measuring process failed:\n{res.stderr[-4000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    if "error" in r:
        sys.exit(f"the measuring process: {r['error']}")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="fresh processes; the best of them is shown")
    ap.add_argument("--project", help="project to open (default: the demo, built once in bench_out/)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # the measured process: a project folder
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.t0)))
        return
    project = Path(args.project) if args.project else build_demo(ROOT / "bench_out" / "startup-demo")
    runs = [run_once(project) for _ in range(args.runs)]
    r0 = runs[0]
    print(
        f"\n{r0['images']:,} images, {r0['visible_cells']} thumbnails visible, offscreen window; "
        f"best of {len(runs)} fresh processes (every run in brackets), from the process start:"
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
