"""A setting changed in the window is what `lvlmva align` uses next (issue 16): the expert changes the
retraining's epochs and penalty strength in the Training pane of the real window, by keys and clicks; the
window saves them in the project; `lvlmva align` on the project then records a run with those values and
prints that they came from the window, and a --set on the command line still wins over them."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.store.project import Project


def _last_align_settings(root) -> dict:
    with Project.open(root, read_only=True) as p:
        row = p.db.execute("SELECT settings FROM runs WHERE kind='align' ORDER BY id DESC").fetchone()
    return json.loads(row[0])["align"]


def test_a_setting_changed_in_the_window_is_what_align_uses_next(qtbot, window, explained_project, capsys):
    assert window.open_project(explained_project)
    pane = window.training
    window.docks["training"].raise_()
    epochs = pane.widgets[("align", "epochs")]
    strength = pane.widgets[("align", "lambda_")]
    assert epochs.value() == 5 and strength.value() == "auto"  # the defaults, before the expert's choice

    pane.settings_area.ensureWidgetVisible(epochs)
    epochs.setFocus()
    epochs.lineEdit().selectAll()
    qtbot.keyClicks(epochs, "1")
    qtbot.keyClick(epochs, Qt.Key.Key_Return)
    pane.settings_area.ensureWidgetVisible(strength)
    qtbot.mouseClick(strength.auto, Qt.MouseButton.LeftButton)  # untick "Automatic"
    strength.number.setFocus()
    strength.number.selectAll()
    qtbot.keyClicks(strength.number, "0.5")
    qtbot.keyClick(strength.number, Qt.Key.Key_Return)
    assert epochs.value() == 1 and strength.value() == 0.5
    window.session.close_project()  # as the expert closes the window: the CLI needs the project's lock

    capsys.readouterr()
    assert main(["align", str(explained_project), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    used = _last_align_settings(explained_project)
    assert used["epochs"] == 1 and used["lambda"] == 0.5
    assert "setting align.epochs = 1 (from window)" in out
    assert "setting align.lambda = 0.5 (from window)" in out
    assert "strength 0.5 (set by hand" in out  # the aligned model says it trained with that strength

    # the command line wins over the window, and says so; what it does not name stays the window's
    assert (
        main(["align", str(explained_project), "--quiet", "--device", "cpu", "--set", "align.lambda=0.25"])
        == 0
    )
    out = capsys.readouterr().out
    used = _last_align_settings(explained_project)
    assert used["lambda"] == 0.25 and used["epochs"] == 1
    assert "setting align.lambda = 0.25 (from --set)" in out and "align.epochs = 1 (from window)" in out

    # the window's change is in the audit log, as before
    with Project.open(explained_project, read_only=True) as p:
        logged = p.db.execute(
            "SELECT params FROM audit_log WHERE action='settings' ORDER BY id DESC"
        ).fetchone()
    assert json.loads(logged[0])["settings"]["align"]["lambda"] == 0.5


def test_the_training_panes_form_is_the_schemas(qtbot, window, demo_project):
    """Every editor of the pane takes its range, step, unit and help from core/method/settings_schema.py."""
    from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QSpinBox

    from lvlmva_desktop.core.method.settings_schema import setting
    from lvlmva_desktop.gui.training_widgets import GROUPS, LogSpinBox, StrengthBox

    assert window.open_project(demo_project)
    pane = window.training
    shown = 0
    for _, fields in GROUPS:
        for f in fields:
            s = setting(f.name)
            w = pane.widgets[(f.section, f.attr)]
            assert w.toolTip().startswith(s.help) and f"--set {s.name}=" in w.toolTip()
            if isinstance(w, QComboBox):
                assert [w.itemData(i) for i in range(w.count())] == [v for v, _ in s.choices]
            elif isinstance(w, StrengthBox):
                assert (w.number.minimum(), w.number.maximum()) == (s.lo, s.hi)
            else:
                assert isinstance(w, QSpinBox | QDoubleSpinBox)
                assert (w.minimum(), w.maximum()) == (s.lo, s.hi), s.name
                if not isinstance(w, LogSpinBox):
                    assert w.suffix() == (f" {s.unit}" if s.unit else ""), s.name
                if s.step is not None:
                    assert w.singleStep() == s.step
            shown += 1
    assert shown == 17
    assert pane.widgets[("align", "epochs")].suffix() == " epochs"
    assert pane.widgets[("align", "align_ratio")].singleStep() == setting("align.align_ratio").step
