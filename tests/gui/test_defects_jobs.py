"""Defect of issue 13: the time left of a step stayed at "about 50 s left" from 5 % to 42 %. The estimate
came from the average pace since the start, which a fast first part (images read from the decoded cache:
5 % in a second) makes too optimistic for a long while. Now it follows the pace of the recent progress.

The job runs under a controlled clock (``JobRunner.clock``): its progress advances at a known pace, so the
true time left is known at every report; no wall-clock time is asserted."""

from __future__ import annotations

import threading
import time

from lvlmva_desktop.core.runtime.jobs import TimeLeft
from lvlmva_desktop.gui.jobs import Job, JobRunner
from lvlmva_desktop.gui.training_widgets import format_time_left


class Clock:
    """Seconds, set by the job as its work advances (thread-safe enough: one writer)."""

    def __init__(self, start: float = 5000.0) -> None:
        self.start = self.now = start
        self.lock = threading.Lock()

    def set(self, t: float) -> None:
        with self.lock:
            self.now = self.start + t

    def __call__(self) -> float:
        with self.lock:
            return self.now


def _fast_start_then_steady() -> list[tuple[float, float]]:
    """(seconds, fraction): 5 % in the first second, then 1 % a second to the end (true left: (1 - f) * 100)."""
    script = [(0.0, 0.0), (0.5, 0.025), (1.0, 0.05)]
    t, f = 1.0, 0.05
    while f < 1.0 - 1e-9:
        t, f = t + 2.0, min(1.0, round(f + 0.02, 6))
        script.append((t, f))
    return script


def test_time_left_follows_the_pace_of_the_progress(qtbot):
    clock = Clock()
    runner = JobRunner(lambda: None)
    runner.clock = clock
    script = _fast_start_then_steady()
    reports: list[tuple[float, float]] = []
    runner.progress.connect(lambda job, fraction, message, left: reports.append((fraction, left)))

    def work(project, state):
        for t, f in script:
            clock.set(t)
            state.progress(f, None, "training")
            time.sleep(0.06)  # the runner passes on at most 20 reports a second
        return "done"

    with qtbot.waitSignal(runner.finished, timeout=60000):
        runner.submit(Job("paced", "A paced job", work, lane="main", needs_project=False))
    runner.shutdown(10)
    got = dict(reports)
    assert len(got) == len(script)
    # nothing is said while the job has only just started moving
    assert got[0.0] == -1 and got[0.025] == -1 and got[0.05] == -1
    # from 10 %: within 15 % (and a second) of the truth, at every report
    for f, left in got.items():
        if 0.1 <= f < 1.0:
            true = (1 - f) * 100
            assert abs(left - true) <= 0.15 * true + 1.0, (f, left, true, format_time_left(left))
    # and it falls as the job advances: from about 90 s at 10 % to about 58 s at 42 %
    assert got[0.41] < got[0.11] - 25
    assert format_time_left(got[0.11]) != format_time_left(got[0.41])


def test_time_left_ignores_loading_before_the_first_move_and_is_hidden_until_it_means_something():
    clock = Clock()
    est = TimeLeft(clock=clock)
    seen = []
    for t, f in [(0, 0.0), (10, 0.0), (20, 0.0)] + [(20 + k, 0.01 * k) for k in range(1, 41)]:
        clock.set(t)
        seen.append((t, f, est.update(f)))
    hidden = [t for t, f, left in seen if left < 0]
    assert hidden == [0, 10, 20, 21, 22]  # loading, then the first seconds of movement
    for t, f, left in seen:
        if left >= 0:
            assert abs(left - (1 - f) * 100) <= 0.15 * (1 - f) * 100 + 1.0, (t, f, left)
    clock.set(200)
    assert est.update(1.0) == 0.0
