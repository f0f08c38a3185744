"""Defect of issue 13: the chat worked only on the alignment set's images ("Image #1668 is not in the
alignment set…"), so a misclassified test image could not be discussed. Now any image of the project can be
discussed: outside the alignment set the LVLM gets the model's evidence and segments computed on demand
(``core.views.viewer.explain_samples``, as the viewer computes them) and the model's prediction."""

from __future__ import annotations

import pytest
import torch
from fixtures.tiny_lvlm import make_tiny_lvlm
from PySide6.QtCore import Qt

from lvlmva_desktop.gui.chat_pane import ChatPane
from lvlmva_desktop.gui.jobs import JobRunner
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.lvlm.backend import GenerationSettings
from lvlmva_desktop.lvlm.config import LVLMConfig

SHOTS = "/tmp/shots"


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return make_tiny_lvlm("qwen2_5_vl", tmp_path_factory.mktemp("tiny") / "qwen-tiny")


def _open(qtbot, root, tiny_qwen, made):
    session = Session(device="cpu")
    session.open_project(root)
    session.set_lvlm_config(LVLMConfig(kind="local", folder=str(tiny_qwen), device="cpu"))
    runner = JobRunner(lambda: session.root)
    pane = ChatPane(session, runner)
    qtbot.addWidget(pane)
    pane.resize(450, 700)
    pane.show()
    qtbot.waitExposed(pane)
    pane.generation_settings = GenerationSettings(max_new_tokens=12, ignore_eos=True)
    made.append((session, runner))
    return session, runner, pane


@pytest.fixture
def opened(qtbot, tiny_qwen):
    made = []
    yield lambda root: _open(qtbot, root, tiny_qwen, made)
    for session, runner in made:
        runner.shutdown(20)
        session.release_lvlm()
        session.close_project()


def _ask_by_keys(qtbot, pane, question: str) -> str:
    failed = []
    pane.runner.failed.connect(lambda job, err: failed.append(err.message))
    pane.input.setFocus()
    qtbot.keyClicks(pane.input, question)
    assert pane.ask_button.isEnabled()
    with qtbot.waitSignal(pane.answerFinished, timeout=180000) as got:
        qtbot.mouseClick(pane.ask_button, Qt.MouseButton.LeftButton)
    assert failed == []
    return got.args[0]


def test_a_test_image_outside_the_alignment_set_can_be_discussed(qtbot, opened, explained_project):
    session, runner, pane = opened(explained_project)
    eid = session.explanation_id()
    test_id = session.project.samples("test")[3]["id"]
    session.select_sample(test_id)
    assert pane.stack.currentIndex() == 1, pane.message.text()  # the chat, not a refusal
    assert f"Image #{test_id}" in pane.header.text() and "not in the alignment set" in pane.header.text()
    answer = _ask_by_keys(qtbot, pane, "Why does the model predict this class?")
    assert answer
    assert not pane.status.isVisible() or "could not" not in pane.status.text()
    # stored with the image and no explanation (the evidence was computed for the conversation only)
    msgs = session.project.chat_messages(None, test_id)
    assert [(m["role"], m["text"]) for m in msgs] == [
        ("user", "Why does the model predict this class?"),
        ("assistant", answer),
    ]
    assert session.project.chat_messages(eid, test_id) == []
    shown = pane.transcript.toPlainText()
    assert "Why does the model predict this class?" in shown and answer.splitlines()[0] in shown
    pane.grab().save(f"{SHOTS}/chat-test-image.png")


def test_the_conversation_of_an_outside_image_carries_the_models_evidence_and_prediction(
    explained_project, tiny_qwen
):
    """What the LVLM gets for a test image: the on-demand evidence as the viewer computes it, the segments
    numbered in the pictures, and the prediction in words."""
    import json

    from lvlmva_desktop.core.method.settings import PipelineSettings
    from lvlmva_desktop.core.store.project import Project
    from lvlmva_desktop.core.views.viewer import explain_samples
    from lvlmva_desktop.lvlm.chat import chat_for_image
    from lvlmva_desktop.lvlm.config import open_backend

    backend = open_backend(LVLMConfig(kind="local", folder=str(tiny_qwen), device="cpu"))
    with Project.open(explained_project) as p:
        eid = p.latest_id("explanations")
        row, _ = p.explanation(eid)
        test_id = p.samples("test")[3]["id"]
        try:
            chat = chat_for_image(p, test_id, backend, torch.device("cpu"), expl_id=eid)
        finally:
            backend.close()
        assert chat.explanation_id is None and chat.sample_id == test_id
        s = PipelineSettings.from_record(json.loads(row["settings"]))
        want = explain_samples(
            p, int(row["model_id"]), [test_id], s.explain, torch.device("cpu"), segment=s.segment
        )
        torch.testing.assert_close(chat.request.attribution, want.maps[0], rtol=1e-4, atol=1e-7)
        assert torch.equal(chat.request.segments, want.segments[0].long())
        assert len(chat.images) == 3
        prompt = chat.system_prompt()
        assert "not in the alignment set" in prompt and "The classifier predicts" in prompt


def test_without_an_explanation_the_chat_still_works(qtbot, opened, demo_project):
    from lvlmva_desktop.core.method.pipeline import train_original
    from lvlmva_desktop.core.method.train import TrainSettings
    from lvlmva_desktop.core.store.project import Project

    with Project.open(demo_project) as p:
        train_original(p, "small_cnn", TrainSettings(epochs=1), torch.device("cpu"))
    session, runner, pane = opened(demo_project)
    sid = session.project.samples("test")[0]["id"]
    session.select_sample(sid)
    assert pane.stack.currentIndex() == 1, pane.message.text()
    assert not pane.summary_button.isEnabled()  # nothing critiqued to summarise
    answer = _ask_by_keys(qtbot, pane, "What do you see?")
    assert [m["role"] for m in session.project.chat_messages(None, sid)] == ["user", "assistant"]
    assert answer
