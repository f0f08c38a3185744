"""Defect of issue 13: OK accepted LVLM settings whose Check had just failed, and the chat then failed on
Ask. After a failed Check, OK stays off until the settings change (or a Check of them passes)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from lvlmva_desktop.gui.lvlm_dialog import LVLMDialog

SHOTS = "/tmp/shots"


# the same tiny model, settings-free session and runner as the dialog's other tests
from test_lvlm_dialog import runner, session, tiny_qwen  # noqa: E402, F401


@pytest.fixture
def broken_folder(tmp_path):
    """A folder that looks like a model folder (it has a config.json) but holds no model."""
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "no_such_model"}', encoding="utf-8")
    return folder


def _check(qtbot, d):
    d.last_report = None
    qtbot.mouseClick(d.check_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: d.last_report is not None and d.check_button.isEnabled(), timeout=120000)
    return d.last_report


def test_ok_refuses_settings_whose_check_failed(qtbot, session, runner, broken_folder, tiny_qwen):
    d = LVLMDialog(session, runner)
    qtbot.addWidget(d)
    d.resize(560, 560)
    d.show()
    qtbot.waitExposed(d)
    ok = d.buttons.button(d.buttons.StandardButton.Ok)
    d.folder_edit.setFocus()
    qtbot.keyClicks(d.folder_edit, str(broken_folder))
    assert ok.isEnabled()  # not checked yet: OK is allowed (the folder has a config.json)
    assert not _check(qtbot, d).ok
    d.grab().save(f"{SHOTS}/lvlm-dialog-failed-check.png")
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert d.isVisible() and session.lvlm_config() is None  # nothing stored
    assert not ok.isEnabled()
    assert d.problem.isVisibleTo(d) and "check" in d.problem.text().lower()
    d.accept()  # nor by any other way (Enter in another field, a programmatic accept)
    assert d.isVisible() and session.lvlm_config() is None
    # changing the settings allows OK again; changing them back to the failed ones does not
    qtbot.keyClick(d.folder_edit, Qt.Key.Key_Backspace)
    assert ok.isEnabled()
    qtbot.keyClicks(d.folder_edit, str(broken_folder)[-1])
    assert not ok.isEnabled()
    # other settings that pass their check are stored by OK
    d.folder_edit.clear()
    qtbot.keyClicks(d.folder_edit, str(tiny_qwen))
    d.device_combo.setCurrentText("cpu")
    assert _check(qtbot, d).ok
    assert ok.isEnabled()
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    assert not d.isVisible() and session.lvlm_config().folder == str(tiny_qwen)
