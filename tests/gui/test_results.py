"""Results view: empty states, evaluation from the view, and the before/after of a retraining started in
the training pane, checked against the core's comparison."""

from __future__ import annotations

import json

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from lvlmva_desktop.core.method.metrics import comparison
from lvlmva_desktop.core.method.pipeline import align_model, evaluate_models, train_original
from lvlmva_desktop.core.method.train import AlignSettings, TrainSettings
from lvlmva_desktop.gui.jobs import JobRunner
from lvlmva_desktop.gui.results import ResultsPane, group_label, pct, points
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.gui.theme import apply_theme
from lvlmva_desktop.gui.training import TrainingPane

CPU = torch.device("cpu")
SIZES = {"dock": (600, 700), "large": (1400, 1000), "bottom-dock": (1366, 240)}


@pytest.fixture
def opened(qtbot):
    made = []

    def make(root=None):
        apply_theme(QApplication.instance(), "light")
        session = Session(device="cpu")
        runner = JobRunner(lambda: session.root)
        if root is not None:
            session.open_project(root)
            s = session.pipeline_settings()
            s.evaluate.n_attribution_images = 16  # keep the evaluations short
            s.align.epochs = 2
            session.save_pipeline_settings(s)
        pane = ResultsPane(session, runner)
        qtbot.addWidget(pane)
        made.append((session, runner))
        return session, runner, pane

    yield make
    for session, runner in made:
        assert runner.shutdown(20)
        session.close_project()


def _cells(table, col):
    return [table.item(r, col).text() for r in range(table.rowCount())]


def test_empty_states_say_what_to_do_next(qtbot, opened, demo_project, artifacts_dir):
    _, _, none = opened()
    assert none.stack.currentIndex() == 0 and "Open a project" in none.empty.text()
    session, _, pane = opened(demo_project)
    assert pane.stack.currentIndex() == 0 and "Train a model first" in pane.empty.text()
    pane.resize(600, 400)
    pane.show()
    pane.grab().save(str(artifacts_dir / "results_empty_dock.png"))
    train_original(session.project, "small_cnn", TrainSettings(epochs=1), CPU)
    session.notify("models")
    assert pane.stack.currentIndex() == 1
    assert pane.evaluate_button.isVisibleTo(pane) and pane.evaluate_button.isEnabled()
    assert "has not been measured" in pane.note.text()
    assert _cells(pane.summary, 0) == ["—"] * 5


def test_evaluate_from_the_view_fills_one_column_and_asks_for_retraining(qtbot, opened, demo_project):
    session, runner, pane = opened(demo_project)
    mid = train_original(session.project, "small_cnn", TrainSettings(epochs=1), CPU)
    session.notify("models")
    with qtbot.waitSignal(runner.finished, timeout=60000):
        qtbot.mouseClick(pane.evaluate_button, Qt.MouseButton.LeftButton)
    cmp = comparison(session.project, mid)
    assert not pane.evaluate_button.isVisibleTo(pane)
    assert "Retrain with the verdicts" in pane.note.text()
    assert pane.summary.isColumnHidden(1) and pane.groups.isColumnHidden(3)
    assert pane.groups.horizontalHeaderItem(2).text() == "Accuracy"
    assert _cells(pane.summary, 0)[0] == pct(cmp["before"]["accuracy"])
    assert _cells(pane.groups, 0) == [group_label(r) for r in cmp["groups"]]
    assert _cells(pane.groups, 2) == [pct(r["before"]) for r in cmp["groups"]]
    assert len([b for b in pane.bars if hasattr(b, "opts") and "height" in b.opts]) == 1


def test_retraining_in_the_training_pane_fills_the_comparison(
    qtbot, opened, explained_project, artifacts_dir
):
    session, runner, pane = opened(explained_project)
    training = TrainingPane(session, runner)
    qtbot.addWidget(training)
    original = session.original_model_id()
    assert "has not been measured" in pane.note.text()  # the explained project was never evaluated
    with qtbot.waitSignal(runner.finished, timeout=120000):
        qtbot.mouseClick(training.align_button, Qt.MouseButton.LeftButton)
    aligned = session.aligned_model_id()
    assert aligned is not None and pane.choice.currentData() == (original, aligned)
    cmp = comparison(session.project, original, aligned)
    assert cmp["missing"] == [] and cmp["same_run"]
    assert pane.data == cmp
    # two columns, with their changes
    assert not pane.summary.isColumnHidden(1) and not pane.groups.isColumnHidden(3)
    assert pane.summary.horizontalHeaderItem(1).text() == "Retrained"
    assert f"Model {aligned}" in pane.summary.horizontalHeaderItem(1).toolTip()
    assert _cells(pane.summary, 0)[0] == pct(cmp["before"]["accuracy"])
    assert _cells(pane.summary, 1)[2] == pct(cmp["after"]["alignment"])
    assert _cells(pane.summary, 2)[:3] == [points(cmp["deltas"][k]) for k in ("dAGA", "dWGA", "dAlignment")]
    # the worst group's class and attribute on two lines, so that a narrow column shows it whole (issue 13)
    assert _cells(pane.summary, 1)[4] == cmp["after"]["worst_group"].replace(" / ", " /\n")
    # the reliance on the masked regions, as measured when the model was retrained (lower is better)
    info = json.loads(session.project.model_row(aligned)["info"])
    assert cmp["before"]["reliance"] == pytest.approx(info["strength"]["reliance_before"]["mean"])
    assert cmp["after"]["reliance"] == pytest.approx(info["strength"]["reliance_after"]["mean"])
    assert [_cells(pane.summary, c)[3] for c in (0, 1, 2)] == [
        pct(cmp["before"]["reliance"]),
        pct(cmp["after"]["reliance"]),
        points(cmp["deltas"]["dReliance"]),
    ]
    assert "exchanged with other training images" in pane.summary.verticalHeaderItem(3).toolTip()
    # per-group rows exactly as the core's comparison
    assert len(cmp["groups"]) == 4  # benign / malignant x patch / no patch
    assert _cells(pane.groups, 0) == [group_label(r) for r in cmp["groups"]]
    assert _cells(pane.groups, 1) == [str(r["n"]) for r in cmp["groups"]]
    assert _cells(pane.groups, 2) == [pct(r["before"]) for r in cmp["groups"]]
    assert _cells(pane.groups, 3) == [pct(r["after"]) for r in cmp["groups"]]
    assert _cells(pane.groups, 4) == [points(r["change"]) for r in cmp["groups"]]
    # the chart: one bar series per model, heights the group accuracies, and a legend for both
    bars = [b for b in pane.bars if hasattr(b, "opts") and "height" in b.opts]
    assert [list(b.opts["height"]) for b in bars] == [
        [r["before"] for r in cmp["groups"]],
        [r["after"] for r in cmp["groups"]],
    ]
    assert len(pane.legend.items) == 2
    assert not pane.note.isVisibleTo(pane)
    pane.summary.verticalHeaderItem(2).toolTip().index("OUTSIDE the artefact")
    for size, (w, h) in SIZES.items():
        pane.resize(w, h)
        pane.show()
        qtbot.wait(30)
        pane.grab().save(str(artifacts_dir / f"results_{size}.png"))


def test_each_retrained_model_can_be_chosen(qtbot, opened, explained_project):
    session, _, pane = opened(explained_project)
    p = session.project
    original = session.original_model_id()
    expl = session.explanation_id()
    first = align_model(p, original, expl, AlignSettings(epochs=1, lambda_=1.0), CPU)
    second = align_model(p, original, expl, AlignSettings(epochs=1, lambda_=20.0), CPU)
    settings = session.pipeline_settings().evaluate
    evaluate_models(p, [original, first], settings, CPU)
    evaluate_models(p, [second], settings, CPU)  # alone: measured at another time than the original
    session.notify("models", "metrics")
    assert [pane.choice.itemData(i) for i in range(pane.choice.count())] == [
        (original, second),
        (original, first),
    ]
    assert pane.choice.isEnabled() and "strength 20)" in pane.choice.currentText()
    assert pane.data["after"]["model_id"] == second
    assert "evaluated at different times" in pane.note.text()
    pane.choice.setCurrentIndex(1)
    assert pane.data == comparison(p, original, first) and not pane.note.isVisibleTo(pane)
    evaluate_models(p, [original, second], settings, CPU)
    session.notify("metrics")
    assert pane.choice.currentData() == (original, first)  # new numbers keep the choice
    # a newer original that was not retrained yet comes first, alone, and is shown at once
    newer = train_original(p, "small_cnn", TrainSettings(epochs=1), CPU)
    session.notify("models")
    assert pane.choice.itemData(0) == (newer, None) and pane.choice.currentData() == (newer, None)
    assert pane.summary.isColumnHidden(1) and "has not been measured" in pane.note.text()
