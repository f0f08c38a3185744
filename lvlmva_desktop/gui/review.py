"""The expert's review queue (issue 13): which image to look at next, how far the review is, and the
verdicts the consistency check held back.

- **Queue**: the alignment set's images in the order core.views.review.review_queue gives (the critic's least
  certain verdicts first: undecided ones, then verdicts the consistency check doubts, then, for a local
  LVLM, the judge's lowest probability), with the reason in words. N / P go to the next / previous image
  still to review, A confirms the critic's verdicts on the current image's remaining segments (an undoable
  step; the expert's confirmations count as expert verdicts), and the counter says "37 of 200 reviewed".
  An image is reviewed when the expert has decided every segment the critic judged. The last image the
  review visited is remembered per project folder and shown again on reopening.
- **Held back**: the "spurious" verdicts the consistency check left out of the masks when the latest model
  was retrained, one row each: a click shows the image and the segment, and the expert keeps the verdict
  (an expert's "spurious" is always used) or overrules it.

The order is computed in a background job (it compares every segment with its neighbours); until it
arrives, the images are listed in the alignment set's own order.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.gui.jobs import Job
from lvlmva_desktop.gui.verdicts import SetVerdictCommand

log = logging.getLogger(__name__)

JOB_KIND = "review-queue"
QUEUE_COLUMNS = ("Image", "Class", "Why here", "Reviewed")
HELD_COLUMNS = ("Image", "Segment", "Critic", "Your verdict")


def remembered_position(root: Any) -> int | None:
    """The image the review last visited in the project at ``root`` (user settings), if any."""
    value = QSettings().value(f"review/{root}")
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _item(text: str, tip: str = "", data: Any = None) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if tip:
        it.setToolTip(tip)
    if data is not None:
        it.setData(Qt.ItemDataRole.UserRole, data)
    return it


def _table(columns: tuple[str, ...]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(columns)
    t.verticalHeader().hide()
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.verticalHeader().setDefaultSectionSize(22)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t


class ReviewPane(QWidget):
    """The review queue and the held-back verdicts; ``segmentRequested(sample, segment)`` asks the window
    to show a segment of an image (the viewer selects it)."""

    segmentRequested = Signal(int, int)

    def __init__(self, session, runner, undo_stack: QUndoStack | None = None, parent=None) -> None:
        super().__init__(parent)
        self.session, self.runner = session, runner
        self.undo_stack = undo_stack if undo_stack is not None else QUndoStack(self)
        self.expl_id: int | None = None
        self.order: list[int] = []  # sample ids, routed order
        self.reasons: dict[int, str] = {}
        self.reviewed: dict[int, bool] = {}
        self.routed = False  # the order is the routed one (not yet: the set's own order)
        self._generation = 0
        self._build()
        session.changed.connect(self._on_changed)
        session.currentSampleChanged.connect(self._on_sample)
        self.reload()

    # -- layout -----------------------------------------------------------------------------------------
    def _action(self, text: str, key: str, tip: str, slot) -> QAction:
        a = QAction(text, self)
        a.setShortcut(QKeySequence(key))
        a.setToolTip(f"{tip} ({key})")
        a.setStatusTip(tip)
        a.triggered.connect(lambda _checked=False: slot())
        return a

    def _build(self) -> None:
        self.act_next = self._action(
            "Next to review", "N", "Go to the next image still to review, least certain first", self.next
        )
        self.act_prev = self._action(
            "Previous to review", "P", "Go back to the previous image still to review", self.previous
        )
        self.act_confirm = self._action(
            "Confirm the critic's verdicts",
            "A",
            "Take the critic's verdicts on this image's remaining segments as yours, then go to the next",
            self.confirm,
        )
        self.actions_ = [self.act_prev, self.act_next, self.act_confirm]
        for a, short in zip(self.actions_, ("◀ P", "N ▶", "Confirm (A)")):
            a.setIconText(short)  # the buttons are short; the menu says it in full
        self.counter = QLabel()
        self.counter.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(8)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        for a in self.actions_:
            b = QToolButton()
            b.setDefaultAction(a)
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            top.addWidget(b)
        top.addStretch(1)
        self.needs_only = QCheckBox("Needs review only")
        self.needs_only.setToolTip("List only the images whose segments you have not all decided")
        self.needs_only.toggled.connect(lambda _: self._fill_queue())

        self.queue = _table(QUEUE_COLUMNS)
        self.queue.itemActivated.connect(self._on_queue_activated)
        self.queue.cellClicked.connect(lambda r, _c: self._on_queue_activated(self.queue.item(r, 0)))
        self.routing_label = QLabel()
        self.routing_label.setWordWrap(True)
        self.routing_label.setStyleSheet("color: palette(mid);")
        queue_page = QWidget()
        ql = QVBoxLayout(queue_page)
        ql.setContentsMargins(0, 2, 0, 0)
        ql.addWidget(self.needs_only)
        ql.addWidget(self.queue, 1)
        ql.addWidget(self.routing_label)

        self.held = _table(HELD_COLUMNS)
        self.held.cellClicked.connect(lambda r, _c: self._on_held_activated(r))
        self.held.itemSelectionChanged.connect(self._update_held_buttons)
        self.held_label = QLabel()
        self.held_label.setWordWrap(True)
        self.keep_button = QPushButton("Keep: spurious")
        self.keep_button.setToolTip("It is a shortcut after all: your 'spurious' is always used in the masks")
        self.keep_button.clicked.connect(lambda _=False: self._set_held("spurious"))
        self.relevant_button = QPushButton("Overrule: relevant")
        self.relevant_button.setToolTip("The critic was wrong: the segment is real evidence")
        self.relevant_button.clicked.connect(lambda _=False: self._set_held("relevant"))
        held_page = QWidget()
        hl = QVBoxLayout(held_page)
        hl.setContentsMargins(0, 2, 0, 0)
        hl.addWidget(self.held_label)
        hl.addWidget(self.held, 1)
        hb = QHBoxLayout()
        hb.addStretch(1)
        hb.addWidget(self.keep_button)
        hb.addWidget(self.relevant_button)
        hl.addLayout(hb)

        self.tabs = QTabWidget()
        self.tabs.addTab(queue_page, "Queue")
        self.tabs.addTab(held_page, "Held back")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addWidget(self.counter)
        lay.addWidget(self.bar)
        lay.addLayout(top)
        lay.addWidget(self.tabs, 1)
        for a in self.actions_:
            self.addAction(a)

    # -- content ----------------------------------------------------------------------------------------
    def _on_changed(self, topic: str) -> None:
        if topic in ("project", "explanation", "critique", "alignment"):
            self.reload()
        elif topic == "verdicts":
            self._refresh_reviewed()
            self._fill_held()
        elif topic == "models":
            self._fill_held()

    def reload(self) -> None:
        """The current explanation's images in the set's order at once; the routed order as a job."""
        self._generation += 1
        p = self.session.project
        self.expl_id = self.session.explanation_id() if p is not None else None
        self.order, self.reasons, self.reviewed, self.routed = [], {}, {}, False
        if p is not None and self.expl_id is not None:
            try:
                _, t = p.explanation(self.expl_id)
                self.order = [int(s) for s in t["sample_ids"].tolist()]
            except Exception as e:  # noqa: BLE001 - a broken explanation file is told, the pane stays usable
                self.session.report(e, "Reading the explanation for the review queue")
                self.order = []
            self._refresh_reviewed(fill=False)
            if self.reviewed:  # only a judged set has verdicts to review
                self._submit_routing()
        self._fill_queue()
        self._fill_held()

    def _submit_routing(self) -> None:
        expl_id, generation = self.expl_id, self._generation

        def fn(project, state):
            from lvlmva_desktop.core.views.review import review_queue

            state.progress(0.0, None, "ordering the review queue")
            return [(i.sample_id, i.reason, i.reviewed) for i in review_queue(project, expl_id)]

        self.routing_label.setText("Ordering the queue: the critic's least certain verdicts first…")
        self.runner.submit(
            Job(
                JOB_KIND,
                "Ordering the review queue",
                fn,
                lane="background",
                on_done=lambda items: self._on_routed(items, generation),
                on_failed=lambda err: self._on_routing_failed(err, generation),
            )
        )

    def _on_routed(self, items: list[tuple[int, str, bool]], generation: int) -> None:
        if generation != self._generation:
            return  # another explanation or project meanwhile
        self.order = [sid for sid, _, _ in items]
        self.reasons = {sid: reason for sid, reason, _ in items}
        self.routed = True
        self.routing_label.setText(
            "Least certain first: undecided verdicts, then verdicts the consistency check doubts, then the "
            "judge's lowest probability (local LVLM). Reviewed images go last."
        )
        self._refresh_reviewed()

    def _on_routing_failed(self, error, generation: int) -> None:
        if generation == self._generation:
            self.routing_label.setText(f"The queue is in the set's order ({error.title}: {error.message}).")

    def _refresh_reviewed(self, fill: bool = True) -> None:
        from lvlmva_desktop.core.views.browse import verdict_status

        p = self.session.project
        status = verdict_status(p, self.expl_id) if p is not None and self.expl_id is not None else {}
        self.reviewed = {sid: st.reviewed for sid, st in status.items()}
        if fill:
            self._fill_queue()

    def judged(self) -> list[int]:
        """The images of the queue that have verdicts, in queue order."""
        return [s for s in self.order if s in self.reviewed]

    def n_reviewed(self) -> tuple[int, int]:
        judged = self.judged()
        return sum(self.reviewed[s] for s in judged), len(judged)

    def _fill_queue(self) -> None:
        done, total = self.n_reviewed()
        if self.session.project is None:
            self.counter.setText("Open a project to review its verdicts.")
        elif self.expl_id is None:
            self.counter.setText("No explanation yet: run Method > Explain, then Critique.")
        elif total == 0:
            self.counter.setText("No verdicts yet: run Method > Critique, then review them here.")
        else:
            self.counter.setText(f"<b>{done} of {total}</b> images reviewed")
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done)
        self.bar.setVisible(total > 0)
        rows = [s for s in self.judged() if not (self.needs_only.isChecked() and self.reviewed[s])]
        classes = self.session.project.classes if self.session.project is not None else []
        labels = self._labels(rows)
        self.queue.setRowCount(len(rows))
        for i, sid in enumerate(rows):
            self.queue.setItem(i, 0, _item(f"#{sid}", data=sid))
            lab = labels.get(sid)
            self.queue.setItem(i, 1, _item(classes[lab] if lab is not None and lab < len(classes) else ""))
            reason = self.reasons.get(sid, "")
            self.queue.setItem(i, 2, _item(reason, reason))
            self.queue.setItem(i, 3, _item("✓" if self.reviewed[sid] else ""))
        self._mark_current()
        self._update_actions()
        self.tabs.setTabText(0, f"Queue ({total - done} to review)" if total else "Queue")

    def _labels(self, ids: list[int]) -> dict[int, int]:
        p = self.session.project
        if p is None or not ids:
            return {}
        return p.sample_labels(ids)

    def _mark_current(self) -> None:
        cur = self.session.current_sample
        self.queue.blockSignals(True)
        self.queue.clearSelection()
        for i in range(self.queue.rowCount()):
            if self.queue.item(i, 0).data(Qt.ItemDataRole.UserRole) == cur:
                self.queue.selectRow(i)
                self.queue.scrollToItem(self.queue.item(i, 0))
                break
        self.queue.blockSignals(False)

    def _update_actions(self) -> None:
        to_review = [s for s in self.judged() if not self.reviewed[s]]
        self.act_next.setEnabled(bool(to_review))
        self.act_prev.setEnabled(bool(to_review))
        cur = self.session.current_sample
        writable = not getattr(self.session, "read_only", False)
        self.act_confirm.setEnabled(writable and cur in self.reviewed and not self.reviewed[cur])

    # -- navigation ---------------------------------------------------------------------------------------
    def _go(self, sid: int) -> None:
        if self.session.root is not None:
            QSettings().setValue(f"review/{self.session.root}", int(sid))
        self.session.select_sample(int(sid))

    def _step(self, direction: int) -> int | None:
        judged = self.judged()
        if not judged:
            return None
        cur = self.session.current_sample
        start = judged.index(cur) if cur in judged else (-1 if direction > 0 else 0)
        n = len(judged)
        for k in range(1, n + 1):
            sid = judged[(start + direction * k) % n]
            if not self.reviewed[sid]:
                return sid
        return None

    def next(self) -> None:
        sid = self._step(+1)
        if sid is None:
            self.session.tell("Review", "Every image of the alignment set is reviewed.")
            return
        self._go(sid)

    def previous(self) -> None:
        sid = self._step(-1)
        if sid is not None:
            self._go(sid)

    def confirm(self) -> None:
        """The critic's verdicts on the current image's undecided-by-the-expert segments become the
        expert's (one undoable step), then on to the next image to review."""
        p, sid = self.session.project, self.session.current_sample
        if p is None or self.expl_id is None or sid not in self.reviewed or self.session.read_only:
            return
        rows = p.effective_verdicts(self.expl_id).get(sid, {})
        todo = [(seg, v["verdict"]) for seg, v in sorted(rows.items()) if v["source"] != "expert"]
        if todo:
            self.undo_stack.beginMacro(f"Confirm the critic's verdicts on image #{sid}")
            for seg, verdict in todo:
                self.undo_stack.push(SetVerdictCommand(self.session, self.expl_id, sid, seg, verdict, None))
            self.undo_stack.endMacro()
        self._refresh_reviewed()
        self.next()

    def _on_sample(self, sid: int) -> None:
        self._mark_current()
        self._update_actions()

    def _on_queue_activated(self, item: QTableWidgetItem | None) -> None:
        if item is not None:
            sid = self.queue.item(item.row(), 0).data(Qt.ItemDataRole.UserRole)
            if sid is not None:
                self._go(int(sid))

    # -- held back ----------------------------------------------------------------------------------------
    def held_back(self) -> list[tuple[int, int]]:
        """(sample, segment) the consistency check held back when the latest model of this explanation was
        retrained (recorded with the model)."""
        p = self.session.project
        if p is None or self.expl_id is None:
            return []
        for row in p.models("rrr", newest_first=True):
            try:
                info = json.loads(row["info"] or "{}")
            except ValueError:
                continue
            if info.get("explanation_id") == self.expl_id:
                return [(int(a), int(b)) for a, b in info.get("mask_stats", {}).get("held_back_segments", [])]
        return []

    def _fill_held(self) -> None:
        held = self.held_back()
        p = self.session.project
        effective = p.effective_verdicts(self.expl_id) if p is not None and self.expl_id is not None else {}
        selected = self.held.currentRow()
        self.held.setRowCount(len(held))
        for i, (sid, seg) in enumerate(held):
            v = effective.get(sid, {}).get(seg, {})
            mine = v.get("verdict") if v.get("source") == "expert" else None
            self.held.setItem(i, 0, _item(f"#{sid}", data=(sid, seg)))
            self.held.setItem(i, 1, _item(str(seg + 1)))
            self.held.setItem(i, 2, _item("spurious"))
            self.held.setItem(i, 3, _item(mine or "—", "" if mine else "not reviewed yet"))
        if 0 <= selected < len(held):
            self.held.selectRow(selected)
        n_open = sum(1 for i in range(len(held)) if self.held.item(i, 3).text() == "—")
        if held:
            self.held_label.setText(
                f"{len(held)} 'spurious' verdict(s) were left out of the masks at the last retraining: they "
                "look like segments judged relevant in other images. Click one to see it; your own verdict "
                f"is always used. {n_open} still to decide."
            )
        else:
            self.held_label.setText(
                "The consistency check held back no verdict at the last retraining (or none has run)."
            )
        self.tabs.setTabText(1, f"Held back ({n_open})" if held else "Held back")
        self._update_held_buttons()

    def _update_held_buttons(self) -> None:
        ok = self.held.currentRow() >= 0 and not getattr(self.session, "read_only", False)
        self.keep_button.setEnabled(ok)
        self.relevant_button.setEnabled(ok)

    def _held_key(self, row: int) -> tuple[int, int] | None:
        it = self.held.item(row, 0) if row >= 0 else None
        return tuple(it.data(Qt.ItemDataRole.UserRole)) if it is not None else None  # type: ignore[return-value]

    def _on_held_activated(self, row: int) -> None:
        key = self._held_key(row)
        if key is not None:
            self._go(key[0])
            self.segmentRequested.emit(*key)

    def _set_held(self, verdict: str) -> None:
        row = self.held.currentRow()
        key = self._held_key(row)
        if key is None or self.expl_id is None or self.session.project is None:
            return
        sid, seg = key
        v = self.session.project.effective_verdicts(self.expl_id).get(sid, {}).get(seg, {})
        old = v.get("verdict") if v.get("source") == "expert" else None
        if old != verdict:
            self.undo_stack.push(SetVerdictCommand(self.session, self.expl_id, sid, seg, verdict, old))
        nxt = row + 1
        if nxt < self.held.rowCount():
            self.held.selectRow(nxt)
            self._on_held_activated(nxt)
