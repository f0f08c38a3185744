"""The dialogs' shared OK/Cancel row and their "say the problem or accept" OK (gui/dialogs.py)."""

from PySide6.QtWidgets import QDialog, QDialogButtonBox

from lvlmva_desktop.gui.dialogs import CritiqueDialog, NewProjectDialog
from lvlmva_desktop.gui.import_model import ImportClassifierDialog


def _ok(dlg) -> str:
    box = dlg.findChild(QDialogButtonBox)
    return box.button(QDialogButtonBox.StandardButton.Ok).text()


def test_each_dialog_names_its_ok_and_cancel_rejects(qtbot):
    new = NewProjectDialog()
    crit = CritiqueDialog(None, has_masks=False)
    imp = ImportClassifierDialog((64, 64), 3)
    for dlg, text in ((new, "Create and import"), (crit, "Critique"), (imp, "Import")):
        qtbot.addWidget(dlg)
        assert _ok(dlg) == text
        box = dlg.findChild(QDialogButtonBox)
        box.button(QDialogButtonBox.StandardButton.Cancel).click()
        assert dlg.result() == QDialog.DialogCode.Rejected
    assert imp.ok is imp.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)


def test_ok_says_the_problem_in_red_or_accepts(qtbot, tmp_path):
    dlg = NewProjectDialog()
    qtbot.addWidget(dlg)
    assert "c0392b" in dlg.problem.styleSheet() and dlg.problem.wordWrap()
    dlg.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert dlg.problem.text() == "Choose a folder for the project."
    assert dlg.result() != QDialog.DialogCode.Accepted
    (tmp_path / "images" / "a").mkdir(parents=True)
    dlg.folder.setText(str(tmp_path / "project"))
    dlg.source.setText(str(tmp_path / "images"))
    dlg.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert dlg.problem.text() == ""
    assert dlg.result() == QDialog.DialogCode.Accepted
