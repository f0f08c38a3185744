"""The one pattern for every slow step: a plain function that takes a TaskState.

A job reports progress and partial results through the state and calls ``state.check()`` between steps so
that a cancel request stops it promptly. The GUI wraps the same functions in a QThread adapter; the CLI
drives them with a terminal progress bar; tests pass a bare ``TaskState()``.
"""

from __future__ import annotations

import math
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


class TimeLeft:
    """An honest estimate of a job's seconds left, from the pace of its recent progress.

    The average pace since the start misleads whenever a job's parts go at different paces: for a job
    that reaches 5 % in a second (images read from the decoded cache) and then goes at 1 % a second,
    "elapsed × (1 − fraction) / fraction" says 54 to 64 s from 10 % to 40 % while the truth falls from
    90 s to 60 s (tests/gui/test_defects_jobs.py).
    Here the pace is measured over the last ``window`` share of the time (at least ``min_window`` seconds),
    so an early fast (or slow) part is forgotten, and the estimate is smoothed (a steady job's estimate
    falls one second a second). ``update(fraction)`` gives -1 (unknown) until the progress has moved for
    ``min_seconds`` and by ``min_fraction`` since it started moving (time spent loading before the first
    move is not counted), 0 at the end. ``clock`` gives seconds (injectable for tests).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        min_seconds: float = 3.0,
        min_fraction: float = 0.02,
        window: float = 0.5,
        min_window: float = 2.0,
        smoothing_s: float = 2.0,
    ) -> None:
        self.clock = clock
        self.min_seconds, self.min_fraction = min_seconds, min_fraction
        self.window, self.min_window, self.smoothing_s = window, min_window, smoothing_s
        self._samples: list[tuple[float, float]] = []  # (time, fraction) since the first report
        # (time, fraction) where the progress started moving: the samples before the window are dropped,
        # but the job's age (for min_seconds and the window's length) counts from here
        self._start: tuple[float, float] | None = None
        self._estimate: tuple[float, float] | None = None  # (time, seconds left) last given

    def update(self, fraction: float) -> float:
        now = self.clock()
        fraction = min(max(float(fraction), 0.0), 1.0)
        if fraction >= 1.0:
            return 0.0
        if self._samples and fraction < self._samples[-1][1]:
            self._samples.clear()  # progress went back (a new phase counts anew)
            self._estimate = None
            self._start = None
        if len(self._samples) == 1 and fraction <= self._samples[0][1]:
            self._samples[0] = (now, fraction)  # not started moving yet (loading): the pace starts later
            return -1.0
        self._samples.append((now, fraction))
        if self._start is None and len(self._samples) >= 2:  # it moves: its age counts from here
            self._start = self._samples[0]
        t0, f0 = self._start or self._samples[0]
        if now - t0 < self.min_seconds or fraction - f0 < self.min_fraction:
            return -1.0
        span = max(self.min_window, self.window * (now - t0))
        ref = self._samples[0]
        for t, f in self._samples:  # the latest report at least ``span`` ago
            if t <= now - span:
                ref = (t, f)
            else:
                break
        while len(self._samples) > 2 and self._samples[1][0] <= now - span:
            self._samples.pop(0)  # older than the reference: no longer needed
        rt, rf = ref
        if fraction <= rf or now <= rt:
            return -1.0
        raw = (now - rt) * (1.0 - fraction) / (fraction - rf)
        if self._estimate is None:
            left = raw
        else:
            t_prev, prev = self._estimate
            dt = max(now - t_prev, 0.0)
            predicted = max(prev - dt, 0.0)
            keep = math.exp(-dt / self.smoothing_s)
            left = keep * predicted + (1 - keep) * raw
        self._estimate = (now, left)
        return left


def ensure_state(state: TaskState | None) -> TaskState:
    return state if state is not None else TaskState()
