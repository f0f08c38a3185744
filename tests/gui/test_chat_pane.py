"""The chat pane with a real (tiny, random-weight) local LVLM: critique and verdicts of the current image,
answers that stream piece by piece and are stored once complete, Stop, the class summary, and what the
pane says without an LVLM or for an image outside the alignment set."""

from __future__ import annotations

import pytest
from fixtures.tiny_lvlm import make_tiny_lvlm
from PySide6.QtCore import Qt

from lvlmva_desktop.gui.chat_pane import ChatPane
from lvlmva_desktop.gui.jobs import JobRunner
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.lvlm.backend import GenerationSettings
from lvlmva_desktop.lvlm.config import LVLMConfig


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return make_tiny_lvlm("qwen2_5_vl", tmp_path_factory.mktemp("tiny") / "qwen-tiny")


@pytest.fixture
def session(explained_project, tiny_qwen):
    s = Session(device="cpu")
    s.open_project(explained_project)
    s.set_lvlm_config(LVLMConfig(kind="local", folder=str(tiny_qwen), device="cpu"))
    yield s
    s.release_lvlm()
    s.close_project()


@pytest.fixture
def runner(session):
    r = JobRunner(lambda: session.root)
    yield r
    r.shutdown(20)


@pytest.fixture
def pane(qtbot, session, runner):
    p = ChatPane(session, runner)
    qtbot.addWidget(p)
    p.resize(450, 700)
    p.show()
    qtbot.waitExposed(p)
    return p


def _members(session) -> list[int]:
    return [r["sample_id"] for r in session.project.alignment_members(session.alignment_set_id())]


def test_shows_the_critique_and_who_decided_each_verdict(qtbot, pane, session):
    sid = _members(session)[0]
    eid = session.explanation_id()
    session.project.set_expert_verdict(eid, sid, 0, "spurious")
    session.select_sample(sid)
    assert pane.stack.currentIndex() == 1 and f"Image #{sid}" in pane.header.text()
    text = pane.context.toPlainText()
    critic = [c["text"] for c in session.project.critiques(eid) if c["sample_id"] == sid][-1]
    assert critic.splitlines()[0] in text
    assert "Decided by" in text and "spurious" in text and "expert (" in text and "critic" in text
    assert "No questions about this image yet" in pane.transcript.toPlainText()


def test_answer_streams_then_is_stored_and_shown(qtbot, pane, session, runner, artifacts_dir):
    sid = _members(session)[1]
    session.select_sample(sid)
    pane.generation_settings = GenerationSettings(max_new_tokens=24, ignore_eos=True)
    events: list[tuple[str, str, bool]] = []
    pane.answerPiece.connect(lambda p: events.append(("piece", p, runner.is_busy("lvlm"))))
    pane.answerFinished.connect(lambda a: events.append(("done", a, False)))
    qtbot.keyClicks(pane.input, "Why is segment 2 spurious?")
    assert pane.ask_button.isEnabled()
    qtbot.keyClick(pane.input, Qt.Key.Key_Return)  # Enter sends
    assert pane.input.toPlainText() == "" and pane.stop_button.isEnabled() and not pane.ask_button.isEnabled()
    assert "Why is segment 2 spurious?" in pane.transcript.toPlainText()  # shown while it is answered
    qtbot.waitUntil(lambda: any(e[0] == "piece" for e in events), timeout=120000)
    assert runner.is_busy("lvlm")  # the first piece arrived while the answer was still being generated
    assert "Why is segment 2 spurious?" in pane.transcript.toPlainText()
    qtbot.waitUntil(lambda: events and events[-1][0] == "done", timeout=60000)
    pieces = [e[1] for e in events if e[0] == "piece"]
    assert len(pieces) > 1 and events.index(next(e for e in events if e[0] == "done")) == len(events) - 1
    assert all(busy for kind, _, busy in events if kind == "piece")
    answer = events[-1][1]
    assert answer == "".join(pieces).strip() and answer
    msgs = session.project.chat_messages(session.explanation_id(), sid)
    assert [(m["role"], m["text"]) for m in msgs] == [
        ("user", "Why is segment 2 spurious?"),
        ("assistant", answer),
    ]
    assert '"kind": "local"' in msgs[1]["model"]
    shown = pane.transcript.toPlainText()
    assert "You" in shown and "LVLM" in shown and answer.splitlines()[0] in shown
    assert pane.ask_button.isEnabled() is False and not pane.stop_button.isEnabled()  # empty box, idle
    pane.grab().save(str(artifacts_dir / "chat_pane_450x700.png"))
    pane.resize(1000, 800)
    pane.grab().save(str(artifacts_dir / "chat_pane_1000x800.png"))

    # a second question carries the first exchange as history and is stored after it
    pane.ask("And segment 1?")
    qtbot.waitUntil(lambda: events[-1][0] == "done" and events[-1][1] != answer, timeout=60000)
    msgs = session.project.chat_messages(session.explanation_id(), sid)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]


def test_stop_cancels_and_keeps_nothing(qtbot, pane, session, runner):
    sid = _members(session)[2]
    session.select_sample(sid)
    pane.generation_settings = GenerationSettings(max_new_tokens=4000, ignore_eos=True)
    got = []
    pane.answerPiece.connect(got.append)
    pane.ask("Describe every segment in detail.")
    qtbot.waitUntil(lambda: len(got) >= 2, timeout=120000)
    with qtbot.waitSignal(runner.cancelled, timeout=10000):
        pane.stop_button.click()
    assert not runner.is_busy("lvlm")
    assert session.project.chat_messages(session.explanation_id(), sid) == []
    assert pane.input.toPlainText() == "Describe every segment in detail."  # back in the box
    assert "Stopped" in pane.status.text() and "not kept" in pane.status.text()
    assert pane.ask_button.isEnabled() and not pane.stop_button.isEnabled()


def test_class_summary_is_shown_and_stored(qtbot, pane, session, artifacts_dir):
    sid = _members(session)[0]
    session.project.set_expert_verdict(session.explanation_id(), sid, 1, "spurious")
    session.select_sample(sid)
    cls = session.project.classes[
        session.project.db.execute("SELECT label FROM samples WHERE id=?", (sid,)).fetchone()[0]
    ]
    pane.generation_settings = GenerationSettings(max_new_tokens=16, ignore_eos=True)
    with qtbot.waitSignal(pane.summaryFinished, timeout=120000) as blocker:
        pane.summary_button.click()
    text = blocker.args[0]
    stored = session.project.chat_messages(session.explanation_id(), None)
    assert [(m["role"], m["text"]) for m in stored] == [("summary", f"[{cls}] {text}")]
    shown = pane.context.toPlainText()
    assert f"What the model relies on for '{cls}'" in shown and text.strip().splitlines()[0] in shown
    pane.grab().save(str(artifacts_dir / "chat_pane_summary_450x700.png"))


def test_without_an_lvlm_the_pane_says_so_and_opens_the_dialog(qtbot, pane, session, artifacts_dir):
    session.select_sample(_members(session)[0])
    session.set_lvlm_config(None)
    assert pane.lvlm_banner.isVisible() and "No vision-language model" in pane.lvlm_label.text()
    qtbot.keyClicks(pane.input, "Anything?")
    assert not pane.ask_button.isEnabled() and not pane.summary_button.isEnabled()
    assert pane.context.toPlainText()  # the critique is still shown
    pane.grab().save(str(artifacts_dir / "chat_pane_no_lvlm_450x700.png"))
    pane.configure_button.click()
    qtbot.waitUntil(lambda: pane.lvlm_dialog is not None and pane.lvlm_dialog.isVisible(), timeout=3000)
    pane.lvlm_dialog.reject()


def test_images_outside_the_alignment_set_and_no_project(qtbot, pane, session):
    members = set(_members(session))
    outside = next(r["id"] for r in session.project.samples("train") if r["id"] not in members)
    session.select_sample(outside)
    # discussed too (issue 13; test_defects_chat.py asks about one), without a critique to show
    assert pane.stack.currentIndex() == 1
    assert f"Image #{outside}" in pane.header.text() and "not in the alignment set" in pane.header.text()
    assert "No critic looked at this image" in pane.context.toPlainText()
    session.select_sample(-1)
    assert pane.stack.currentIndex() == 0 and "Choose an image" in pane.message.text()
    session.close_project()
    assert "Open a project" in pane.message.text()
