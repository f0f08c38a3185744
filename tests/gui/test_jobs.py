"""The QThread adapter: results, partial results, progress, failures in words, cancel, no leaked threads,
and a GUI thread that keeps answering while a real core job runs."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import QElapsedTimer, QTimer

from lvlmva_desktop.gui.jobs import Job, JobRunner

_RUNNERS: list[JobRunner] = []


def _runner(root=None):
    runner = JobRunner(lambda: root)
    _RUNNERS.append(runner)
    return runner


@pytest.fixture(autouse=True)
def _stop_runners():
    """A failed test must not leave a job thread running (destroying it would abort the process)."""
    yield
    while _RUNNERS:
        _RUNNERS.pop().shutdown(10)


def test_job_result_partials_and_progress_arrive_in_gui_thread(qtbot):
    runner = _runner()
    seen = {"partials": [], "progress": [], "threads": set()}

    def fn(project, state):
        assert project is None
        for i in range(5):
            state.progress(i + 1, 5, f"step {i + 1}")
            state.partial(i)
            time.sleep(0.06)
        return threading.get_ident()

    def on_partial(x):
        seen["partials"].append(x)
        seen["threads"].add(threading.get_ident())

    runner.progress.connect(lambda job, f, m, left: seen["progress"].append((f, m)))
    job = Job("demo", "A demo job", fn, needs_project=False, on_partial=on_partial)
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        runner.submit(job)
    worker_thread = blocker.args[1]
    assert worker_thread != threading.get_ident()  # ran off the GUI thread
    assert seen["partials"] == [0, 1, 2, 3, 4]
    assert seen["threads"] == {threading.get_ident()}  # handlers ran in the GUI thread
    assert seen["progress"][-1] == (1.0, "step 5")
    assert not runner.is_busy()


def test_failure_is_reported_in_words_with_details(qtbot):
    runner = _runner()

    def fn(project, state):
        raise FileNotFoundError(2, "No such file or directory", "/data/missing.png")

    with qtbot.waitSignal(runner.failed, timeout=5000) as blocker:
        runner.submit(Job("x", "Importing", fn, needs_project=False))
    err = blocker.args[1]
    assert err.title == "Importing failed"
    assert "/data/missing.png" in err.message and "Traceback" not in err.message
    assert "FileNotFoundError" in err.details


def test_job_needing_a_project_without_one_fails_clearly(qtbot):
    runner = _runner(None)
    with qtbot.waitSignal(runner.failed, timeout=60000) as blocker:  # the first import of the core is slow
        runner.submit(Job("train", "Training", lambda p, s: 1))
    assert "Open or create a project" in blocker.args[1].message


def test_cancel_stops_a_job_quickly_and_queue_runs_next(qtbot):
    runner = _runner()
    order = []

    def slow(project, state):
        while True:
            state.check()
            time.sleep(0.01)

    def quick(project, state):
        order.append("quick")
        return 7

    runner.submit(Job("slow", "Slow", slow, needs_project=False))
    runner.submit(Job("quick", "Quick", quick, needs_project=False))  # queued behind it
    assert runner.running().kind == "slow" and [j.kind for j in runner.queued()] == ["quick"]
    t = time.monotonic()
    with qtbot.waitSignals([runner.cancelled, runner.finished], timeout=5000):
        runner.cancel()
    assert time.monotonic() - t < 1.0
    assert order == ["quick"]


def test_a_newer_queued_job_of_the_same_kind_replaces_the_older(qtbot):
    runner = _runner()
    gate = threading.Event()
    got = []
    runner.submit(Job("block", "Block", lambda p, s: gate.wait(5), needs_project=False))
    runner.submit(Job("attr", "A1", lambda p, s: got.append(1), needs_project=False))
    runner.submit(Job("attr", "A2", lambda p, s: got.append(2), needs_project=False))
    gate.set()
    qtbot.waitUntil(lambda: not runner.is_busy() and not runner.queued(), timeout=5000)
    assert got == [2]


def test_lanes_run_side_by_side(qtbot):
    runner = _runner()
    gate = threading.Event()
    runner.submit(Job("long", "Long", lambda p, s: gate.wait(5), needs_project=False))
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        runner.submit(Job("quick", "Quick", lambda p, s: "view", lane="view", needs_project=False))
    assert blocker.args[1] == "view" and runner.running("main").kind == "long"
    gate.set()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=5000)


def test_event_loop_keeps_answering_during_real_training(qtbot, demo_project):
    """The issue's measure: a QTimer's longest gap stays under 200 ms while a job runs."""
    import torch

    from lvlmva_desktop.core.method.pipeline import train_original
    from lvlmva_desktop.core.method.train import TrainSettings

    runner = _runner(demo_project)
    gaps = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.elapsed()]

    def tick():
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    job = Job(
        "train",
        "Training",
        lambda p, s: train_original(p, "small_cnn", TrainSettings(epochs=3), torch.device("cpu"), s),
    )
    with qtbot.waitSignal(runner.finished, timeout=60000):
        runner.submit(job)
    timer.stop()
    assert len(gaps) > 20
    assert max(gaps) < 200, f"longest gap {max(gaps)} ms"


def test_shutdown_cancels_and_leaves_no_threads(qtbot):
    runner = _runner()

    def slow(project, state):
        while True:
            state.check()
            time.sleep(0.01)

    ends = []
    runner.cancelled.connect(lambda job: ends.append(job.kind))
    runner.submit(Job("slow", "Slow", slow, needs_project=False))
    runner.submit(Job("slow2", "Slow", slow, lane="view", needs_project=False))
    runner.submit(Job("never", "Queued", slow, needs_project=False))
    assert runner.shutdown(5)
    assert sorted(ends) == ["slow", "slow2"]  # the queued job was dropped, not started
    assert not runner.is_busy()
    assert runner.running("main") is None and runner.running("view") is None
    qtbot.waitUntil(lambda: runner.live_threads() == 0, timeout=5000)


def test_a_job_belongs_to_the_project_it_was_submitted_for(qtbot, tmp_path):
    """Submitted for A, started after the window moved to B: it opens A, and A's handlers are skipped."""
    from lvlmva_desktop.core.store.project import Project

    roots = {"now": None}
    for name in ("a", "b"):
        Project.create(tmp_path / name, name, ["x", "y"], (8, 8), 1).close()
    runner = JobRunner(lambda: roots["now"])
    _RUNNERS.append(runner)
    gate = threading.Event()
    runner.submit(Job("block", "Block", lambda p, s: gate.wait(5)))  # occupies the lane (project-less root)
    roots["now"] = tmp_path / "a"
    seen, done = [], []
    job = runner.submit(Job("t", "T", lambda p, s: seen.append(p.root), on_done=done.append))
    roots["now"] = tmp_path / "b"  # the user opened another project meanwhile
    with qtbot.waitSignal(runner.finished, timeout=5000, check_params_cb=lambda j, r: j is job):
        gate.set()
    assert seen == [(tmp_path / "a").resolve()] or seen == [tmp_path / "a"]
    assert done == []  # A's result is not shown in B's views


def test_drop_other_projects_cancels_queued_and_running_jobs_of_the_old_project(qtbot, tmp_path):
    roots = {"now": tmp_path}
    runner = JobRunner(lambda: roots["now"])
    _RUNNERS.append(runner)
    cancelled = []
    runner.cancelled.connect(lambda j: cancelled.append(j.kind))

    def slow(project, state):
        while True:
            state.check()
            time.sleep(0.01)

    runner.submit(Job("slow", "Slow", slow, needs_project=False, lane="view"))
    runner.submit(Job("old", "Old", slow, needs_project=True, lane="view"))  # queued, for tmp_path
    runner.submit(Job("mine", "Mine", slow, needs_project=False, lane="view"))
    roots["now"] = tmp_path / "other"
    runner.drop_other_projects(roots["now"])
    assert [j.kind for j in runner.queued("view")] == ["mine"] and cancelled == ["old"]
    assert runner.shutdown(5)


def test_cancel_drops_a_queued_job_of_that_kind(qtbot):
    runner = _runner()
    gate = threading.Event()
    ran = []
    runner.submit(Job("block", "Block", lambda p, s: gate.wait(5), needs_project=False, lane="lvlm"))
    runner.submit(Job("chat", "Chat", lambda p, s: ran.append(1), needs_project=False, lane="lvlm"))
    with qtbot.waitSignal(runner.cancelled, timeout=2000):
        assert runner.cancel("lvlm", kind="chat")
    gate.set()
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=5000)
    assert ran == []


def test_no_new_job_while_closing_and_a_stubborn_job_is_waited_for(qtbot):
    runner = _runner()
    runner.submit(Job("stubborn", "Loading", lambda p, s: time.sleep(1.0), needs_project=False))
    assert runner.shutdown(0.2)  # did not stop in time: waited for, not destroyed while running
    assert (
        runner.live_threads() == 0
        or qtbot.waitUntil(lambda: runner.live_threads() == 0, timeout=3000) is None
    )
    try:
        runner.submit(Job("late", "Late", lambda p, s: 1, needs_project=False))
    except RuntimeError as e:
        assert "closing" in str(e)
    else:
        raise AssertionError("a job was accepted while closing")
