"""Python's cyclic garbage collector runs on the GUI thread only.

Python starts a collection in whichever thread happens to allocate when the counters overflow. In a Qt
program with worker threads that thread is often a job's QThread (loading a split, computing attributions);
a collection there finalises whatever unreachable cycles exist, including a closed window's widgets, and a
QWidget destroyed off the GUI thread crashes the process (a segmentation fault, seen in CI while the
browser's prediction job loaded its split). So while the window runs, automatic collection is off and a
timer on the GUI thread does the same generational collections the interpreter would have done (the
pattern calibre uses). Workers that want memory back (core.runtime.memory.collect_garbage) leave the collection to
this timer when automatic collection is off.
"""

from __future__ import annotations

import gc
import logging

from PySide6.QtCore import QCoreApplication, QObject, QTimer

log = logging.getLogger(__name__)

INTERVAL_MS = 500


class MainThreadCollector(QObject):
    """Turns automatic collection off and collects from a GUI-thread timer; ``uninstall`` restores it."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = INTERVAL_MS) -> None:
        super().__init__(parent)
        self._was_enabled = gc.isenabled()
        self.threshold = gc.get_threshold()
        self.collections = 0  # how many collections this timer ran (tests read it)
        gc.disable()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.check)
        self._timer.start()

    def check(self) -> None:
        """One tick: collect the generations whose counters passed the interpreter's own thresholds."""
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self.threshold
        if c0 <= t0:
            return
        generation = 2 if (c1 > t1 and c2 > t2) else 1 if c1 > t1 else 0
        gc.collect(generation)
        self.collections += 1

    def collect_now(self) -> None:
        """A full collection here, on the GUI thread (after a job freed a model, when closing)."""
        gc.collect()
        self.collections += 1

    def uninstall(self) -> None:
        self._timer.stop()
        self.collect_now()
        if self._was_enabled:
            gc.enable()


_installed: MainThreadCollector | None = None


def install(app: QCoreApplication | None = None) -> MainThreadCollector:
    """Install the collector once for the application (a second call returns the first)."""
    global _installed
    if _installed is None:
        _installed = MainThreadCollector(app or QCoreApplication.instance())
        log.debug("garbage collection moved to the GUI thread")
    return _installed


def uninstall() -> None:
    global _installed
    if _installed is not None:
        _installed.uninstall()
        _installed.deleteLater()
        _installed = None


def installed() -> MainThreadCollector | None:
    return _installed
