"""The expert's verdicts per segment (issue part 6): a table beside the heatmap and undoable edits.

The expert's word overrides the critic's but is stored apart from it (``source='expert'``), so the table
shows both side by side; taking the expert's word back returns to the critic's verdict. Every change is a
QUndoCommand that restores the previous expert verdict, or its absence.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QPoint, QSize, Qt, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QKeySequence, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:  # core.method.pipeline imports torch; the window appears before torch loads
    from lvlmva_desktop.core.views.viewer import SegmentVerdictRow

log = logging.getLogger(__name__)

# One colour per verdict, used for the numbers on the image and the "effective" column alike.
VERDICT_COLOURS: dict[str | None, tuple[int, int, int]] = {
    "spurious": (214, 39, 140),
    "relevant": (0, 140, 80),
    "undecided": (110, 110, 110),
    None: (45, 45, 45),
}
VERDICT_MARKS: dict[str | None, str] = {"spurious": "✗", "relevant": "✓", "undecided": "?", None: ""}
COLUMNS = ("Segment", "Evidence", "Critic", "Expert", "Effective", "Decided by")
EXPERT_CHOICES: tuple[tuple[str, str | None], ...] = (
    ("— critic's", None),
    ("spurious", "spurious"),
    ("relevant", "relevant"),
    ("undecided", "undecided"),
)


class SetVerdictCommand(QUndoCommand):
    """Set (or with ``new=None`` take back) the expert's verdict on one segment; undo restores ``old``."""

    def __init__(
        self, session, expl_id: int, sample_id: int, segment: int, new: str | None, old: str | None
    ) -> None:
        what = new if new is not None else "the critic's verdict"
        super().__init__(f"Segment {segment + 1} of image #{sample_id}: {what}")
        self.session = session
        self.key = (expl_id, sample_id, segment)
        self.new, self.old = new, old

    def _apply(self, verdict: str | None) -> bool:
        project = self.session.project
        if project is None:
            return False
        expl_id, sample_id, segment = self.key
        try:
            if verdict is None:
                project.clear_expert_verdict(expl_id, sample_id, segment)
            else:
                project.set_expert_verdict(expl_id, sample_id, segment, verdict)
        except Exception as e:  # noqa: BLE001 - told to the user, the stack stays usable
            self.session.report(e, "Setting a verdict")
            return False
        self.session.notify("verdicts")
        return True

    def redo(self) -> None:
        if not self._apply(self.new):
            self.setObsolete(True)  # a change that did not happen is not kept on the stack

    def undo(self) -> None:
        self._apply(self.old)


def _item(text: str, tip: str = "", colour: tuple[int, int, int] | None = None) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if tip:
        it.setToolTip(tip)
    if colour is not None:
        it.setBackground(QBrush(QColor(*colour)))
        it.setForeground(QBrush(QColor(255, 255, 255)))
    return it


def verdict_text(verdict: str | None) -> str:
    return f"{VERDICT_MARKS[verdict]} {verdict}" if verdict else "—"


class VerdictTable(QWidget):
    """The verdict panel: per segment its number, evidence share, the critic's, the expert's and the
    effective verdict and who decided; the verdict actions (S / R / U / C on the selected segment), the menu
    a click on a segment opens, and the undo stack of the edits.

    ``segmentSelected(segment)`` follows the row selection (-1: none); ``segmentHovered(segment)`` the row
    under the mouse (-1 when the mouse leaves the rows), for the viewer to outline that segment.
    """

    segmentSelected = Signal(int)
    segmentHovered = Signal(int)

    def __init__(self, session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.rows: list[SegmentVerdictRow] = []
        self.editable = False
        self.context: tuple[int, int] | None = None  # (explanation, sample) the rows belong to
        self.undo_stack = QUndoStack(self)
        self.act_spurious = self._action("Spurious", "S", "The selected segment is a shortcut", "spurious")
        self.act_relevant = self._action(
            "Relevant", "R", "The selected segment is relevant evidence", "relevant"
        )
        self.act_undecided = self._action(
            "Undecided", "U", "Leave the selected segment undecided", "undecided"
        )
        self.act_take_back = self._action(
            "Critic's", "C", "Take your verdict back: the critic's applies", None
        )
        self.verdict_actions = [self.act_spurious, self.act_relevant, self.act_undecided, self.act_take_back]
        self.menu = QMenu(self)
        self._menu_title = self.menu.addSection("")
        self.menu.addActions(self.verdict_actions[:3])
        self.menu.addSeparator()
        self.menu.addAction(self.act_take_back)
        self.caption = QLabel()
        self.caption.setWordWrap(True)  # long captions wrap instead of being cut at the verdict buttons
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setDefaultSectionSize(24)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self._hovered = -1
        self.table.setMouseTracking(True)  # itemEntered as the mouse moves over the rows
        self.table.itemEntered.connect(lambda item: self._set_hovered(item.row()))
        self.table.viewport().installEventFilter(self)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.caption, 1)
        for a in self.verdict_actions:
            b = QToolButton()
            b.setDefaultAction(a)
            top.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 2, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        self.table.setMinimumHeight(self.table.horizontalHeader().sizeHint().height() + 2 * 24 + 4)
        self._update_actions()

    def _action(self, text: str, key: str, tip: str, verdict: str | None) -> QAction:
        """A verdict action; the pane adds them to itself so the keys work anywhere inside it."""
        a = QAction(text, self)
        a.setShortcut(QKeySequence(key))
        a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        a.setToolTip(f"{tip} ({key})")
        a.triggered.connect(lambda: self.set_verdict(self.selected_segment(), verdict))
        return a

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        """Room for the usual four to six segments when the pane has it."""
        return QSize(480, self.table.horizontalHeader().sizeHint().height() + 6 * 24 + 36)

    # -- content --------------------------------------------------------------------------------------
    def show_rows(
        self,
        rows: list[SegmentVerdictRow],
        context: tuple[int, int] | None,
        caption: str,
        tip: str = "",
    ) -> None:
        """Rows of one image; ``context`` (explanation, sample) makes them editable, None shows the
        segments of an image without a stored explanation (no verdicts)."""
        selected = self.selected_segment()
        self.rows, self.context, self.editable = rows, context, context is not None
        editable = self.editable
        self.caption.setText(caption)
        self.caption.setToolTip(tip)
        self.table.blockSignals(True)
        self.table.setRowCount(0)  # drops the previous rows' combo boxes too
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            self.table.setItem(i, 0, _item(str(r.segment + 1)))
            self.table.setItem(
                i, 1, _item(f"{r.evidence:.0%}", "share of the image's evidence in this segment")
            )
            self.table.setItem(i, 2, _item(verdict_text(r.critic), r.critic_name or "no critique yet"))
            if editable:
                combo = self._expert_combo(r)
                combo.setEnabled(self.writable())
                self.table.setCellWidget(i, 3, combo)
            else:
                self.table.setItem(i, 3, _item("—", "verdicts are set on images of the alignment set"))
            self.table.setItem(
                i,
                4,
                _item(verdict_text(r.effective), "", VERDICT_COLOURS[r.effective] if r.effective else None),
            )
            who = {"expert": f"expert · {r.expert_author}", "critic": "critic"}.get(r.source or "", "—")
            tip = {"expert": "your verdict overrides the critic's", "critic": r.critic_name or ""}
            self.table.setItem(i, 5, _item(who, tip.get(r.source or "", "no verdict yet")))
        for c in (2, 3, 4, 5):  # without verdicts, only the segments and their evidence
            self.table.setColumnHidden(c, not editable)
        self.table.blockSignals(False)
        if 0 <= selected < len(rows):
            self.select_segment(selected)
        else:
            self.segmentSelected.emit(-1)
        self._update_actions()

    def _expert_combo(self, r: SegmentVerdictRow) -> QComboBox:
        combo = QComboBox()
        for text, value in EXPERT_CHOICES:
            combo.addItem(text, value)
        combo.setCurrentIndex([v for _, v in EXPERT_CHOICES].index(r.expert))
        combo.setToolTip("Your verdict overrides the critic's; '— critic's' takes yours back")
        combo.activated.connect(lambda i, s=r.segment, c=combo: self.set_verdict(s, c.itemData(i)))
        return combo

    # -- selection ------------------------------------------------------------------------------------
    def selected_segment(self) -> int:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return rows[0].row() if rows else -1

    def select_segment(self, segment: int) -> None:
        if 0 <= segment < self.table.rowCount():
            self.table.selectRow(segment)
        else:
            self.table.clearSelection()

    def _on_selection(self) -> None:
        self._update_actions()
        self.segmentSelected.emit(self.selected_segment())

    def _set_hovered(self, segment: int) -> None:
        if segment != self._hovered:
            self._hovered = segment
            self.segmentHovered.emit(segment)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if obj is self.table.viewport() and event.type() == QEvent.Type.Leave:
            self._set_hovered(-1)
        return super().eventFilter(obj, event)

    def row(self, segment: int) -> SegmentVerdictRow | None:
        return self.rows[segment] if 0 <= segment < len(self.rows) else None

    # -- editing --------------------------------------------------------------------------------------
    def set_verdict(self, segment: int, verdict: str | None) -> None:
        """Set the expert's verdict on a segment (None: take it back), as an undoable command."""
        row = self.row(segment)
        if self.context is None or row is None or row.expert == verdict or not self.writable():
            return
        expl_id, sample_id = self.context
        self.undo_stack.push(
            SetVerdictCommand(self.session, expl_id, sample_id, segment, verdict, row.expert)
        )

    def writable(self) -> bool:
        """Verdicts can be given here (an alignment image, and the project not opened read-only)."""
        return self.editable and not getattr(self.session, "read_only", False)

    def popup_menu(self, segment: int, pos: QPoint) -> None:
        """Select a segment and offer its verdicts (where the image has verdicts to give)."""
        self.select_segment(segment)
        row = self.row(segment)
        if self.writable() and row is not None:
            self._menu_title.setText(f"Segment {segment + 1} (critic: {row.critic or 'no verdict'})")
            self.menu.popup(pos)

    def _update_actions(self) -> None:
        row = self.row(self.selected_segment())
        ok = self.writable() and row is not None
        for a in self.verdict_actions[:3]:
            a.setEnabled(ok)
        self.act_take_back.setEnabled(ok and row.expert is not None)
