"""The one pattern for every slow step: a plain function that takes a TaskState.

A job reports progress and partial results through the state and calls ``state.check()`` between steps so
that a cancel request stops it promptly. The GUI wraps the same functions in a QThread adapter; the CLI
drives them with a terminal progress bar; tests pass a bare ``TaskState()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Cancelled(Exception):
    """Raised inside a job when its TaskState was cancelled; the job's partial work stays consistent."""


ProgressCallback = Callable[[float, str], None]


class TaskState:
    """Progress, cancellation and partial results for one running job (thread-safe to cancel)."""

    def __init__(
        self,
        on_progress: ProgressCallback | None = None,
        on_partial: Callable[[Any], None] | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self._cancel = threading.Event()
        self._on_progress = on_progress
        self._on_partial = on_partial
        self._on_message = on_message
        self.fraction = 0.0
        self.message = ""
        self.started = time.monotonic()

    # -- cancellation -------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise Cancelled if a cancel was requested; call this between units of work."""
        if self._cancel.is_set():
            raise Cancelled()

    # -- reporting ----------------------------------------------------------------------------
    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress as ``done/total`` (or a fraction in [0, 1] when total is None)."""
        frac = float(done) / float(total) if total else float(done)
        self.fraction = min(max(frac, 0.0), 1.0)
        if message is not None:
            self.message = message
        if self._on_progress is not None:
            self._on_progress(self.fraction, self.message)

    def info(self, message: str) -> None:
        self.message = message
        if self._on_message is not None:
            self._on_message(message)

    def partial(self, result: Any) -> None:
        if self._on_partial is not None:
            self._on_partial(result)

    def child(self, start: float, end: float) -> TaskState:
        """A sub-state whose progress maps into [start, end] of this one and shares its cancel flag."""
        parent = self

        def forward(frac: float, msg: str) -> None:
            parent.progress(start + (end - start) * frac, None, msg or None)

        sub = TaskState(on_progress=forward, on_partial=self._on_partial, on_message=self._on_message)
        sub._cancel = self._cancel
        return sub


def ensure_state(state: TaskState | None) -> TaskState:
    return state if state is not None else TaskState()
