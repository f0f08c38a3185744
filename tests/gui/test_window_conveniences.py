"""What a serious desktop program offers and the window lacked (issue 13): Help pages and the keyboard
shortcuts, recent projects, a folder dropped on the window, and a warning when the default alignment set is
as large as a small project's training set. Driven by keys, menus and drops, as a user does."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication


def _catch_modal(qtbot, handle):
    """Run ``handle(dialog)`` on the next modal dialog (then close it); returns what it saw."""
    seen = {}

    def poll():
        w = QApplication.activeModalWidget()
        if w is None:
            QTimer.singleShot(30, poll)
            return
        seen["dialog"] = w
        seen["result"] = handle(w)
        w.reject()

    QTimer.singleShot(30, poll)
    return seen


def test_f1_opens_the_user_guide_and_help_lists_the_shortcuts(window, qtbot):
    from lvlmva_desktop.gui.help import HelpWindow

    seen = _catch_modal(qtbot, lambda d: d.browser.toPlainText())
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_F1)
    qtbot.waitUntil(lambda: "result" in seen, timeout=5000)
    assert isinstance(seen["dialog"], HelpWindow)
    assert "The desktop window" in seen["result"] and "Method > Train" in seen["result"]

    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    texts = [a.text() for a in help_menu.actions()]
    assert texts[:4] == ["&User guide", "The &method", "The &command line", "&Keyboard shortcuts"]
    seen = _catch_modal(qtbot, lambda d: d.browser.toPlainText())
    window.act_shortcuts.trigger()
    qtbot.waitUntil(lambda: "result" in seen, timeout=5000)
    shortcuts = seen["result"]
    for key, what in (("Ctrl+1", "1 Train"), ("N", "Next to review"), ("A", "Confirm the critic's verdicts")):
        lines = [x.strip() for x in shortcuts.splitlines()]  # a table: the key's cell, then what it does
        assert any(a == key and what in b for a, b in zip(lines, lines[1:])), (key, shortcuts)


def test_recent_projects_newest_first_and_a_moved_one_greyed(window, qtbot, demo_project, explained_project):
    assert window.open_project(demo_project)
    assert window.open_project(explained_project)
    window.recent_menu.aboutToShow.emit()
    entries = [a for a in window.recent_menu.actions() if not a.isSeparator()]
    assert [a.text() for a in entries[:2]] == [str(explained_project.resolve()), str(demo_project.resolve())]
    entries[1].trigger()  # back to the demo, from the menu
    assert window.session.root.resolve() == demo_project.resolve()

    moved = explained_project.parent / "moved-away"
    window.session.close_project()
    explained_project.rename(moved)
    window.recent_menu.aboutToShow.emit()
    gone = next(a for a in window.recent_menu.actions() if a.text() == str(explained_project.resolve()))
    assert not gone.isEnabled() and "moved or deleted" in gone.toolTip()
    clear = next(a for a in window.recent_menu.actions() if a.text() == "Clear the list")
    clear.trigger()
    window.recent_menu.aboutToShow.emit()
    assert [a.text() for a in window.recent_menu.actions()] == ["(no project opened yet)"]


def _drop(window, path: Path) -> bool:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    pos = QPoint(window.width() // 2, window.height() // 2)
    enter = QDragEnterEvent(
        pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(window, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(
        QPointF(pos),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(window, drop)
    return True


def test_a_dropped_project_opens_and_a_dropped_image_folder_starts_a_new_project(
    window, qtbot, demo_project, tmp_path
):
    assert _drop(window, demo_project)
    qtbot.waitUntil(lambda: window.session.root is not None, timeout=5000)
    assert window.session.root.resolve() == demo_project.resolve()

    images = tmp_path / "lesions"
    (images / "benign").mkdir(parents=True)
    seen = _catch_modal(qtbot, lambda d: (d.source.text(), d.kind.currentData()))
    assert _drop(window, images)
    qtbot.waitUntil(lambda: "result" in seen, timeout=5000)
    assert seen["result"] == (str(images), "folder")  # the New project dialog, with the source filled in

    note = tmp_path / "notes.txt"
    note.write_text("not images")
    assert not _drop(window, note)  # refused at the door: neither a folder nor a CSV manifest


def test_an_alignment_set_as_large_as_the_training_set_is_flagged(window, qtbot, tmp_path):
    from lvlmva_desktop.core.data.demo import create_demo_project

    small = create_demo_project(tmp_path / "small", n_train=24, n_test=12, size=32)
    assert window.open_project(small)
    warnings = [t for level, t in window.messages.messages() if level == "warning"]
    assert any("asks for 200 images and the project has 24 training images" in t for t in warnings), warnings
