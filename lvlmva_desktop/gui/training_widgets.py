"""The pieces of the training pane: its settings table, a spin box for numbers spanning decades, and
the live loss / accuracy curves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.core.method.settings import PipelineSettings
from lvlmva_desktop.core.method.settings_schema import (  # noqa: F401 - the choices' words, for the panes that show them
    ARCH_NAMES,
    BACKGROUND_NAMES,
    EVIDENCE_NAMES,
    METHOD_NAMES,
    PENALTY_NAMES,
    STRATEGY_NAMES,
    Setting,
    setting,
)


@dataclass(frozen=True)
class Field:
    """One setting the expert may change in the pane: a view of its entry in the settings schema
    (core/method/settings_schema.py), which carries its label, help, bounds, unit and default."""

    setting: Setting

    @property
    def section(self) -> str:  # attribute of PipelineSettings ("arch" for the top-level architecture)
        return self.setting.section

    @property
    def attr(self) -> str | None:  # attribute of that section, None for a top-level value
        return self.setting.attr

    @property
    def name(self) -> str:
        return self.setting.name

    @property
    def label(self) -> str:
        return self.setting.label

    @property
    def tip(self) -> str:
        return self.setting.help

    @property
    def kind(self) -> str:
        """How it is edited: "int", "float", "log" (steps 1-2-5 through decades), "strength" or "choice"."""
        return "choice" if self.setting.kind in ("bool", "arch") else self.setting.kind

    @property
    def lo(self) -> float:
        return self.setting.lo or 0.0

    @property
    def hi(self) -> float:
        return self.setting.hi or 0.0

    @property
    def step(self) -> float | None:
        return self.setting.step

    @property
    def suffix(self) -> str:
        """The unit after the number (" epochs"), none for a unit-less number."""
        return f" {self.setting.unit}" if self.setting.unit else ""

    @property
    def choices(self) -> tuple[tuple[Any, str], ...]:
        return self.setting.choices

    def get(self, s: PipelineSettings) -> Any:
        return self.setting.get(s)

    def set(self, s: PipelineSettings, value: Any) -> None:
        self.setting.set(s, value)

    def text(self, value: Any) -> str:
        if self.kind == "choice":
            return dict(self.choices).get(value, value)
        return value if isinstance(value, str) else f"{value:g}"


#: The pane's groups and the settings each shows, in order; everything else about a setting is the schema's.
LAYOUT: list[tuple[str, list[str]]] = [
    ("Original model (ERM)", ["arch", "train.epochs", "train.lr", "train.batch_size"]),
    ("Alignment set", ["sampling.n", "sampling.strategy"]),
    (
        "Explanations",
        ["explain.method", "explain.background", "explain.n_background", "segment.n_components",
         "segment.evidence"],
    ),
    (
        "Retraining with the verdicts (RRR)",
        ["align.penalty", "align.lambda", "align.epochs", "align.align_ratio", "align.lr",
         "align.consistency_check"],
    ),
]  # fmt: skip

GROUPS: list[tuple[str, list[Field]]] = [
    (title, [Field(setting(name)) for name in names]) for title, names in LAYOUT
]


class LogSpinBox(QDoubleSpinBox):
    """A number spanning decades (learning rates, λ): arrows step through 1, 2, 5 × 10^k; any value may be
    typed, also as 1e-4."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        return f"{value:.6g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt override
        try:
            return float(text.strip())
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        t = text.strip()
        try:
            v = float(t)
        except ValueError:
            ok = t == "" or t[-1] in "eE.-+" or t.lower().endswith(("e-", "e+"))
            return (QValidator.State.Intermediate if ok else QValidator.State.Invalid), text, pos
        ok = self.minimum() <= v <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        v = self.value()
        for _ in range(abs(steps)):
            v = next_125(v, steps > 0, self.minimum())
        self.setValue(v)


class StrengthBox(QWidget):
    """The penalty strength: "Automatic" (a tick) or a number (the spin box, enabled when unticked).

    ``value()`` is "auto" or the number; ``setValue`` takes either; ``valueChanged`` fires on both."""

    valueChanged = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.auto = QCheckBox("Automatic")
        self.number = LogSpinBox()
        self.number.setValue(1.0)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.auto)
        row.addWidget(self.number, 1)
        self.auto.toggled.connect(self._toggled)
        self.number.valueChanged.connect(lambda *_: self.valueChanged.emit(self.value()))

    def _toggled(self, on: bool) -> None:
        self.number.setEnabled(not on)
        self.valueChanged.emit(self.value())

    def value(self) -> float | str:
        return "auto" if self.auto.isChecked() else float(self.number.value())

    def setValue(self, value: float | str) -> None:  # noqa: N802 - the spin boxes' name
        auto = isinstance(value, str) and value.strip().lower() == "auto"
        blocked = self.signalsBlocked()
        self.auto.blockSignals(True)
        self.number.blockSignals(True)
        self.auto.setChecked(auto)
        if not auto:
            self.number.setValue(float(value))
        self.number.setEnabled(not auto)
        self.auto.blockSignals(False)
        self.number.blockSignals(False)
        if not blocked:
            self.valueChanged.emit(self.value())

    def setRange(self, lo: float, hi: float) -> None:  # noqa: N802
        self.number.setRange(lo, hi)

    def setKeyboardTracking(self, on: bool) -> None:  # noqa: N802
        self.number.setKeyboardTracking(on)


def next_125(value: float, up: bool, minimum: float = 0.0) -> float:
    """The next number of the 1-2-5 series above (or below) ``value``; 0 steps up to the smallest shown."""
    if value <= 0:
        return max(minimum, 1e-3) if up else value
    k = math.floor(math.log10(value))
    series = [m * 10.0**e for e in (k - 1, k, k + 1) for m in (1, 2, 5)]
    if up:
        return min(s for s in series if s > value * (1 + 1e-9))
    below = [s for s in series if s < value * (1 - 1e-9)]
    return max(below) if below and max(below) >= minimum else minimum


def format_time_left(seconds: float) -> str:
    if seconds < 0:
        return "estimating the time left…"
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    return f"about {int(seconds // 3600)} h {round(seconds % 3600 / 60)} min left"


class PercentAxis(pg.AxisItem):
    """An axis of shares (0-1) labelled in percent, as the experts read accuracies."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
        return [f"{v * 100:.0f}%" for v in values]


class Curves(QWidget):
    """Live loss and training-accuracy curves (x in epochs), or the history of the last training."""

    pointsAdded = Signal(int)  # number of loss points now shown

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stack = QStackedWidget(self)
        self.hint = QLabel("The loss and accuracy curves appear here while a model trains.")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setEnabled(False)
        plots = QWidget()
        row = QHBoxLayout(plots)
        row.setContentsMargins(0, 0, 0, 0)
        self.loss_plot = pg.PlotWidget()
        self.acc_plot = pg.PlotWidget(axisItems={"left": PercentAxis("left")})
        for plot, title in ((self.loss_plot, "Loss"), (self.acc_plot, "Training accuracy")):
            plot.setTitle(title, size="10pt")
            # plain numbers: pyqtgraph's automatic SI prefix made a retraining's first epoch read
            # "epoch (x0.001)" with ticks 40-120
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)
            plot.setLabel("bottom", "epochs")
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setMinimumSize(200, 140)
            plot.setMenuEnabled(False)
            row.addWidget(plot)
        self.acc_plot.setYRange(0, 1.02)
        # few, fixed tick labels: the plots are short in a docked pane and crowded labels overlap
        self.acc_plot.getAxis("left").setTicks([[(v / 100, f"{v}%") for v in (0, 50, 100)], []])
        for plot in (self.loss_plot, self.acc_plot):
            for side in ("left", "bottom"):
                plot.getAxis(side).setStyle(maxTickLevel=0)
                plot.getAxis(side).setTickDensity(0.4)
        self.acc_plot.getPlotItem().getViewBox().setLimits(yMin=-0.05, yMax=1.1)
        # legends in their own row under the axis, so they never hide a curve
        self.loss_legend, self.acc_legend = pg.LegendItem(colCount=2), pg.LegendItem(colCount=2)
        for plot, legend in ((self.loss_plot, self.loss_legend), (self.acc_plot, self.acc_legend)):
            legend.setLabelTextSize("8pt")
            plot.getPlotItem().layout.addItem(legend, 4, 1)
        blue, orange, grey = (31, 119, 180), (230, 120, 20), (127, 127, 127)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen(blue, width=2), name="loss")
        self.penalty_curve = self.loss_plot.plot(pen=pg.mkPen(orange, width=2), name="λ × penalty")
        self.acc_curve = self.acc_plot.plot(pen=pg.mkPen(grey, width=1), name="recent batches")
        self.epoch_acc_curve = self.acc_plot.plot(
            pen=pg.mkPen(blue, width=2), symbol="o", symbolSize=6, symbolBrush=blue, name="epochs"
        )
        self.loss_legend.addItem(self.loss_curve, "loss")
        self.acc_legend.addItem(self.acc_curve, "batches")
        self.acc_legend.addItem(self.epoch_acc_curve, "epochs")
        self.stack.addWidget(self.hint)
        self.stack.addWidget(plots)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.stack)
        self._lambda = 0.0
        self._data: dict[str, tuple[list[float], list[float]]] = {}
        self.clear()

    def clear(self, lambda_: float = 0.0) -> None:
        """Start empty; λ > 0 (retraining) also shows the penalty term of the loss."""
        self._lambda = lambda_
        self._data = {k: ([], []) for k in ("loss", "penalty", "acc", "epoch_acc")}
        for curve in (self.loss_curve, self.penalty_curve, self.acc_curve, self.epoch_acc_curve):
            curve.setData([], [])
        self._set_penalty_visible(lambda_ > 0)
        self.stack.setCurrentIndex(0)

    def _set_penalty_visible(self, on: bool) -> None:
        self.penalty_curve.setVisible(on)
        legend = self.loss_legend
        legend.removeItem(self.penalty_curve)
        if on:
            legend.addItem(self.penalty_curve, "λ × penalty")

    def _push(self, key: str, x: float, y: float) -> None:
        xs, ys = self._data[key]
        xs.append(x)
        ys.append(y)

    def add(self, record: dict) -> None:
        """One partial result of the training loop: {"kind": "step", ...} or {"kind": "epoch", ...}."""
        if not isinstance(record, dict):
            return
        if record.get("kind") == "step":
            x = record["step"] / max(record.get("steps_per_epoch", 1), 1)
            self._push("loss", x, record["loss"])
            self._push(
                "penalty", x, record.get("weighted_penalty", self._lambda * record.get("penalty", 0.0))
            )
            self._push("acc", x, record["train_accuracy"])
        elif record.get("kind") == "epoch":
            self._push("epoch_acc", float(record["epoch"]), record["train_accuracy"])
        else:
            return
        self._redraw()

    def show_history(self, history: list[dict], lambda_: float = 0.0) -> None:
        """The per-epoch records stored with a model (after a restart there are no step records)."""
        self.clear(lambda_)
        for rec in history:
            e = float(rec["epoch"])
            self._push("loss", e, rec["loss"])
            self._push("penalty", e, rec.get("weighted_penalty", lambda_ * rec.get("penalty", 0.0)))
            self._push("epoch_acc", e, rec["train_accuracy"])
        if history:
            self._redraw()

    def _redraw(self) -> None:
        d = self._data
        self.loss_curve.setData(*d["loss"])
        if self._lambda > 0:
            self.penalty_curve.setData(*d["penalty"])
        self.acc_curve.setData(*d["acc"])
        self.epoch_acc_curve.setData(*d["epoch_acc"])
        self.stack.setCurrentIndex(1)
        self.pointsAdded.emit(len(d["loss"][0]))

    def n_points(self) -> int:
        return len(self._data["loss"][0])
