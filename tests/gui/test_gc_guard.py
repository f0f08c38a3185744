"""Cyclic garbage is collected on the GUI thread, never in a job's thread (where finalising a closed
window's widgets crashed the test suite with a segmentation fault)."""

from __future__ import annotations

import gc
import threading

from lvlmva_desktop.core.runtime.memory import collect_garbage
from lvlmva_desktop.gui import gc_guard
from lvlmva_desktop.gui.jobs import Job, JobRunner


class _Cycle:
    """Unreachable once dropped, freed only by the cyclic collector; records the thread that freed it."""

    def __init__(self, seen: list[str]) -> None:
        self.me = self
        self.seen = seen

    def __del__(self) -> None:
        self.seen.append(threading.current_thread().name)


def test_the_window_collects_on_the_gui_thread_while_a_job_allocates(qtbot):
    collector = gc_guard.installed()
    assert collector is not None  # tests/gui/conftest.py installs it as app.py does
    assert not gc.isenabled()
    seen: list[str] = []
    runner = JobRunner(lambda: None)

    def allocate(project, state):
        _Cycle(seen)  # garbage made in the worker ...
        junk = [[i] for i in range(50 * gc.get_threshold()[0])]  # ... and allocations enough to trigger
        collect_garbage()  # a worker asking for memory back leaves the collection to the GUI thread
        return len(junk)

    try:
        _Cycle(seen)  # garbage made on the GUI thread
        with qtbot.waitSignal(runner.finished, timeout=10_000):
            runner.submit(Job("alloc", "Allocating", allocate, needs_project=False))
        assert seen == []  # nothing was collected in the job's thread
        before = collector.collections
        # The junk is gone again; the GUI thread's own allocations pass the interpreter's threshold.
        kept = [[i] for i in range(2 * gc.get_threshold()[0])]
        qtbot.waitUntil(lambda: len(seen) == 2, timeout=5000)
        assert len(kept) > 0
        assert collector.collections > before
        assert set(seen) == {threading.main_thread().name}
    finally:
        runner.shutdown(10)


def test_uninstalling_restores_automatic_collection_and_collects(qtbot):
    gc_guard.uninstall()
    assert gc.isenabled()
    collector = gc_guard.install()
    assert gc_guard.install() is collector  # once per application
    assert not gc.isenabled()
    seen: list[str] = []
    _Cycle(seen)
    gc_guard.uninstall()
    assert gc.isenabled()
    assert seen == [threading.main_thread().name]
    gc_guard.install()  # as the fixture left it


def test_collect_garbage_collects_in_a_worker_where_collection_is_automatic():
    """The command line keeps Python's own collection: a worker's request frees memory at once."""
    gc_guard.uninstall()
    try:
        seen: list[str] = []

        def worker() -> None:
            _Cycle(seen)
            collect_garbage()

        t = threading.Thread(target=worker, name="worker")
        t.start()
        t.join()
        assert seen == ["worker"]
    finally:
        gc_guard.install()
