"""``lvlmva-desktop --measure-startup FILE``: time the program's own start, then quit.

Used by benchmarks/startup.py on an installed program and on the packaged build alike (a frozen program
runs no outside Python, so the measuring lives here). It records wall-clock times (``time.time()``, so that
the process that started this one can subtract its own start) of three milestones and writes them as JSON:

* ``window_painted``: the first event-loop turn after ``show()``, where the window is grabbed (a full
  paint), with the heavy modules (torch, torchvision, captum, transformers) imported by then;
* ``project_open``: the first turn after the project was opened (torch loads there);
* ``first_thumbnails``: every visible cell of the browser has its decoded thumbnail and a paint drew them.

Then it closes the window. A failure (no thumbnails within the time limit) is written as ``error``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "captum", "transformers")


def install(app, report: Path, limit_s: float = 300.0) -> None:
    """Queue the probe on ``app``'s event loop; call before the program's own start-up timer."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from lvlmva_desktop.gui.main_window import MainWindow

    started = time.time()
    out: dict = {"probe_installed": started}
    wait: dict = {}

    def window() -> MainWindow:
        return next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))

    def finish(w: MainWindow | None) -> None:
        Path(report).write_text(json.dumps(out), encoding="utf-8")
        if w is not None:
            w.close()
        app.quit()

    def painted() -> None:
        w = window()
        w.grab()
        out["window_painted"] = time.time()
        out["imported_at_first_paint"] = [m for m in HEAVY if m in sys.modules]
        QTimer.singleShot(0, poll)

    def poll() -> None:
        w = window()
        if time.time() - started > limit_s:
            out["error"] = f"no thumbnails after {limit_s:.0f} s"
            finish(w)
            return
        if w.session.project is not None and "project_open" not in out:
            out["project_open"] = time.time()
        pane = w.browser
        rows = pane.view.visible_rows()
        if "before" not in wait:
            if rows and all(pane.cache.has(pane.model.sample_id(r)) for r in rows):
                wait["before"], wait["n"] = pane.view.delegate.painted_thumbnails, len(rows)
        elif pane.view.delegate.painted_thumbnails >= wait["before"] + wait["n"]:
            out["first_thumbnails"] = time.time()
            out["visible_cells"] = wait["n"]
            out["images"] = pane.model.rowCount()
            finish(w)
            return
        QTimer.singleShot(2, poll)

    QTimer.singleShot(0, painted)
