"""File > Import a trained classifier, as a user does it: the file typed, the architecture guessed from
it, the preprocessing edited, Import clicked; the model version records what was chosen."""

import torch
import torchvision
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication
from safetensors.torch import save_file

from lvlmva_desktop.gui.import_model import ImportClassifierDialog


def _site_file(tmp_path, classes):
    torch.manual_seed(0)
    m = torchvision.models.densenet121(weights=None, num_classes=classes)
    path = tmp_path / "site_densenet.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path


def _type_into(qtbot, edit, text):
    edit.selectAll()
    qtbot.keyClicks(edit, text)


def test_import_by_the_dialog_guesses_the_architecture_and_records_the_preprocessing(
    window, qtbot, demo_project, tmp_path
):
    window.open_project(demo_project)
    p = window.session.project
    path = _site_file(tmp_path, len(p.classes))
    seen = {}

    def answer():
        dlg = QApplication.activeModalWidget()
        assert isinstance(dlg, ImportClassifierDialog)
        # a file that is not there is told, and the dialog stays
        _type_into(qtbot, dlg.path, str(tmp_path / "nope.safetensors"))
        qtbot.mouseClick(dlg.ok, Qt.MouseButton.LeftButton)
        seen["problem"] = dlg.problem.text()
        seen["open"] = dlg.isVisible()
        _type_into(qtbot, dlg.path, str(path))
        qtbot.keyClick(dlg.path, Qt.Key.Key_Return)  # editing finished: the file's tensors are read
        seen["arch"] = dlg.arch.currentText()
        seen["note"] = dlg.guess_note.text()
        seen["size"] = (dlg.height.value(), dlg.width.value())
        _type_into(qtbot, dlg.mean, "0.5")
        _type_into(qtbot, dlg.std, "0.25")
        seen["summary"] = dlg.summary.text()
        qtbot.mouseClick(dlg.ok, Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, answer)
    window.act_import_model.trigger()
    assert seen["problem"].startswith("There is no file") and seen["open"]
    assert seen["arch"] == "densenet121" and "match a densenet121" in seen["note"]
    assert seen["size"] == (224, 224)  # what torchvision's DenseNet weights were trained at
    assert "normalised by mean (0.5) and std (0.25)" in seen["summary"]
    qtbot.waitUntil(lambda: window.session.original_model_id() is not None, timeout=60_000)
    _, spec = window.session.project.load_model(window.session.original_model_id())
    pre = spec.preprocessing()
    assert spec.arch == "densenet121"
    assert pre.input_size == (224, 224) and pre.mean == (0.5,) and pre.std == (0.25,)
    assert pre.grey_to_colour == (p.channels == 1)

    def told():
        texts = [f"{t} {x}" for t, x in window.messages.messages()]
        return any("model version" in t and "Preprocessing: input 224x224" in t for t in texts)

    qtbot.waitUntil(told, timeout=10_000)


def test_cancel_imports_nothing(window, qtbot, demo_project, tmp_path):
    window.open_project(demo_project)

    def cancel():
        dlg = QApplication.activeModalWidget()
        qtbot.keyClick(dlg, Qt.Key.Key_Escape)

    QTimer.singleShot(0, cancel)
    window.act_import_model.trigger()
    assert window.session.project.models() == []
