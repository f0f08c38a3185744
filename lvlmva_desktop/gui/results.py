"""Results view: the original model against its retrained (aligned) version on the test images.

Everything shown comes from ``core.method.metrics.comparison`` (the stored evaluations): accuracy, worst-group
accuracy, alignment score, their changes, a per-group table and a grouped bar chart. Comparisons are
chosen per retrained model (with its own original); a model not evaluated yet gets an Evaluate button.
"""

from __future__ import annotations

import logging
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.gui.jobs import JobRunner
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.gui.training_widgets import PercentAxis

log = logging.getLogger(__name__)

BEFORE_COLOR, AFTER_COLOR = QColor(120, 144, 176), QColor(230, 120, 20)
METRICS = [
    (
        "accuracy",
        "Accuracy",
        "dAGA",
        "Share of all test images the model classifies correctly (average accuracy). Higher is better.",
    ),
    (
        "worst_group_accuracy",
        "Worst-group accuracy",
        "dWGA",
        "Accuracy on the group of test images (class and attribute, e.g. benign lesions with a patch) where "
        "the model does worst. A model that relies on a shortcut fails on the group where the shortcut "
        "misleads it, so this shows best whether retraining removed the shortcut. Higher is better.",
    ),
    (
        "alignment",
        "Alignment score",
        "dAlignment",
        "Share of the model's attribution that lies OUTSIDE the artefact (the known spurious region), "
        "averaged over test images whose artefact is marked. 100% means the model ignores the artefact "
        "entirely. Higher is better; it needs artefact masks in the data.",
    ),
    (
        "reliance",
        "Reliance on masked regions",
        "dReliance",
        "How much the model's prediction moves, on average, when the regions judged spurious are exchanged "
        "with other training images' content (training images of the alignment set; measured when the model "
        "was retrained). 0% means the model does not use them at all. Lower is better; it needs no test "
        "labels and no artefact masks.",
    ),
]
#: metrics where a fall is the improvement (their change is green when negative)
LOWER_IS_BETTER = {"reliance"}


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1%}"


def points(v: float | None) -> str:
    """A change of a share, in percentage points (+2.5 pts)."""
    return "—" if v is None else f"{v * 100:+.1f} pts"


class ResultsPane(QWidget):
    """Before / after of the retraining: summary, per-group table and bar chart."""

    def __init__(self, session: Session, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = runner
        self.data: dict | None = None  # the comparison shown (core.method.metrics.comparison)
        self._balanced = False

        self.choice = QComboBox()
        self.choice.setToolTip("Which retrained model to compare with the model it was retrained from.")
        self.choice.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.choice.currentIndexChanged.connect(self._redraw)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setToolTip("Measure the models on the test images (accuracy per group and "
                                         "alignment score).")  # fmt: skip
        self.evaluate_button.clicked.connect(self.evaluate)
        self.note = QLabel()
        self.note.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("Compare"))
        top.addWidget(self.choice, 1)
        top.addWidget(self.evaluate_button)

        self.summary = self._table(["Original", "Retrained", "Change"])
        self.summary.setRowCount(len(METRICS) + 1)
        self.summary.setVerticalHeaderLabels([m[1] for m in METRICS] + ["Worst group"])
        self.summary.verticalHeader().setVisible(True)
        for i, m in enumerate(METRICS):
            self.summary.verticalHeaderItem(i).setToolTip(m[3])
        self.summary.verticalHeaderItem(len(METRICS)).setToolTip(
            "The group of test images (class / attribute) with the lowest accuracy."
        )
        # the models' columns share the room (a worst group's name takes two lines), the change keeps its own
        self.summary.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.groups = self._table(["Class / attribute", "n", "Before", "After", "Change"])
        # whole group names ("malignant / patch" was cut): every column as wide as its text, the last
        # shown one takes the rest, and a narrow dock scrolls sideways instead of cutting a name
        for col in range(0, 5):
            self.groups.horizontalHeader().setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.groups.horizontalHeader().setStretchLastSection(True)
        self.chart = pg.PlotWidget(axisItems={"left": PercentAxis("left")})
        self.chart.setMenuEnabled(False)
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.setTitle("Accuracy per group", size="10pt")
        self.chart.showGrid(y=True, alpha=0.2)
        self.chart.setMinimumSize(260, 150)
        # the legend sits in its own row under the axis, so it never hides a bar
        self.legend = pg.LegendItem(colCount=2)
        self.chart.getPlotItem().layout.addItem(self.legend, 4, 1)
        self.chart.getAxis("left").setTicks([[(v / 100, f"{v}%") for v in range(0, 101, 20)], []])
        self.chart.getAxis("bottom").setHeight(38)
        self.bars: list[pg.BarGraphItem] = []

        tables = QWidget()
        tl = QVBoxLayout(tables)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.summary)
        tl.addWidget(self.groups, 1)
        tl.addStretch(0)
        self.splitter = QSplitter()
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(tables)
        self.splitter.addWidget(self.chart)
        content = QWidget()
        cl = QVBoxLayout(content)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addLayout(top)
        cl.addWidget(self.note)
        cl.addWidget(self.splitter, 1)

        self.empty = QLabel()
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(content)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.stack)
        self.setMinimumSize(420, 220)

        session.changed.connect(self._on_changed)
        for sig in (runner.started, runner.finished, runner.failed, runner.cancelled):
            sig.connect(self._update_evaluate)
        runner.busyChanged.connect(self._update_evaluate)
        self.refresh()

    def _table(self, columns: list[str]) -> QTableWidget:
        t = QTableWidget(0, len(columns))
        t.setHorizontalHeaderLabels(columns)
        t.verticalHeader().setVisible(False)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        t.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        t.setAlternatingRowColors(True)
        t.setWordWrap(False)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        t.verticalHeader().setDefaultSectionSize(t.fontMetrics().height() + 10)
        return t

    # -- what to compare ------------------------------------------------------------------------------------
    def pairs(self) -> list[tuple[int, int | None, str]]:
        """(original, retrained or None, label) per comparison, newest first: every retrained model with
        the model it came from, and the latest original if it was not retrained yet."""
        project = self.session.project
        out = []
        for r in project.models("rrr", newest_first=True):
            before = r["parent_id"] if r["parent_id"] is not None else self.session.original_model_id()
            if before is not None:
                out.append((int(before), int(r["id"]), f"Model {r['id']} · {r['name']}  vs  model {before}"))
        original = self.session.original_model_id()
        if original is not None and not any(b == original for b, _, _ in out):
            name = project.model_row(original)["name"]
            out.append((original, None, f"Model {original} · {name} (not retrained yet)"))
        out.sort(key=lambda p: max(p[0], p[1] or 0), reverse=True)
        return out

    def refresh(self) -> None:
        """Rebuild the list of comparisons and redraw: a new model is shown at once, otherwise the chosen
        comparison stays."""
        current = self.choice.currentData()
        known = {self.choice.itemData(i) for i in range(self.choice.count())}
        self.choice.blockSignals(True)
        self.choice.clear()
        if self.session.project is not None:
            for before, after, label in self.pairs():
                self.choice.addItem(label, (before, after))
        now = [self.choice.itemData(i) for i in range(self.choice.count())]
        # (findData compares Python objects by identity, so the search is done here)
        keep = current in now and not any(d not in known for d in now)
        self.choice.setCurrentIndex(now.index(current) if keep else 0)
        self.choice.blockSignals(False)
        self._redraw()

    def _on_changed(self, topic: str) -> None:
        if topic in ("project", "models", "metrics"):
            self.refresh()

    # -- drawing ----------------------------------------------------------------------------------------
    def _redraw(self, *_: object) -> None:
        if self.session.project is None:
            return self._show_empty("Open a project to see how its models do on the test images.")
        pair = self.choice.currentData()
        if pair is None:
            return self._show_empty(
                "Train a model first (Training: “Train original model”). Its accuracy on each group of test "
                "images appears here, and after retraining with the verdicts, the comparison."
            )
        before, after = pair
        try:
            from lvlmva_desktop.core.method.metrics import (
                comparison,  # imports torch: not before the window is up
            )

            self.data = comparison(self.session.project, before, after)
        except Exception as e:  # noqa: BLE001 - a damaged metrics row is told, not raised into Qt
            self.session.report(e, "Showing the results")
            return self._show_empty("The results could not be read; see the message.")
        self.stack.setCurrentIndex(1)
        has_after = after is not None
        self.summary.setColumnHidden(1, not has_after)
        self.summary.setColumnHidden(2, not has_after)
        self.groups.setColumnHidden(3, not has_after)
        self.groups.setColumnHidden(4, not has_after)
        self.groups.horizontalHeaderItem(2).setText("Before" if has_after else "Accuracy")
        # short headers (the dock may be narrow); which models they are is in the Compare line and tooltips
        self.summary.horizontalHeaderItem(0).setText("Original")
        self.summary.horizontalHeaderItem(0).setToolTip(f"Model {before}, the audited original.")
        if has_after:
            self.summary.horizontalHeaderItem(1).setText("Retrained")
            self.summary.horizontalHeaderItem(1).setToolTip(f"Model {after}, retrained with the verdicts.")
        self._fill_summary()
        self._fill_groups()
        self._draw_chart()
        self._update_evaluate()
        self._balance()

    def _balance(self) -> None:
        """Give the tables the room their rows need (at most 60% of the height when stacked)."""
        if self.splitter.orientation() == Qt.Orientation.Horizontal:
            total = max(self.splitter.width(), 2)
            self.splitter.setSizes([int(total * 0.45), total - int(total * 0.45)])
            return
        need = self.summary.height() + self.groups.maximumHeight() + 8
        total = max(self.splitter.height(), 2)
        top = min(need, int(total * 0.6))
        self.splitter.setSizes([top, total - top])

    def _show_empty(self, text: str) -> None:
        self.data = None
        self.empty.setText(text)
        self.stack.setCurrentIndex(0)

    def _item(self, text: str, tip: str = "", align: Qt.AlignmentFlag | None = None) -> QTableWidgetItem:
        it = QTableWidgetItem(text)
        it.setTextAlignment(align or (Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
        if tip:
            it.setToolTip(tip)
        return it

    def _change_item(self, v: float | None, lower_is_better: bool = False) -> QTableWidgetItem:
        it = self._item(points(v))
        if v is not None and abs(v) >= 0.0005:
            good = (v < 0) if lower_is_better else (v > 0)
            it.setForeground(QBrush(QColor(30, 150, 60) if good else QColor(205, 50, 40)))
        return it

    def _fill_summary(self) -> None:
        d = self.data
        for row, (key, _, delta, tip) in enumerate(METRICS):
            for col, side in ((0, d["before"]), (1, d["after"])):
                if side is None:
                    self.summary.setItem(row, col, self._item(""))
                    continue
                self.summary.setItem(row, col, self._item(pct(side.get(key)), tip))
            self.summary.setItem(row, 2, self._change_item(d["deltas"].get(delta), key in LOWER_IS_BETTER))
        row = len(METRICS)
        for col, side in ((0, d["before"]), (1, d["after"])):
            name = (side or {}).get("worst_group") or ("—" if side else "")
            # class and attribute on two lines: whole in a narrow column; the full name on hover too
            tip = (
                f"The group of test images where model {side['model_id']} does worst: {name}." if side else ""
            )
            self.summary.setItem(row, col, self._item(name.replace(" / ", " /\n"), tip))
        self.summary.setItem(row, 2, self._item(""))
        self.summary.resizeRowToContents(row)
        h = self.summary.horizontalHeader().sizeHint().height() + sum(
            self.summary.rowHeight(r) for r in range(self.summary.rowCount())
        )
        self.summary.setFixedHeight(h + 2 * self.summary.frameWidth())

    def _fill_groups(self) -> None:
        rows = self.data["groups"]
        self.groups.setRowCount(len(rows))
        worst = {self.data["before"]["worst_group"]}
        if self.data["after"] is not None:
            worst.add(self.data["after"]["worst_group"])
        left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        for i, r in enumerate(rows):
            name = group_label(r)
            first = self._item(name, name, left)  # the full name on hover, should the dock be narrow
            if name in worst:
                font = QFont(first.font())
                font.setBold(True)
                first.setFont(font)
                first.setToolTip(f"{name}: the worst group of one of the models.")
            self.groups.setItem(i, 0, first)
            self.groups.setItem(i, 1, self._item(str(r["n"])))
            self.groups.setItem(i, 2, self._item(pct(r["before"])))
            self.groups.setItem(i, 3, self._item(pct(r["after"])))
            self.groups.setItem(i, 4, self._change_item(r["change"]))
        g = self.groups
        need = g.horizontalHeader().sizeHint().height() + 2 * g.frameWidth()
        need += sum(g.rowHeight(r) for r in range(g.rowCount()))
        g.setMaximumHeight(max(need, 60))  # no empty table area; scrolls when the dock is small

    def _draw_chart(self) -> None:
        for item in self.bars:
            self.chart.removeItem(item)
        self.legend.clear()
        self.bars = []
        rows = self.data["groups"]
        has_after = self.data["after"] is not None
        series = [("before", f"original (model {self.data['before']['model_id']})", BEFORE_COLOR)]
        if has_after:
            series.append(("after", f"retrained (model {self.data['after']['model_id']})", AFTER_COLOR))
        width = 0.8 / len(series)
        for k, (key, name, color) in enumerate(series):
            xs = [i - 0.4 + width * (k + 0.5) for i, r in enumerate(rows) if r[key] is not None]
            ys = [r[key] for r in rows if r[key] is not None]
            bar = pg.BarGraphItem(x=xs, height=ys, width=width * 0.92, brush=color, pen=pg.mkPen(None))
            self.chart.addItem(bar)
            self.legend.addItem(bar, name)
            self.bars.append(bar)
            for x, y in zip(xs, ys):
                label = pg.TextItem(f"{y:.0%}", anchor=(0.5, 1.0), color=self.palette().text().color())
                label.setPos(x, y)
                self.chart.addItem(label)
                self.bars.append(label)
        ticks = [(i, group_label(r).replace(" / ", "\n")) for i, r in enumerate(rows)]
        self.chart.getAxis("bottom").setTicks([ticks])
        self.chart.setXRange(-0.6, max(len(rows), 1) - 0.4, padding=0)
        self.chart.setYRange(0, 1.18, padding=0)

    def _update_evaluate(self, *_: object) -> None:
        missing = bool(self.data and self.data["missing"])
        self.evaluate_button.setVisible(missing)
        self.evaluate_button.setEnabled(missing and not self.runner.is_busy("main"))
        if self.data is None:
            return
        if missing:
            names = " and ".join(f"model {m}" for m in self.data["missing"])
            note = f"{names[0].upper()}{names[1:]} has not been measured on the test images yet: Evaluate."
        elif self.data["after"] is None:
            note = "Retrain with the verdicts (Training) to compare the retrained model with this one."
        elif not self.data["same_run"]:
            note = (
                "The two models were evaluated at different times; evaluate again to compare like with like."
            )
        else:
            note = ""
        self.note.setText(note)
        self.note.setVisible(bool(note))

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(self) -> None:
        """Measure the models of the chosen comparison on the test images (a main-lane job)."""
        from lvlmva_desktop.gui.workflow import evaluate_job

        pair = self.choice.currentData()
        if pair is None:
            return
        ids = [m for m in pair if m is not None]
        try:
            job = evaluate_job(self.session, ids)
        except Exception as e:  # noqa: BLE001 - e.g. a device that is not there, told in words
            self.session.report(e, "Evaluating")
            return
        self.runner.submit(job)
        self._update_evaluate()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """Tables beside the chart when there is room, above it in a narrow dock."""
        wide = event.size().width() >= 900 or event.size().width() > 1.4 * event.size().height()
        orientation = Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical
        super().resizeEvent(event)
        if self.splitter.orientation() != orientation or not self._balanced:
            self.splitter.setOrientation(orientation)
            self._balanced = True
            QTimer.singleShot(0, self._balance)  # once the splitter has its new size


def group_label(row: dict) -> str:
    return f"{row['label']} / {row['group']}" if row["group"] else row["label"]
