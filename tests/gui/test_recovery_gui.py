"""The window and crash safety / one writer, with real processes: a project another program writes is
refused in the Messages pane and may be opened read-only; a critique killed midway is told on opening and
Method > Resume interrupted step finishes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from fixtures.crash import REPO, kill, query, start, wait_for
from PySide6.QtWidgets import QMessageBox

from lvlmva_desktop.gui.jobs import Job

HOLD = (
    "import sys, time; from pathlib import Path; from lvlmva_desktop.core.store.project import Project; "
    "p = Project.open(sys.argv[1]); Path(sys.argv[2]).write_text('held'); time.sleep(600)"
)


@pytest.fixture
def held(demo_project, tmp_path):
    """The demo project, held for writing by another process."""
    mark = tmp_path / "held"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(demo_project), str(mark)], cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    t0 = time.monotonic()
    while not mark.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 60
        time.sleep(0.02)
    yield demo_project, proc
    proc.kill()
    proc.wait()


def _answer(monkeypatch, button):
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return button

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def test_a_project_another_program_writes_is_refused_and_the_user_may_decline(window, held, monkeypatch):
    root, proc = held
    asked = _answer(monkeypatch, QMessageBox.StandardButton.No)
    assert not window.open_project(root)
    assert len(asked) == 1 and f"pid {proc.pid}," in asked[0] and "read-only" in asked[0]
    (level, text), *_ = window.messages.messages()
    assert level == "error" and "This project is open in another LVLM-VA window or command" in text
    assert "Traceback" not in text and window.session.project is None


def test_a_project_another_program_writes_opens_read_only_on_request(window, held, monkeypatch, qtbot):
    root, proc = held
    _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    assert window.open_project(root)
    assert window.session.read_only and "(read-only)" in window.windowTitle()
    texts = [t for _, t in window.messages.messages()]
    assert "(read-only)" in texts[0] and "open in another LVLM-VA window" in texts[1]
    assert not any(a.isEnabled() for a in [*window.method_actions, window.act_resume])
    # a job reads the project in its own thread, read-only too (another process holds the lock)
    with qtbot.waitSignal(
        window.runner.finished, timeout=20000, check_params_cb=lambda job, _: job.kind == "read"
    ) as got:
        window.runner.submit(
            Job("read", "Reading", lambda p, s: (p.read_only, len(p.samples())), lane="view")
        )
    assert got.args[1] == (True, 360)
    # a write is refused in words, and the holder's database is untouched
    with pytest.raises(Exception, match="open read-only"):
        window.session.project.set_class_descriptions({c: "x" for c in window.session.project.classes})
    assert query(root, "PRAGMA integrity_check") == [("ok",)]


def test_a_killed_critique_is_told_on_opening_and_resumed_from_the_menu(
    window, explained_project, qtbot, tmp_path
):
    root = explained_project
    proc, _, err = start(
        ["critique", str(root), "--critic", "simulated", "--verdict-accuracy", "0.87", "--quiet"],
        tmp_path,
        pause="slow_critic:0.2",
    )
    running = "SELECT count(*) FROM critiques c JOIN runs r ON r.id = c.run_id WHERE r.status = 'running'"
    wait_for(lambda: (query(root, running) or [(0,)])[0][0] >= 3, proc, err, what="3 critiques")
    kill(proc)

    assert window.open_project(root)
    level, notice = next((lvl, t) for lvl, t in window.messages.messages() if "A step was interrupted" in t)
    assert level == "warning"
    rid = int(query(root, "SELECT id FROM runs WHERE status='interrupted'")[0][0])
    assert f"Run {rid} (critique" in notice and "Method > Resume interrupted step" in notice
    done_before = len(query(root, "SELECT id FROM critiques WHERE run_id=?", (rid,)))
    assert 3 <= done_before < 16

    assert window.act_resume.isEnabled()
    # the viewer's own jobs may finish meanwhile: wait for the resume job
    with qtbot.waitSignal(
        window.runner.finished, timeout=120000, check_params_cb=lambda job, _: job.kind == "resume"
    ):
        window.act_resume.trigger()
    assert f"Run {rid} resumed as run" in window.messages.messages()[0][1]
    ((new_id, settings, results),) = query(
        root, "SELECT id, settings, results FROM runs WHERE kind='critique' AND id > ?", (rid,)
    )
    assert json.loads(settings)["resumes"] == rid
    assert json.loads(results)["n_images"] == 16 - done_before
    samples = query(root, "SELECT sample_id FROM critiques WHERE run_id IN (?, ?)", (rid, new_id))
    assert len(samples) == len({s for (s,) in samples}) == 16
    window.act_resume.trigger()  # nothing is left to resume: told in words, nothing starts
    (level, text), *_ = window.messages.messages()
    assert level == "error" and "No interrupted step to resume" in text and not window.runner.is_busy("main")


def test_an_interrupted_lvlm_critique_is_resumed_from_the_menu_by_the_one_critic_factory(
    window, explained_project, qtbot, tmp_path
):
    """The window's resume builds the LVLM critic through lvlm/factory.py as the command line's does: the
    new run records the interrupted run's critic settings, and the images left are critiqued once."""
    from fixtures.tiny_lvlm import make_tiny_lvlm

    from lvlmva_desktop.lvlm.config import LVLMConfig

    root = explained_project
    model = make_tiny_lvlm("qwen2_5_vl", tmp_path / "qwen-tiny")
    argv = ["critique", str(root), "--critic", "lvlm", "--model-dir", str(model), "--batch-size", "1"]
    proc, _, err = start([*argv, "--max-new-tokens", "8", "--quiet"], tmp_path, pause="slow_lvlm_critic:0.3")
    running = "SELECT count(*) FROM critiques c JOIN runs r ON r.id = c.run_id WHERE r.status = 'running'"
    wait_for(lambda: (query(root, running) or [(0,)])[0][0] >= 2, proc, err, what="2 critiques")
    kill(proc)

    assert window.open_project(root)
    rid = int(query(root, "SELECT id FROM runs WHERE status='interrupted'")[0][0])
    done_before = len(query(root, "SELECT id FROM critiques WHERE run_id=?", (rid,)))
    window.session.set_lvlm_config(LVLMConfig(kind="local", folder=str(model), device="cpu"))
    try:
        with qtbot.waitSignal(
            window.runner.finished, timeout=180000, check_params_cb=lambda job, _: job.kind == "resume"
        ):
            window.act_resume.trigger()
    finally:
        window.session.set_lvlm_config(None)  # QSettings are shared by the test session
    assert f"Run {rid} resumed as run" in window.messages.messages()[0][1]
    ((old,),) = query(root, "SELECT settings FROM runs WHERE id=?", (rid,))
    ((new_id, new, status),) = query(
        root, "SELECT id, settings, status FROM runs WHERE kind='critique' AND id > ?", (rid,)
    )
    old_s, new_s = json.loads(old), json.loads(new)
    assert status == "finished" and new_s["resumes"] == rid
    assert new_s["critic"] == old_s["critic"] and new_s["critic"]["settings"]["critic_max_new_tokens"] == 8
    samples = query(root, "SELECT sample_id FROM critiques WHERE run_id IN (?, ?)", (rid, new_id))
    assert len(samples) == len({s for (s,) in samples}) == 16 and done_before >= 2
