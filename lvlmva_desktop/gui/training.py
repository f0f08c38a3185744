"""Training pane: the method's settings, training the original model and retraining it with the verdicts.

The settings are the project's PipelineSettings (kept in its folder by the session); each field says in
its tooltip what it does and its default. Training and retraining run as one main-lane job each
(train or align, then evaluation on the test images; built by workflow.train_job and workflow.align_job)
whose per-step and per-epoch partial results feed the live curves; Cancel stops at the next batch and the
core records the run as cancelled.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.core.method.settings import PipelineSettings
from lvlmva_desktop.gui import workflow
from lvlmva_desktop.gui.jobs import Job, JobRunner
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.gui.training_widgets import (
    GROUPS,
    Curves,
    Field,
    LogSpinBox,
    StrengthBox,
    format_time_left,
)

log = logging.getLogger(__name__)


class TrainingPane(QWidget):
    """Settings, start/cancel, progress and live curves of training and retraining with the verdicts."""

    def __init__(self, session: Session, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = runner
        self.job: Job | None = None  # the running job started here
        self._curves_model: int | None = None  # latest model when the curves shown were drawn
        self._kept_live = False  # the curves shown are those of this pane's last run
        self._models_before: int | None = None
        self.widgets: dict[tuple[str, str | None], QWidget] = {}

        self.train_action = QAction("Train original model", self)
        self.train_action.triggered.connect(self.start_training)
        self.align_action = QAction("Retrain with the verdicts (align)", self)
        self.align_action.triggered.connect(self.start_alignment)
        self.cancel_action = QAction("Cancel", self)
        self.cancel_action.triggered.connect(self.cancel)

        self.train_button = QPushButton(self.train_action.text())
        self.train_button.setToolTip("Train the classifier to audit on the training images (ERM), then "
                                     "measure it on the test images.")  # fmt: skip
        self.train_button.clicked.connect(self.start_training)
        self.align_button = QPushButton(self.align_action.text())
        self.align_button.clicked.connect(self.start_alignment)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running training; no model version is saved.")
        self.cancel_button.clicked.connect(self.cancel)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.setFormat("%p%")
        self.status = QLabel()
        self.status.setWordWrap(True)

        self.buttons = buttons = QHBoxLayout()
        for b in (self.train_button, self.align_button, self.cancel_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.progress_row = QWidget()
        prog = QHBoxLayout(self.progress_row)
        prog.setContentsMargins(0, 0, 0, 0)
        prog.addWidget(self.progress, 1)
        prog.addWidget(self.status, 2)
        self.progress_row.hide()  # until something is trained here

        self.curves = Curves()
        self.splitter = QSplitter()
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self._build_settings())
        self.splitter.addWidget(self.curves)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)

        self.main_layout = lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(buttons)
        lay.addWidget(self.hint)
        lay.addWidget(self.progress_row)
        lay.addWidget(self.splitter, 1)
        self.setMinimumSize(420, 220)

        session.changed.connect(self._on_changed)
        for sig in (runner.started, runner.finished, runner.failed, runner.cancelled):
            sig.connect(self._update_enabled)
        runner.busyChanged.connect(self._update_enabled)
        runner.progress.connect(self._on_progress)
        runner.cancelled.connect(self._on_cancelled)
        self._load_settings()
        self._show_last_history()
        self._update_enabled()

    # -- settings ---------------------------------------------------------------------------------------
    def _build_settings(self) -> QWidget:
        defaults = PipelineSettings()
        labels: list[QLabel] = []
        inner = QWidget()
        col = QVBoxLayout(inner)
        col.setContentsMargins(0, 0, 4, 0)
        for title, fields in GROUPS:
            box = QGroupBox(title)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for f in fields:
                w = self._editor(f)
                tip = f"{f.tip}\nDefault: {f.text(f.get(defaults))}.\nCommand line: --set {f.name}=…"
                w.setToolTip(tip)
                label = QLabel(f.label)
                label.setToolTip(tip)
                labels.append(label)
                form.addRow(label, w)
                self.widgets[(f.section, f.attr)] = w
            col.addWidget(box)
        width = max(label.sizeHint().width() for label in labels)
        for label in labels:  # one label column across the groups
            label.setMinimumWidth(width)
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.setToolTip("Put every setting shown here back to its default.")
        self.reset_button.clicked.connect(self.reset_settings)
        col.addWidget(self.reset_button, 0, Qt.AlignmentFlag.AlignLeft)
        col.addStretch(1)
        self.settings_area = QScrollArea()
        self.settings_area.setWidget(inner)
        self.settings_area.setWidgetResizable(True)
        self.settings_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.settings_area.setMinimumWidth(inner.sizeHint().width() + 24)
        return self.settings_area

    def _editor(self, f: Field) -> QWidget:
        if f.kind == "choice":
            w = QComboBox()
            for value, text in f.choices:
                w.addItem(text, value)
            w.currentIndexChanged.connect(self._save_settings)
            return w
        # the range, the step and the unit are the schema's (core/method/settings_schema.py)
        if f.kind == "int":
            w = QSpinBox()
            w.setRange(int(f.lo), int(f.hi))
            w.setSuffix(f.suffix)
        elif f.kind == "log":
            w = LogSpinBox()
            w.setRange(f.lo, f.hi)
        elif f.kind == "strength":
            w = StrengthBox()
            w.setRange(f.lo, f.hi)
        else:
            w = QDoubleSpinBox()
            w.setRange(f.lo, f.hi)
            step = f.step or 0.05
            w.setDecimals(max(2, -math.floor(math.log10(step))))
            w.setSingleStep(step)
            w.setSuffix(f.suffix)
        w.setKeyboardTracking(False)  # save when the value is complete, not at every key
        w.valueChanged.connect(self._save_settings)
        return w

    def _load_settings(self) -> None:
        s = self.session.pipeline_settings()
        for f, w in self._fields():
            w.blockSignals(True)
            value = f.get(s)
            if isinstance(w, QComboBox):
                i = w.findData(value)
                w.setCurrentIndex(i if i >= 0 else 0)
            else:
                w.setValue(value)
            w.blockSignals(False)
        self.settings_area.setEnabled(self.session.project is not None)
        self._update_dependent()

    def _update_dependent(self) -> None:
        """Grey out what the other choices make irrelevant: references count only for DeepLIFT-SHAP, and
        their number only when each image is compared with random training images."""
        shap = self.widgets[("explain", "method")].currentData() == "deeplift_shap"
        background = self.widgets[("explain", "background")]
        background.setEnabled(shap)
        self.widgets[("explain", "n_background")].setEnabled(shap and background.currentData() == "train")

    def _fields(self) -> list[tuple[Field, QWidget]]:
        return [(f, self.widgets[(f.section, f.attr)]) for _, fields in GROUPS for f in fields]

    def settings_from_widgets(self) -> PipelineSettings:
        """The session's settings with the values shown here (settings not shown are kept)."""
        s = PipelineSettings.from_dict(self.session.pipeline_settings().to_dict())
        for f, w in self._fields():
            if isinstance(w, QComboBox):
                f.set(s, w.currentData())
            elif isinstance(w, QSpinBox):
                f.set(s, int(w.value()))
            elif isinstance(w, StrengthBox):
                f.set(s, w.value())
            else:
                f.set(s, float(w.value()))
        return s

    def _save_settings(self, *_: object) -> None:
        self._update_dependent()
        if self.session.project is None:
            return
        try:
            self.session.save_pipeline_settings(self.settings_from_widgets())
        except OSError as e:
            self.session.report(e, "Saving the settings")

    def reset_settings(self) -> None:
        s = PipelineSettings.from_dict(self.session.pipeline_settings().to_dict())
        defaults = PipelineSettings()
        for f, _ in self._fields():
            f.set(s, f.get(defaults))
        self.session.save_pipeline_settings(s)
        self._load_settings()

    # -- what can run -------------------------------------------------------------------------------------
    def _align_inputs(self) -> tuple[int, int] | str:
        """(model, explanation) to retrain with, or why that is not possible yet."""
        expl = self.session.explanation_id()
        if expl is None:
            return "Sample and explain an alignment set and judge its segments before retraining."
        model_id = self.session.project.explanation_model(expl)
        if not self.session.project.has_verdicts(expl):
            return "No verdicts yet: run the critique or judge the segments, then retrain with the verdicts."
        return model_id, expl

    def _readiness(self) -> tuple[bool, bool, str]:
        """(can train, can align, what to do next) for the project as it is now."""
        if self.session.project is None:
            return False, False, "Open or create a project to train a model."
        if not self.session.project.has_samples("train"):
            return False, False, "The project has no training images yet: import images first."
        original = self.session.original_model_id()
        if original is None:
            return (
                True,
                False,
                "Train the original model first; its loss and accuracy curves are drawn while it trains.",
            )
        got = self._align_inputs()
        if isinstance(got, str):
            return True, False, got
        model_id, expl = got
        effective = self.session.project.effective_verdicts(expl)  # an expert's word overrides the critic's
        n_spurious = sum(v["verdict"] == "spurious" for per in effective.values() for v in per.values())
        note = f"Ready to retrain model {model_id} with the verdicts on its explanations"
        note += f" ({n_spurious} segments judged spurious)." if n_spurious else (
            " — but no segment is judged spurious, so retraining will change little.")  # fmt: skip
        return True, True, note

    def _update_enabled(self, *_: object) -> None:
        busy = self.runner.is_busy("main")
        mine = self.job is not None and self.runner.running("main") is self.job
        can_train, can_align, note = self._readiness()
        self.train_action.setEnabled(can_train and not busy)
        self.align_action.setEnabled(can_align and not busy)
        self.cancel_action.setEnabled(mine)
        self.train_button.setEnabled(self.train_action.isEnabled())
        self.align_button.setEnabled(self.align_action.isEnabled())
        self.cancel_button.setEnabled(mine)
        self.align_button.setToolTip(
            "Fine-tune a copy of the audited model so that it stops using the regions judged spurious "
            f"(right for the right reasons), then compare both on the test images.\n{note}"
        )
        if busy and not mine:
            running = self.runner.running("main")
            note = f"Waiting for “{running.title}” to finish." if running else note
        self.hint.setText(note)
        self.hint.setVisible(not mine)

    # -- jobs -------------------------------------------------------------------------------------------
    def start_training(self) -> Job | None:
        """Train the original model with the settings shown, then evaluate it (one job, lane main)."""
        can_train, _, note = self._readiness()
        if not can_train or self.runner.is_busy("main"):
            self._update_enabled()
            return None
        s = self.settings_from_widgets()
        try:
            job = workflow.train_job(self.session, s)
        except Exception as e:  # noqa: BLE001 - a bad device choice is told in words
            self.session.report(e, "Training")
            return None
        return self._submit(job, 0.0)

    def start_alignment(self) -> Job | None:
        """Retrain the audited model with the verdicts (RRR), then evaluate it with the original."""
        _, can_align, note = self._readiness()
        if not can_align or self.runner.is_busy("main"):
            self._update_enabled()
            return None
        model_id, expl_id = self._align_inputs()  # type: ignore[misc]
        s = self.settings_from_widgets()
        try:
            job = workflow.align_job(self.session, model_id, expl_id, s)
        except Exception as e:  # noqa: BLE001 - a bad device choice is told in words
            self.session.report(e, "Retraining")
            return None
        return self._submit(job, s.align.strength_value())

    def _submit(self, job: Job, lambda_: float) -> Job:
        job.on_partial = self.curves.add
        job.on_done = self._on_done
        job.on_failed = self._on_failed
        self._models_before = self.session.latest_model_id()
        self._curves_model = None
        self.curves.clear(lambda_)
        self.progress.setValue(0)
        self.status.setText("Starting…")
        self.progress_row.show()
        self.job = self.runner.submit(job)
        self._update_enabled()
        return self.job

    def cancel(self) -> None:
        if self.job is not None and self.runner.cancel("main", self.job.kind):
            self.status.setText("Cancelling…")

    def _on_progress(self, job: Job, fraction: float, message: str, left: float) -> None:
        if job is not self.job:
            return
        self.progress.setValue(round(fraction * 1000))
        what = message[:1].upper() + message[1:] if message else job.title
        self.status.setText(f"{what} · {format_time_left(left)}")

    def _finish(self) -> None:
        self.job = None
        if self._curves_model is None:  # keep the curves of a cancelled or failed run in view
            self._curves_model = self.session.latest_model_id()
        self._kept_live = True
        self.session.notify("models", "metrics")
        self._update_enabled()

    def _on_done(self, result: dict) -> None:
        mid = result["model_id"]
        self._curves_model = mid
        self.progress.setValue(1000)
        evs = result["evaluations"]
        ev = evs.get(mid)
        text = f"Saved as model {mid}."
        if ev is not None:
            before = next((e for m, e in evs.items() if m != mid), None)  # the original, after retraining
            from lvlmva_desktop.core.method.metrics import (
                deltas,  # imports torch: not before the window is up
            )

            change = deltas(before, ev) if before is not None else {}
            text += f" Test accuracy {ev.accuracy:.1%}" + _pts(change.get("dAGA"))
            if ev.worst_group_accuracy is not None:
                text += f", worst group {ev.worst_group_accuracy:.1%}" + _pts(change.get("dWGA"))
            text += " (see Results)."
        else:
            text += " The project has no test images to measure it on."
        choice = self._strength_choice(mid)
        if choice is not None:
            text += f" Penalty: {choice.short()}."
            self.session.tell("Retraining: the penalty strength", choice.summary())
        held = self._held_back(mid)
        if held:
            text += f" {len(held)} 'spurious' verdict(s) were left out of the masks (see Review > Held back)."
            self.session.tell(
                f"Consistency check: {len(held)} 'spurious' verdict(s) not used",
                "They look like segments judged relevant in other images, so they were left out of the "
                "masks. Click through them in the Review pane's Held back list: keep each as spurious or "
                "overrule it (a verdict you set yourself is always used; setting align.consistency_check).",
            )
        self.status.setText(text)
        kind = self.job.kind if self.job is not None else "train"
        title = "Retrain: the aligned model is saved" if kind == "align" else "Train: the model is saved"
        self.session.tell(title, text)
        self._finish()

    def _strength_choice(self, model_id: int):
        """What strength retraining used and why, as recorded with ``model_id`` (None for older models)."""
        import json

        from lvlmva_desktop.core.method.strength import StrengthChoice

        try:
            info = json.loads(self.session.project.model_row(model_id)["info"] or "{}")
            return StrengthChoice(**info["strength"]) if "strength" in info else None
        except Exception:  # noqa: BLE001 - only a notice; the model itself is saved
            return None

    def _held_back(self, model_id: int) -> list[tuple[int, int]]:
        """(sample id, segment) of the verdicts the consistency check left out when ``model_id`` was made."""
        import json

        try:
            info = json.loads(self.session.project.model_row(model_id)["info"] or "{}")
        except Exception:  # noqa: BLE001 - only a notice; the model itself is saved
            return []
        return [(int(a), int(b)) for a, b in info.get("mask_stats", {}).get("held_back_segments", [])]

    def _on_failed(self, error: Any) -> None:
        self.status.setText(f"{error.title}: {error.message}")
        self._finish()

    def _on_cancelled(self, job: Job) -> None:
        if job is not self.job:
            return
        saved = self.session.latest_model_id() != self._models_before
        self.status.setText(
            "Cancelled during the evaluation; the model was saved (evaluate it in Results)."
            if saved
            else "Cancelled; no model version was saved."
        )
        self._finish()

    # -- redraw -----------------------------------------------------------------------------------------
    def _on_changed(self, topic: str) -> None:
        if topic in ("project", "settings"):
            self._load_settings()
        if topic == "project":  # another project: nothing shown belongs to it
            self._curves_model, self._kept_live = None, False
            self.progress_row.hide()
        if topic in ("project", "models"):
            self._show_last_history()
        if topic in ("project", "models", "samples", "explanation", "critique", "verdicts"):
            self._update_enabled()

    def _show_last_history(self) -> None:
        """Show the curves stored with the latest model unless live curves (or its own) are shown."""
        if self.job is not None:
            return
        latest = self.session.latest_model_id()
        if latest == self._curves_model and (latest is not None or self._kept_live):
            return
        self._kept_live = False
        self._curves_model = latest
        if latest is None:
            self.curves.clear()
            return
        import json

        info = json.loads(self.session.project.model_row(latest)["info"] or "{}")
        self.curves.show_history(info.get("history", []), recorded_strength(info))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """Settings beside the curves when there is room, above them in a narrow dock."""
        wide = event.size().width() >= 900 or event.size().width() > 1.4 * event.size().height()
        orientation = Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical
        if self.splitter.orientation() != orientation:
            self.splitter.setOrientation(orientation)
            # wide: the progress bar beside the buttons, saving a row in a low bottom dock
            if wide:
                self.buttons.addWidget(self.progress_row, 1)
            else:
                self.main_layout.insertWidget(2, self.progress_row)
                # a narrow dock: the curves get a fair share of the height, not a sliver under the form
                h = max(event.size().height() - 120, 200)
                self.splitter.setSizes([int(h * 0.55), int(h * 0.45)])
        super().resizeEvent(event)


def recorded_strength(info: dict) -> float:
    """The penalty strength an aligned model was trained with (0 for an original model): the strength the
    automatic choice ended with, or the number set by hand (older models)."""
    if "strength" in info:
        return float(info["strength"].get("strength") or 0.0)
    if "align" not in info:
        return 0.0
    value = info["align"].get("lambda", 0.0)
    try:
        return float(value)
    except (TypeError, ValueError):
        return 1.0


def _pts(change: float | None) -> str:
    return "" if change is None else f" ({change * 100:+.1f} pts)"
