"""Start-up: the main window appears before torch (and torchvision, captum, transformers) is imported.

Importing torch and torchvision takes seconds; no pane may import them (directly or through a core module)
at module level or while the window is built and first painted. They load when a project opens. Each test
runs a fresh interpreter, because this test process has long imported torch; user settings and data go to
a temporary HOME / XDG folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "captum", "transformers")
DEMO = {"n_train": 40, "n_test": 20, "size": 32}

# The window by hand: built, shown, painted; then a project opened in it.
WINDOW_SCRIPT = r"""
import json, sys, time
from PySide6.QtWidgets import QApplication

HEAVY = ("torch", "torchvision", "captum", "transformers")
app = QApplication([])
from lvlmva_desktop.gui.main_window import MainWindow
from lvlmva_desktop.gui.session import Session

window = MainWindow(Session(device="cpu"))
window.show()
for _ in range(5):
    app.processEvents()
window.grab()
out = {"at_first_paint": [m for m in HEAVY if m in sys.modules], "visible": window.isVisible()}

opened = window.open_project(sys.argv[1])
deadline = time.monotonic() + 120
while window.browser.model.rowCount() < 60 and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
out.update(
    opened=opened,
    after_open=[m for m in HEAVY if m in sys.modules],
    rows=window.browser.model.rowCount(),
    title=window.windowTitle(),
    device=window.device_label.text(),
)
window.shutdown()
print("RESULT " + json.dumps(out))
"""

# The real entry point: app.main shows the window, says "Loading…", then opens the project.
MAIN_SCRIPT = r"""
import json, sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

HEAVY = ("torch", "torchvision", "captum", "transformers")
app = QApplication([])  # app.main uses this one
out = {}
t0 = time.monotonic()

def window():
    from lvlmva_desktop.gui.main_window import MainWindow

    return next((w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)), None)

def first():  # queued before app.main's own timer: runs once the window is shown, before the project opens
    w = window()
    w.grab()
    out["at_first_paint"] = [m for m in HEAVY if m in sys.modules]
    out["visible"] = w.isVisible()
    out["status_at_first_paint"] = w.statusBar().currentMessage()
    QTimer.singleShot(0, poll)

def poll():
    w = window()
    if w.browser.model.rowCount() >= 60 or time.monotonic() - t0 > 120:
        out.update(
            after_open=[m for m in HEAVY if m in sys.modules],
            rows=w.browser.model.rowCount(),
            title=w.windowTitle(),
            device=w.device_label.text(),
            status_after_open=w.statusBar().currentMessage(),
        )
        w.close()
        app.quit()
    else:
        QTimer.singleShot(20, poll)

QTimer.singleShot(0, first)
from lvlmva_desktop import app as entry

out["exit"] = entry.main(["--project", sys.argv[1], "--device", "cpu"])
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    """A demo-like project built here, in the test process (the subprocess only opens it)."""
    from lvlmva_desktop.core.data.demo import create_demo_project

    return create_demo_project(tmp_path_factory.mktemp("startup") / "demo", **DEMO)


def _run(script: str, project: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "XDG_"))}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),  # QSettings of the subprocess
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_RUNTIME_DIR=str(home / "run"),
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    (home / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    r = subprocess.run(
        [sys.executable, "-c", script, str(project)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(lines[-1][len("RESULT ") :])


def test_the_window_is_painted_before_torch_is_imported(small_demo, tmp_path):
    out = _run(WINDOW_SCRIPT, small_demo, tmp_path)
    assert out["visible"]
    assert out["at_first_paint"] == [], f"imported before the window was up: {out['at_first_paint']}"
    # ...and the window then works: opening the project loads torch and fills the browser
    assert out["opened"]
    assert "torch" in out["after_open"]
    assert out["rows"] == DEMO["n_train"] + DEMO["n_test"]
    assert out["title"].startswith("Demo: skin lesions with patches")
    assert out["device"] == "Device: CPU"


def test_the_program_shows_the_window_then_opens_the_project(small_demo, tmp_path):
    out = _run(MAIN_SCRIPT, small_demo, tmp_path)
    assert out["exit"] == 0
    assert out["visible"]
    assert out["at_first_paint"] == [], f"imported before the window was up: {out['at_first_paint']}"
    assert out["status_at_first_paint"] == "Loading…"
    assert "torch" in out["after_open"]
    assert out["rows"] == DEMO["n_train"] + DEMO["n_test"]
    assert out["title"].startswith("Demo: skin lesions with patches")
    assert out["device"] == "Device: CPU"
    assert out["status_after_open"] == ""


MEASURE_SCRIPT = r"""
import sys
from lvlmva_desktop.app import main
sys.exit(main(["--project", sys.argv[1], "--device", "cpu", "--measure-startup", sys.argv[2]]))
"""


def test_measure_startup_reports_the_milestones_in_order_and_quits(small_demo, tmp_path):
    """The probe that benchmarks/startup.py and the packaged-program test read (a frozen build runs no
    outside Python): milestones in order, nothing heavy imported at the first paint, and the program quits."""
    report = tmp_path / "startup.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "XDG_"))}
    env.update(QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-c", MEASURE_SCRIPT, str(small_demo), str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(report.read_text())
    assert "error" not in out
    assert t0 < out["window_painted"] < out["project_open"] <= out["first_thumbnails"] < time.time()
    assert out["imported_at_first_paint"] == []
    assert out["images"] == DEMO["n_train"] + DEMO["n_test"] and out["visible_cells"] > 0
