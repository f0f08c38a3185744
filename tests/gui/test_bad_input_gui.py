"""The window tells bad input and a short GPU in words: a damaged project database on open, and a job that
went on with smaller batches after running out of GPU memory."""

from __future__ import annotations

import shutil

import torch

from lvlmva_desktop.core.runtime.memory import run_batched
from lvlmva_desktop.gui.jobs import Job


def test_a_damaged_database_is_told_on_open_and_the_window_stays_usable(window, demo_project, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(demo_project, damaged)
    db = damaged / "project.sqlite"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])  # a copy that stopped a third of the way
    assert not window.open_project(damaged)
    (level, text), *_ = window.messages.messages()
    assert level == "error" and "Opening the project failed" in text
    assert "damaged or not a database" in text and "Traceback" not in text
    assert window.session.project is None
    assert window.open_project(demo_project)  # the window goes on


def test_a_job_that_ran_short_of_gpu_memory_says_so_in_messages(window, qtbot):
    def fn(project, state):
        def batch(a, b):
            if b - a > 8:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            return b - a

        return run_batched(batch, 40, 32, state, what="computing attributions")

    with qtbot.waitSignal(window.runner.finished, timeout=10000):
        window.runner.submit(Job("explain", "Explaining the alignment set", fn, needs_project=False))
    qtbot.waitUntil(lambda: len(window.messages.messages()) >= 2, timeout=5000)
    warnings = [t for level, t in window.messages.messages() if level == "warning"]  # newest first
    assert len(warnings) == 2 and all("Explaining the alignment set: smaller batches" in t for t in warnings)
    assert warnings[1].endswith(
        "GPU memory ran out at batch 32 while computing attributions; continuing with batch 16."
    )
    assert warnings[0].endswith("at batch 16 while computing attributions; continuing with batch 8.")
