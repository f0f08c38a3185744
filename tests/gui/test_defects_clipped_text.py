"""Defect of issue 13: texts cut at the window's default size (1366x768): "Confidenc" in the browser's
"Sort by" box and "malignant / pa…" in the Results pane. Each text must fit its widget at that size."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QStyle, QStyleOptionComboBox

SHOTS = "/tmp/shots"


def _combo_text_room(combo) -> int:
    """The width the combo box gives its text (its edit field, without the arrow and the frame)."""
    opt = QStyleOptionComboBox()
    combo.initStyleOption(opt)
    rect = combo.style().subControlRect(
        QStyle.ComplexControl.CC_ComboBox, opt, QStyle.SubControl.SC_ComboBoxEditField, combo
    )
    return rect.width()


def _cell_fits(table, row: int, col: int) -> tuple[bool, str]:
    """Whether a cell shows its whole text: every line as wide as the cell allows, all lines as tall."""
    item = table.item(row, col)
    text = item.text()
    fm = QFontMetrics(item.font())
    lines = text.split("\n")
    need = max(fm.horizontalAdvance(line) for line in lines)
    margin = 2 * (table.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, table) + 1)
    rect = table.visualRect(table.model().index(row, col))
    room = rect.width() - margin
    tall = len(lines) * fm.lineSpacing() <= rect.height()
    return (
        need <= room and tall,
        f"{text!r} needs {need} px in {room}, {len(lines)} lines in {rect.height()} px",
    )


def _at_default_size(window, qtbot) -> None:
    window.resize(1366, 768)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (1366, 768), timeout=3000)
    qtbot.wait(100)


@pytest.fixture
def window_in_font(qtbot, qapp):
    """The main window at 1366x768, made after the application's font was set (a user's font)."""
    from PySide6.QtCore import QSettings

    from lvlmva_desktop.gui.main_window import MainWindow

    made, default = [], qapp.font()

    def make(font: QFont | None):
        if font is not None:
            qapp.setFont(font)
        QSettings().clear()
        win = MainWindow()
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        made.append(win)
        return win

    yield make
    for win in made:
        win.shutdown()
    qapp.setFont(default)


@pytest.mark.parametrize("font", [None, ("DejaVu Sans Mono", 12)], ids=["default-font", "wide-font"])
def test_sort_by_shows_whole_words_at_the_default_size(window_in_font, demo_project, qtbot, font):
    window = window_in_font(QFont(*font) if font else None)
    window.open_project(demo_project)
    _at_default_size(window, qtbot)
    combo = window.browser.sort_combo
    name = font[0].replace(" ", "-") if font else "default"
    window.grab().save(f"{SHOTS}/window-1366-sort-{name}.png")
    fm = combo.fontMetrics()
    texts = [combo.itemText(i) for i in range(combo.count())]
    longest = max(texts, key=fm.horizontalAdvance)
    assert "Confidence" in texts
    room = _combo_text_room(combo)
    assert fm.horizontalAdvance(longest) <= room, f"{longest!r}: {fm.horizontalAdvance(longest)} px in {room}"


def _evaluated_pair(root) -> None:
    """The original model and a second version of it ("retrained"), both measured on the test images."""
    from lvlmva_desktop.core.method.pipeline import evaluate_models
    from lvlmva_desktop.core.method.settings import EvalSettings
    from lvlmva_desktop.core.store.project import Project

    with Project.open(root) as p:
        original = p.latest_model("erm")
        module, spec = p.load_model(original)
        torch.manual_seed(3)
        with torch.no_grad():
            for w in module.parameters():
                w.add_(0.02 * torch.randn_like(w))
        new = p.save_model(module, spec, "small_cnn (RRR)", "rrr", original, None)
        evaluate_models(p, [original, new], EvalSettings(n_attribution_images=8), torch.device("cpu"))


def test_results_show_whole_group_names_at_the_default_size(window, explained_project, qtbot):
    _evaluated_pair(explained_project)
    window.open_project(explained_project)
    _at_default_size(window, qtbot)
    window.docks["results"].raise_()
    qtbot.wait(200)
    pane = window.results
    assert pane.stack.currentIndex() == 1 and pane.data["after"] is not None
    window.grab().save(f"{SHOTS}/window-1366-results.png")
    pane.grab().save(f"{SHOTS}/results-1366.png")
    groups = pane.groups
    assert groups.rowCount() >= 4
    names = [groups.item(r, 0).text() for r in range(groups.rowCount())]
    assert any(" / " in n for n in names)
    for r in range(groups.rowCount()):
        ok, why = _cell_fits(groups, r, 0)
        assert ok, why
        assert groups.item(r, 0).text() in groups.item(r, 0).toolTip()  # the full name on hover
    worst_row = pane.summary.rowCount() - 1
    for col in (0, 1):
        ok, why = _cell_fits(pane.summary, worst_row, col)
        assert ok, why
        name = pane.data["before" if col == 0 else "after"]["worst_group"]
        assert name in pane.summary.item(worst_row, col).toolTip()
    # every number column shows its numbers whole too
    for r in range(groups.rowCount()):
        for c in range(1, 5):
            if not groups.isColumnHidden(c):
                ok, why = _cell_fits(groups, r, c)
                assert ok, why
