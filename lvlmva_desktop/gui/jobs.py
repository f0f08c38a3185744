"""The one QThread adapter over the core's job functions.

A job is ``fn(project, state) -> result``: the same plain functions the command line runs, given a
``TaskState`` whose progress, partial results and messages become Qt signals here. Each job runs in its
own QThread with its own connection to the project database (SQLite connections belong to one thread),
so the GUI thread never waits on a job.

Four lanes: "main" for the method's long steps (training, explaining, critique, import), one at a time
because they share the GPU and the project; "view" for the viewer's attributions, which must not wait
behind a training; "lvlm" for chat answers, class summaries and the LVLM health check (a model load can
take minutes and must not hold up the viewer); "background" for work nobody waits on (the browser's
predictions over every image). Submitting a job while its lane is busy queues it; a queued job of the
same kind is replaced by the newer one.

A job belongs to the project that was open when it was submitted: it opens that folder, and when the
window has moved on to another project its result handlers are not called (its results would land in
the wrong views).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from lvlmva_desktop.core.runtime.errors import UserError, describe_error
from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState, TimeLeft

log = logging.getLogger(__name__)

JobFn = Callable[[Any, TaskState], Any]
LANES = ("main", "view", "lvlm", "background")


@dataclass
class Job:
    kind: str  # e.g. "train", "explain", "critique", "attribute"
    title: str  # shown to the user: "Training the original model"
    fn: JobFn
    lane: str = "main"
    needs_project: bool = True
    on_done: Callable[[Any], None] | None = None  # called in the GUI thread with the result
    on_partial: Callable[[Any], None] | None = None  # GUI thread, every partial result
    on_failed: Callable[[UserError], None] | None = (
        None  # GUI thread; the error also goes to the runner's failed
    )
    id: int = 0
    root: Path | None = None  # the project folder it was submitted for (set by submit)
    state: TaskState | None = field(default=None, repr=False)
    started: float = 0.0


class _Worker(QObject):
    """Lives in the job's thread; runs the function and reports back through queued signals."""

    # every signal carries the job, so the runner's slots (GUI thread, queued) know whose report it is
    progress = Signal(object, float, str, float)  # ..., seconds left (-1: unknown)
    partial = Signal(object, object)
    message = Signal(object, str)
    done = Signal(object, object)
    failed = Signal(object, object)
    cancelled = Signal(object)

    def __init__(self, job: Job, root: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.job = job
        self.root = root
        self.clock = clock
        self._last_emit: float | None = None
        # the time left, estimated here at each report (when it was made) from the pace of the progress
        self.time_left = TimeLeft(clock)
        self.state = TaskState(
            on_progress=self._on_progress,
            on_partial=lambda r: self.partial.emit(self.job, r),
            on_message=lambda m: self.message.emit(self.job, m),
        )
        job.state = self.state

    def _on_progress(self, fraction: float, message: str) -> None:
        left = self.time_left.update(fraction)  # every report counts for the pace, shown or not
        now = self.clock()
        if self._last_emit is None or now - self._last_emit >= 0.05 or fraction >= 1.0:  # 20 a second
            self._last_emit = now
            self.progress.emit(self.job, fraction, message, left)

    @Slot()
    def run(self) -> None:
        project = None
        try:
            if self.job.needs_project:
                from lvlmva_desktop.core.store.project import Project

                if self.root is None:
                    raise ValueError("Open or create a project first.")
                from lvlmva_desktop.core.store.lock import ProjectLocked

                try:
                    project = Project.open(self.root)
                except ProjectLocked:  # the window has it read-only: reading jobs work, writes are refused
                    project = Project.open(self.root, read_only=True, reason="held")
            self.state.check()
            result = self.job.fn(project, self.state)
        except Cancelled:
            self.cancelled.emit(self.job)
        except BaseException as e:  # noqa: BLE001 - every failure is reported, none kills the thread silently
            log.exception("job %s failed", self.job.kind)
            self.failed.emit(self.job, describe_error(e, self.job.title))
        else:
            self.done.emit(self.job, result)
        finally:
            if project is not None:
                project.close()


class JobRunner(QObject):
    """Runs jobs in QThreads, one per lane at a time, and turns their reports into signals."""

    started = Signal(object)  # Job
    progress = Signal(object, float, str, float)  # Job, fraction, message, seconds left (-1: unknown)
    message = Signal(object, str)
    finished = Signal(object, object)  # Job, result
    failed = Signal(object, object)  # Job, UserError
    cancelled = Signal(object)  # Job
    busyChanged = Signal(bool)

    def __init__(self, root_provider: Callable[[], Path | None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._root = root_provider
        self._running: dict[str, tuple[Job, QThread, _Worker]] = {}
        self._queue: dict[str, list[Job]] = {lane: [] for lane in LANES}
        self._next_id = 1
        self._live_threads = 0  # job threads started and not yet finished (0 after shutdown: no leaks)
        self._closing = False
        self.clock: Callable[[], float] = time.monotonic  # seconds, for the time left (tests set their own)

    # -- public ---------------------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        if job.lane not in LANES:
            raise ValueError(f"unknown lane {job.lane!r}")
        if self._closing:
            raise RuntimeError("The program is closing; no new step is started.")
        if job.needs_project and job.root is None:
            job.root = self._root()
        job.id = self._next_id
        self._next_id += 1
        q = self._queue[job.lane]
        q[:] = [j for j in q if j.kind != job.kind]
        q.append(job)
        self._pump(job.lane)
        return job

    def running(self, lane: str = "main") -> Job | None:
        got = self._running.get(lane)
        return got[0] if got else None

    def queued(self, lane: str = "main") -> list[Job]:
        return list(self._queue[lane])

    def is_closing(self) -> bool:
        """The window is closing: no job may be submitted any more."""
        return self._closing

    def is_busy(self, lane: str | None = None) -> bool:
        if lane is None:
            return bool(self._running)
        return lane in self._running

    def cancel(self, lane: str = "main", kind: str | None = None) -> bool:
        """Stop a lane's job: a queued one of ``kind`` is dropped (and reported cancelled), the running one
        is asked to stop (it stops at its next check, well within a second)."""
        dropped = [j for j in self._queue[lane] if kind is not None and j.kind == kind]
        for j in dropped:
            self._queue[lane].remove(j)
            self.cancelled.emit(j)
        got = self._running.get(lane)
        if got is None or (kind is not None and got[0].kind != kind):
            return bool(dropped)
        got[2].state.cancel()
        return True

    def drop_other_projects(self, root: Path | None) -> None:
        """The window opened another project: queued jobs of the old one are dropped, running ones stopped."""
        for lane in LANES:
            for j in [j for j in self._queue[lane] if j.needs_project and j.root != root]:
                self._queue[lane].remove(j)
                self.cancelled.emit(j)
            got = self._running.get(lane)
            if got is not None and got[0].needs_project and got[0].root != root:
                got[2].state.cancel()

    def cancel_all(self) -> None:
        for lane in LANES:
            self._queue[lane].clear()
            self.cancel(lane)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Block until every running job has ended (used when closing); True if all ended in time."""
        from PySide6.QtCore import QCoreApplication

        deadline = time.monotonic() + timeout_s
        while self._running and time.monotonic() < deadline:
            for _, thread, _ in list(self._running.values()):
                thread.wait(50)
            QCoreApplication.processEvents()
        return not self._running

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Cancel everything and wait; a job that cannot stop in time (an LVLM still loading) is waited
        for without a limit, because destroying a running thread would abort the program."""
        self._closing = True
        self.cancel_all()
        if self.wait(timeout_s):
            return True
        log.warning("a step did not stop within %.0f s; waiting for it to finish", timeout_s)
        for _, thread, _ in list(self._running.values()):
            thread.wait()
        return self.wait(5.0)

    # -- internals ------------------------------------------------------------------------------------
    def _pump(self, lane: str) -> None:
        if lane in self._running or not self._queue[lane]:
            return
        job = self._queue[lane].pop(0)
        thread = QThread()
        thread.setObjectName(f"job-{job.kind}-{job.id}")
        worker = _Worker(job, job.root if job.needs_project else None, self.clock)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        self._live_threads += 1
        thread.finished.connect(self._on_thread_finished)
        worker.progress.connect(self._on_progress)
        worker.message.connect(self._on_message)
        worker.partial.connect(self._on_partial)
        worker.done.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        self._running[lane] = (job, thread, worker)
        job.started = time.monotonic()
        if len(self._running) == 1:
            self.busyChanged.emit(True)
        self.started.emit(job)
        thread.start()

    def live_threads(self) -> int:
        """How many job threads are still running (the window checks 0 after closing)."""
        return self._live_threads

    @Slot()
    def _on_thread_finished(self) -> None:
        self._live_threads -= 1

    @Slot(object, float, str, float)
    def _on_progress(self, job: Job, fraction: float, message: str, left: float) -> None:
        self.progress.emit(job, fraction, message, left)

    @Slot(object, str)
    def _on_message(self, job: Job, message: str) -> None:
        self.message.emit(job, message)

    def _current(self, job: Job) -> bool:
        """Whether a job's results still belong to what the window shows (the same project is open)."""
        return not job.needs_project or job.root == self._root()

    @Slot(object, object)
    def _on_partial(self, job: Job, result: object) -> None:
        if job.on_partial is not None and self._current(job):
            try:
                job.on_partial(result)
            except Exception:  # noqa: BLE001 - a display problem must not stop the job
                log.exception("showing a partial result of %s failed", job.kind)

    @Slot(object, object)
    def _on_done(self, job: Job, result: object) -> None:
        self._end(job, "done", result)

    @Slot(object, object)
    def _on_failed(self, job: Job, error: object) -> None:
        self._end(job, "failed", error)

    @Slot(object)
    def _on_cancelled(self, job: Job) -> None:
        self._end(job, "cancelled", None)

    def _end(self, job: Job, how: str, payload: object) -> None:
        got = self._running.get(job.lane)
        if got is None or got[0] is not job:
            return
        _, thread, worker = got
        thread.quit()
        thread.wait()
        thread.deleteLater()
        del self._running[job.lane]  # the worker goes with its last reference (its thread has ended)
        current = self._current(job)
        try:
            if how == "done":
                if job.on_done is not None and current:
                    job.on_done(payload)
                self.finished.emit(job, payload)
            elif how == "failed":
                if job.on_failed is not None and current:
                    job.on_failed(payload)
                self.failed.emit(job, payload)
            else:
                self.cancelled.emit(job)
        except Exception as e:  # noqa: BLE001 - a failing result handler is a failure of the job, told once
            log.exception("handling the result of %s failed", job.kind)
            self.failed.emit(job, describe_error(e, job.title))
        finally:
            if not self._running:
                self.busyChanged.emit(False)
            if not self._closing:
                self._pump(job.lane)
