"""The review queue (issue 13): N / P through the images still to review in the routed order, A confirms
the critic's verdicts as one undoable step, the counter and the "needs review" filters, the position kept
across sessions, and the held-back verdicts as a list one can click through and overrule. Driven by keys
and clicks, as a user does."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtWidgets import QApplication

from lvlmva_desktop.gui.main_window import MainWindow


def _press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    qtbot.keyClick(window.heatmap, key, modifier)


def _routed(qtbot, window):
    qtbot.waitUntil(lambda: window.review.routed, timeout=60_000)


def test_queue_keys_counter_filters_and_undo(window, qtbot, explained_project, artifacts_dir):
    assert window.open_project(explained_project)
    pane = window.review
    window.docks["review"].raise_()
    assert pane.counter.text() == "<b>0 of 16</b> images reviewed"
    _routed(qtbot, window)
    first = pane.order[0]
    assert pane.reasons[first]  # each place in the queue says why, in words
    _press(qtbot, window, Qt.Key.Key_N)
    assert window.session.current_sample == first
    selected = pane.queue.selectionModel().selectedRows()
    assert [pane.queue.item(r.row(), 0).text() for r in selected] == [f"#{first}"]

    p = window.session.project
    eid = window.session.explanation_id()
    critic = {seg: v["verdict"] for seg, v in p.effective_verdicts(eid)[first].items()}
    _press(qtbot, window, Qt.Key.Key_A)  # the critic is right on this one: confirm and go on
    mine = p.expert_verdicts(eid)[first]
    assert mine == critic
    assert pane.counter.text() == "<b>1 of 16</b> images reviewed"
    assert window.session.current_sample == pane.order[1]
    assert pane.queue.item(0, 3).text() == "✓"

    # "needs review" in the queue and in the browser hide what is done
    box = pane.needs_only  # a click on its box (the row is wider than its text)
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert box.isChecked()
    assert pane.queue.rowCount() == 15
    assert f"#{first}" not in [pane.queue.item(i, 0).text() for i in range(15)]
    b = window.browser
    b.verdict_combo.setCurrentIndex(b.verdict_combo.findData("needs_review"))
    qtbot.waitUntil(lambda: b.model.rowCount() == 15, timeout=5000)

    # P goes back to the image still to review before this one (wrapping round the queue)
    _press(qtbot, window, Qt.Key.Key_P)
    assert window.session.current_sample == pane.order[-1]
    _press(qtbot, window, Qt.Key.Key_N)
    assert window.session.current_sample == pane.order[1]

    # the confirmation is one step of Edit > Undo
    window.heatmap.setFocus()
    _press(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert first not in p.expert_verdicts(eid)
    assert pane.counter.text() == "<b>0 of 16</b> images reviewed"
    window.grab().save(str(artifacts_dir / "review_queue_1366.png"))

    # typing an N in a text box types it, it does not jump
    window.docks["spec"].raise_()
    edit = next(iter(window.spec_editor._desc_edits.values()))
    edit.setFocus()
    before = window.session.current_sample
    qtbot.keyClicks(edit, "n")
    assert window.session.current_sample == before
    qtbot.keyClick(edit, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # nothing left unsaved
    assert not window.spec_editor.has_unsaved_changes()


def test_the_window_remembers_where_the_review_stopped(qtbot, explained_project):
    QSettings().clear()
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    assert win.open_project(explained_project)
    _routed(qtbot, win)
    _press(qtbot, win, Qt.Key.Key_N)
    _press(qtbot, win, Qt.Key.Key_N)
    stopped = win.session.current_sample
    assert stopped == win.review.order[1]
    win.shutdown()
    win.close()

    again = MainWindow()
    qtbot.addWidget(again)
    again.show()
    assert again.open_project(explained_project)
    assert again.session.current_sample == stopped
    assert any(f"stopped the review at image #{stopped}" in t for _, t in again.messages.messages())
    again.shutdown()


@pytest.fixture
def held_back_project(explained_project):
    """The explained project retrained with a consistency check that compares from 1 verdict on, so that
    it holds some "spurious" verdicts back (the default needs 20; this set has 16 images)."""
    import torch

    from lvlmva_desktop.core.method.pipeline import align_model
    from lvlmva_desktop.core.method.settings import AlignSettings
    from lvlmva_desktop.core.store.project import Project

    with Project.open(explained_project) as p:
        eid = p.latest_id("explanations")
        mid = p.latest_model()
        settings = AlignSettings(
            epochs=1, lambda_=1.0, consistency_min_spurious=1, consistency_min_reliance=0.0,
            consistency_threshold=1.0,
        )  # fmt: skip
        align_model(p, mid, eid, settings, torch.device("cpu"))
    return explained_project


def test_held_back_verdicts_are_a_list_to_click_through_and_overrule(
    window, qtbot, held_back_project, artifacts_dir
):
    assert window.open_project(held_back_project)
    pane = window.review
    held = pane.held_back()
    assert held, "the check held nothing back: the fixture no longer makes the case"
    window.docks["review"].raise_()
    pane.tabs.setCurrentIndex(1)
    assert pane.held.rowCount() == len(held)
    assert pane.tabs.tabText(1) == f"Held back ({len(held)})"
    sid, seg = held[0]
    rect = pane.held.visualItemRect(pane.held.item(0, 1))
    qtbot.mouseClick(pane.held.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.session.current_sample == sid
    qtbot.waitUntil(lambda: window.heatmap.table.selected_segment() == seg, timeout=5000)
    window.grab().save(str(artifacts_dir / "review_held_back_1366.png"))

    qtbot.mouseClick(pane.relevant_button, Qt.MouseButton.LeftButton)  # overrule: real evidence
    eid = window.session.explanation_id()
    assert window.session.project.expert_verdicts(eid)[sid][seg] == "relevant"
    assert pane.held.item(0, 3).text() == "relevant"
    assert pane.tabs.tabText(1) == f"Held back ({len(held) - 1})"
    if len(held) > 1:  # the next one is shown at once, and kept as spurious by its button
        assert window.session.current_sample == held[1][0]
        assert pane.held.currentRow() == 1
        qtbot.mouseClick(pane.keep_button, Qt.MouseButton.LeftButton)
        sid1, seg1 = held[1]
        assert window.session.project.expert_verdicts(eid)[sid1][seg1] == "spurious"
        assert pane.held.item(1, 3).text() == "spurious"
