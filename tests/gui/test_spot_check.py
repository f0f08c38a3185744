"""Method > Check the critic…: the blind spot-check dialog, answered by keys and clicks as an expert does.

The critic's verdict must not show anywhere while the expert answers; at the end the result is shown and
stored (a run, the expert's verdicts, an audit entry) and the window is told.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel, QWidget

from lvlmva_desktop.core.method.spotcheck import SPOT_CHECK, latest_spot_check, score
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.integrity import verify_content
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.gui.spot_check import SpotCheckDialog

SHOTS = Path(os.environ.get("LVLMVA_SHOTS", "/tmp/shots"))


@pytest.fixture
def session(qtbot, explained_project):
    s = Session()
    s.open_project(explained_project)
    yield s
    s.close_project()


def _visible_texts(dialog: QWidget) -> list[str]:
    """Every text the expert can read in the dialog: labels, buttons, tooltips, the title."""
    out = [dialog.windowTitle()]
    for w in dialog.findChildren(QWidget):
        if not w.isVisible():
            continue
        if isinstance(w, QLabel):
            out.append(w.text())
        elif isinstance(w, QAbstractButton):
            out.append(w.text())
        if w.toolTip():
            out.append(w.toolTip())
    return out


def _show(qtbot, dlg: QWidget) -> None:
    """Shown and active, as the window's exec() leaves it: the answer keys reach the active window only."""
    with qtbot.waitExposed(dlg):
        dlg.show()
    with qtbot.waitActive(dlg):
        dlg.activateWindow()


def _shot(widget: QWidget, name: str, size: tuple[int, int]) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    widget.resize(*size)
    QApplication.processEvents()
    assert widget.grab().save(str(SHOTS / f"spotcheck_{name}.png"))


def test_blind_spot_check_by_keys_and_clicks(qtbot, session):
    project = session.project
    eid = session.explanation_id()
    topics: list[str] = []
    session.changed.connect(topics.append)
    told: list[tuple[str, str]] = []
    session.notice.connect(lambda title, text: told.append((title, text)))
    critic_names = {
        r[0] for r in project.db.execute("SELECT DISTINCT author FROM verdicts WHERE source='critic'")
    }

    dlg = SpotCheckDialog(session)
    qtbot.addWidget(dlg)
    dlg.resize(1000, 700)
    _show(qtbot, dlg)
    assert dlg.start_button.isEnabled() and dlg.message.text() == ""
    # the number of segments, typed by the user
    dlg.count.selectAll()
    qtbot.keyClicks(dlg.count, "12")
    assert dlg.count.value() == 12
    qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert dlg.pages.currentIndex() == 1 and len(dlg.items) == 12
    verdicts_shown = {i.critic_verdict for i in dlg.items}

    # while answering, nothing that depends on the critic's verdict is shown: every text that mentions a
    # verdict word is one of the same fixed texts for every item, and the critic is never named
    fixed: set[str] | None = None
    plan = ["spurious", "relevant", "undecided", "relevant", "spurious", "relevant"]
    keys = {"spurious": Qt.Key.Key_S, "relevant": Qt.Key.Key_R, "undecided": Qt.Key.Key_U}
    given = []
    for k in range(len(dlg.items)):
        assert dlg.progress.text() == f"{k + 1} of 12"
        texts = _visible_texts(dlg)
        assert not any(name in t for name in critic_names for t in texts)
        assert not any("critic said" in t.lower() or "critic's verdict" in t.lower() for t in texts)
        mentions = {t for t in texts if "spurious" in t.lower() or "relevant" in t.lower()}
        name, description = dlg.classes[dlg.items[k].sample_id]  # what the image is: shown on purpose
        mentions = {t.replace(description, "DESCRIPTION").replace(name, "CLASS") for t in mentions}
        fixed = mentions if fixed is None else fixed
        assert mentions == fixed
        if k == 0:
            _shot(dlg, "asking_1366", (1366 - 80, 768 - 80))
        answer = plan[k % len(plan)]
        if k % 2 == 0:  # by key
            qtbot.keyClick(dlg, keys[answer])
        else:  # by click
            button = {"spurious": dlg.spurious_button, "relevant": dlg.relevant_button}.get(
                answer, dlg.undecided_button
            )
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        given.append(answer)
        if k == 3:  # Back takes the last answer back (Backspace), then it is given again by a click
            qtbot.keyClick(dlg, Qt.Key.Key_Backspace)
            assert dlg.progress.text() == "4 of 12" and len(dlg.answers) == 3
            given.pop()
            qtbot.mouseClick(dlg.relevant_button, Qt.MouseButton.LeftButton)
            given.append("relevant")
        if dlg.pages.currentIndex() == 2:
            break
    assert len(verdicts_shown) >= 1

    # the result page: what the core scores from these answers, stored and told
    assert dlg.pages.currentIndex() == 2
    assert dlg.answers == given
    expected = score(dlg.items, given)
    assert dlg.result.to_dict() == expected.to_dict()
    assert f"{expected.accuracy:.2f}" in dlg.headline.text()
    lo, hi = expected.interval
    assert f"{lo:.2f} to {hi:.2f}" in dlg.headline.text()
    assert "What it means" in dlg.meaning.text() and "worst-group-accuracy gap" in dlg.meaning.text()
    assert "spurious" in dlg.table.text() and "relevant" in dlg.table.text()
    _shot(dlg, "result_1366", (1366 - 80, 768 - 80))
    stored = latest_spot_check(project, eid)
    assert stored["run_id"] == dlg.run_id and stored["proven"]
    assert stored["result"].to_dict() == expected.to_dict()
    # the decided answers are the expert's verdicts now; "undecided" set none
    experts = project.expert_verdicts(eid)
    for item, a in zip(dlg.items, given):
        if a == "undecided":
            assert item.segment not in experts.get(item.sample_id, {})
        else:
            assert experts[item.sample_id][item.segment] == a
    assert stored["written"] == sum(a != "undecided" for a in given)
    entry = [e for e in audit.entries(project.db) if e["action"] == SPOT_CHECK][-1]
    assert entry["params"]["run_id"] == dlg.run_id and set(entry["hashes"]) == {"sample", "answers"}
    assert audit.verify_project(project).ok and verify_content(project, images=False).ok
    assert "verdicts" in topics and "spot_check" in topics
    assert (
        told and told[-1][0] == f"Critic spot-check (run {dlg.run_id})" and "Verdict accuracy" in told[-1][1]
    )
    dlg.accept()


def test_finish_now_stores_the_answers_given(qtbot, session):
    dlg = SpotCheckDialog(session)
    qtbot.addWidget(dlg)
    _show(qtbot, dlg)
    dlg.count.setValue(10)
    qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
    assert not dlg.finish_button.isEnabled()  # nothing answered yet
    qtbot.keyClick(dlg, Qt.Key.Key_R)
    qtbot.keyClick(dlg, Qt.Key.Key_S)
    qtbot.mouseClick(dlg.finish_button, Qt.MouseButton.LeftButton)
    assert dlg.pages.currentIndex() == 2
    assert dlg.result.n_drawn == 10 and dlg.result.n_answered == 2
    assert "8 of 10 segments were not answered" in dlg.summary.text()
    # the segments answered are no longer the critic's to check: the next spot-check leaves them out
    again = SpotCheckDialog(session)
    qtbot.addWidget(again)
    n_before = dlg.count.maximum()
    assert again.count.maximum() == n_before - 2


def test_no_critique_yet_is_said_plainly(qtbot, demo_project):
    s = Session()
    s.open_project(demo_project)
    try:
        dlg = SpotCheckDialog(s)
        qtbot.addWidget(dlg)
        dlg.show()
        assert not dlg.start_button.isEnabled()
        assert "no critique to check" in dlg.message.text()
        assert dlg.message.isVisible()
        _shot(dlg, "no_critique", (760, 560))
    finally:
        s.close_project()


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("size", [(1366, 768), (2560, 1440)])
def test_screenshots_fit_the_screen(qtbot, session, theme, size):
    from lvlmva_desktop.gui.theme import apply_theme

    app = QApplication.instance()
    apply_theme(app, theme)
    try:
        dlg = SpotCheckDialog(session)
        qtbot.addWidget(dlg)
        _show(qtbot, dlg)
        # the dialog fits a 1366x768 screen, task bar and title bar left free
        assert dlg.minimumSizeHint().width() <= 1366 - 40 and dlg.minimumSizeHint().height() <= 768 - 80
        w, h = (size[0] - 80, size[1] - 80) if size[0] == 1366 else (1400, 1000)
        tag = f"{size[0]}_{theme}"
        _shot(dlg, f"setup_{tag}", (w, h))
        dlg.count.setValue(6)
        qtbot.mouseClick(dlg.start_button, Qt.MouseButton.LeftButton)
        _shot(dlg, f"asking_{tag}", (w, h))
        for _ in range(6):
            qtbot.keyClick(dlg, Qt.Key.Key_R)
        assert dlg.pages.currentIndex() == 2
        _shot(dlg, f"result_{tag}", (w, h))
    finally:
        apply_theme(app, "light")
