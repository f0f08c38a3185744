"""File > Audit report…: the report is written by a job on the main lane and its paths are told."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog

from lvlmva_desktop.core.store import audit


def test_audit_report_from_the_file_menu(window, qtbot, explained_project, tmp_path, monkeypatch):
    file_menu = window.menuBar().actions()[0].menu()
    assert "Audit &report…" in [a.text() for a in file_menu.actions()]
    assert not window.act_report.isEnabled()  # no project yet
    assert window.open_project(explained_project) and window.act_report.isEnabled()

    out = tmp_path / "reports" / "audit-new"  # a folder that does not exist yet: it is created
    asked = []

    def ask(parent, caption, default, filt):
        asked.append(default)
        return str(out), filt

    monkeypatch.setattr(QFileDialog, "getSaveFileName", ask)
    with qtbot.waitSignal(
        window.runner.finished, timeout=180_000, check_params_cb=lambda job, _: job.kind == "report"
    ) as done:  # the browser's predictions run too, in the background lane
        window.act_report.trigger()
    job, paths = done.args
    assert job.kind == "report" and job.lane == "main"
    assert [p.name for p in paths] == ["report.html", "report.pdf"] and all(p.is_file() for p in paths)
    qtbot.waitUntil(lambda: "Audit report written" in window.messages.messages()[0][1], timeout=5000)
    level, text = window.messages.messages()[0]
    assert level == "info" and str(out / "report.html") in text and str(out / "report.pdf") in text
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "No aligned model yet" in page  # the explained project has not been fine-tuned
    # logged with the files' hashes (the browser's background job may log its decoded images after it)
    entry = [e for e in audit.entries(window.session.project.db) if e["action"] == "report"][-1]
    assert set(entry["hashes"]) == {"report.html", "report.pdf"}
    assert asked[0].startswith(str(explained_project / "reports" / "audit-"))  # a sensible default

    # the paths are not just text: Open (and a double-click) opens the report, as does File > Open…
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    m = window.messages
    assert m.open_button.isEnabled()  # the report's message is selected
    qtbot.mouseClick(m.open_button, Qt.MouseButton.LeftButton)
    assert opened == [str(out / "report.html")]
    rect = m.list.visualItemRect(m.list.item(0))
    qtbot.mouseClick(m.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(m.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert len(opened) == 2 and opened[-1] == str(out / "report.html")
    assert window.act_open_report.isEnabled()
    window.act_open_report.trigger()
    assert len(opened) == 3 and opened[-1] == str(out / "report.html")


def test_cancelling_the_folder_dialog_writes_nothing(window, explained_project, monkeypatch):
    assert window.open_project(explained_project)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))
    assert window.audit_report() is None
    assert not window.runner.is_busy("main")
