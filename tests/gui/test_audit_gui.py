"""File > Verify audit log: an intact log is told as information, an altered one as an error naming the
entry; the method's settings saved from the window land in the log."""

from __future__ import annotations

import sqlite3

from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.project import DATABASE
from lvlmva_desktop.gui.main_window import MainWindow


def _file_menu_texts(win: MainWindow) -> list[str]:
    file_menu = win.menuBar().actions()[0].menu()
    return [a.text() for a in file_menu.actions()]


def _content_messages(window) -> list[tuple[str, str]]:
    return [(lv, t) for lv, t in window.messages.messages() if "ontent" in t.split("\n")[0]]


def test_verify_from_the_file_menu_tells_intact_and_altered(window, demo_project, qtbot):
    assert not window.act_verify_audit.isEnabled()  # no project yet
    assert window.open_project(demo_project)
    assert "&Verify audit log" in _file_menu_texts(window) and window.act_verify_audit.isEnabled()

    window.act_verify_audit.trigger()
    n = len(audit.entries(window.session.project.db))
    chain = [(lv, t) for lv, t in window.messages.messages() if "Audit log intact" in t]
    assert chain and chain[0][0] == "info" and f"audit log intact: {n} entries" in chain[0][1]
    # then the tables and files, in a job: told when it is done
    qtbot.waitUntil(lambda: len(_content_messages(window)) == 1, timeout=60000)
    ((level, text),) = _content_messages(window)
    assert level == "info" and "Content intact" in text and "images and labels" in text

    con = sqlite3.connect(str(demo_project / DATABASE))
    con.execute("UPDATE audit_log SET user='someone' WHERE id=2")
    con.execute("UPDATE samples SET label=1-label WHERE id=4")
    con.commit()
    con.close()
    window.act_verify_audit.trigger()
    altered = [(lv, t) for lv, t in window.messages.messages() if "The audit log was altered" in t]
    assert altered and altered[0][0] == "error"
    assert (
        "entry 2 (import) was changed after it was written" in altered[0][1]
        and "Traceback" not in altered[0][1]
    )
    qtbot.waitUntil(lambda: len(_content_messages(window)) == 2, timeout=60000)
    level, text = _content_messages(window)[0]
    assert level == "error" and "differs from its audit log" in text and "image 4: label changed from" in text


def test_saving_the_method_settings_is_logged(window, demo_project, qtbot):
    assert window.open_project(demo_project)
    session = window.session
    settings = session.pipeline_settings()
    n = len(audit.entries(session.project.db))
    for value in (1.0, 12.0, 123.0):  # a burst of edits (typing "123")
        settings.align.lambda_ = value
        session.save_pipeline_settings(settings)
    qtbot.waitUntil(lambda: len(audit.entries(session.project.db)) > n, timeout=5000)
    assert len(audit.entries(session.project.db)) == n + 1  # one entry for the burst
    last = audit.entries(session.project.db)[-1]
    assert last["action"] == "settings" and last["params"]["file"] == "gui-settings.json"
    assert last["params"]["settings"]["align"]["lambda"] == 123.0
    assert last["hashes"]["settings"] == audit.json_hash(settings.to_dict())
    assert audit.verify_project(session.project).ok


def test_a_settings_change_cut_off_before_its_entry_is_logged_on_reopening(window, demo_project, qtbot):
    assert window.open_project(demo_project)
    session = window.session
    settings = session.pipeline_settings()
    settings.align.lambda_ = 42.0
    session.save_pipeline_settings(settings)
    session._settings_to_log = None  # as if the program died before the debounced entry was written
    session._log_timer.stop()
    session.close_project()
    window.open_project(demo_project)
    last = audit.entries(session.project.db)[-1]
    assert last["action"] == "settings" and "logged on reopening" in last["params"]["file"]
    assert last["params"]["settings"]["align"]["lambda"] == 42.0
    n = len(audit.entries(session.project.db))
    session.close_project()
    window.open_project(demo_project)  # logged now: nothing new
    assert len(audit.entries(session.project.db)) == n
