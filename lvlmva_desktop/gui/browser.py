"""The dataset browser: a virtualised thumbnail grid of every image, with filters, sorts and badges.

The grid itself (model, view, delegate, thumbnail cache) is in gui/thumbnails.py; this pane adds the
filters, the sort, the count and the legend, follows the session's current image and sets it on a click.
Predictions of the latest model come from a "background" job (cached on disk by the core), and the
prediction-based filters and sorts stay greyed until they are ready.
"""

from __future__ import annotations

import logging

import numpy as np
from PySide6.QtCore import (
    QCoreApplication,
    QItemSelectionModel,
    QModelIndex,
    QSettings,
    QSize,
    Qt,
    QTimer,
)
from PySide6.QtGui import QAction, QFont, QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.core.views.browse import (
    VERDICT_FILTERS,
    BrowseFilter,
    VerdictFlags,
    alignment_membership,
    model_predictions,
    sample_table,
    verdict_status,
)
from lvlmva_desktop.gui.jobs import Job
from lvlmva_desktop.gui.thumbnails import (
    BADGES,
    BrowserModel,
    ThumbnailCache,
    ThumbnailGrid,
    badge_pixmap,
    empty_table,
)

log = logging.getLogger(__name__)


class _FilterBar(QWidget):
    """Filter combos in as many columns as the width allows; each combo's text names its filter."""

    CELL_WIDTH = 150

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(4)
        self._combos: list[QComboBox] = []
        self._cols = 0

    def add(self, combo: QComboBox, tip: str) -> None:
        combo.setToolTip(tip)
        combo.setProperty("filter_tip", tip)
        self._combos.append(combo)
        self._cols = 0
        self._reflow()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._reflow()

    def _reflow(self) -> None:
        n = len(self._combos)
        most = max(1, min(n, self.width() // self.CELL_WIDTH))
        rows = -(-n // most)
        cols = -(-n // rows)  # balanced: 4 + 3 rather than 6 + 1
        if cols == self._cols:
            return
        self._cols = cols
        for combo in self._combos:
            self._grid.removeWidget(combo)
        for i, combo in enumerate(self._combos):
            r, c = divmod(i, cols)
            span = cols - c if i == n - 1 else 1  # the last one fills its row
            self._grid.addWidget(combo, r, c, 1, span)
        for c in range(n):
            self._grid.setColumnStretch(c, 1 if c < cols else 0)


def _combo(items: list[tuple[str, object]]) -> QComboBox:
    c = QComboBox()
    c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    c.setMinimumContentsLength(8)
    _fill(c, items)
    return c


def _fill(c: QComboBox, items: list[tuple[str, object]]) -> None:
    """Replace the items, keeping the chosen value when it is still offered (no signal in between)."""
    keep = c.currentData()
    c.blockSignals(True)
    c.clear()
    for text, value in items:
        c.addItem(text, value)
        c.setItemData(c.count() - 1, text, Qt.ItemDataRole.ToolTipRole)
    i = c.findData(keep)
    c.setCurrentIndex(i if i >= 0 and keep is not None else 0)
    c.blockSignals(False)


PRED_KIND = "browser-predictions"
DEFER_PREDICTIONS_MS = 1000  # at the latest, after the first screen of thumbnails
VERDICT_LABELS = {
    "none": "No critique",
    "spurious": "Verdict: spurious",
    "relevant": "Verdict: all relevant",
    "undecided": "Verdict: undecided",
    "overruled": "Overruled by the expert",
    "needs_review": "Needs review",
}
SIZES = (("Small", 48), ("Medium", 72), ("Large", 112))


class BrowserPane(QWidget):
    """Every image of the project as a thumbnail grid; choosing one selects it for every other pane."""

    def __init__(self, session, runner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = runner
        runner.cancelled.connect(self._on_predictions_cancelled)
        self.cache = ThumbnailCache(72, parent=self)
        self.model = BrowserModel(self)
        self.view = ThumbnailGrid(self.cache)
        self.view.setModel(self.model)
        self._following = False
        self._pred_model: int | None = None  # the model whose predictions are shown or computed
        self._pred_job: Job | None = None
        self._deferred = QTimer(self)  # submits the predictions job if the thumbnails never go idle
        self._deferred.setSingleShot(True)
        self._deferred.setInterval(DEFER_PREDICTIONS_MS)
        self._deferred.timeout.connect(self._submit_deferred)
        self.cache.idle.connect(self._submit_deferred)
        self.setMinimumHeight(320)  # the width: minimumSizeHint

        self._build_ui()

        self.view.selectionModel().currentChanged.connect(self._on_current_changed)
        self.model.modelReset.connect(self._after_reset)
        session.changed.connect(self._on_changed)
        session.currentSampleChanged.connect(self.follow_sample)
        runner.progress.connect(self._on_job_progress)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.cache.shutdown)
        self._update_order_text()
        self.reload()

    def _build_ui(self) -> None:
        """Filters (reflowing), sort and size, count and legend, the grid, the predictions' state."""
        self.class_combo = _combo([("Any class", None)])
        self.split_combo = _combo([("Any split", None)])
        self.group_combo = _combo([("Any group", None)])
        self.pred_combo = _combo([("Any prediction", None)])
        self.correct_combo = _combo(
            [("Right or wrong", None), ("Correct predictions", True), ("Wrong predictions", False)]
        )
        self.member_combo = _combo(
            [
                ("Alignment set: any", None),
                ("In the alignment set", True),
                ("Not in the alignment set", False),
            ]
        )
        self.verdict_combo = _combo(
            [("Any verdict", None)] + [(VERDICT_LABELS[k], k) for k in VERDICT_FILTERS]
        )
        self.filters = _FilterBar()
        for combo, tip in (
            (self.class_combo, "Show the images of one class (their true label)"),
            (self.split_combo, "Show the training or the test images"),
            (self.group_combo, "Show the images of one group (the spurious attribute, when known)"),
            (self.pred_combo, "Show the images the model predicts as one class"),
            (self.correct_combo, "Show the images the model gets right, or wrong"),
            (self.member_combo, "Show the images in (or out of) the current alignment set"),
            (self.verdict_combo, "Show the images by the verdicts on their segments"),
        ):
            self.filters.add(combo, tip)
            combo.currentIndexChanged.connect(self._apply_filter)

        self.sort_combo = _combo([("Id", "id"), ("Entropy", "entropy"), ("Confidence", "confidence")])
        # as wide as its longest choice in any font (7 letter widths cut "Confidence" in a wide one)
        self.sort_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.sort_combo.setMinimumContentsLength(0)  # 0: the minimum size follows the contents too
        self.sort_combo.currentIndexChanged.connect(self._apply_sort)
        self.order_button = QToolButton()
        self.order_button.setCheckable(True)
        self.order_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.order_button.toggled.connect(self._apply_sort)
        self.size_combo = _combo([(name, size) for name, size in SIZES])
        self.size_combo.setMinimumContentsLength(6)
        saved = self.size_combo.findData(int(QSettings().value("browser/thumbnail_size", 72)))
        self.size_combo.setCurrentIndex(saved if saved >= 0 else 1)
        self.cache.set_size(int(self.size_combo.currentData()))
        self.view.apply_size()
        self.size_combo.currentIndexChanged.connect(self._apply_size)
        self.reset_filters_action = QAction("Reset filters", self)
        self.reset_filters_action.setToolTip("Show every image again")
        self.reset_filters_action.triggered.connect(self.reset_filters)
        reset = QToolButton()
        reset.setDefaultAction(self.reset_filters_action)

        sort_row = QHBoxLayout()
        sort_row.setSpacing(6)
        sort_label = QLabel("Sort by")
        sort_label.setBuddy(self.sort_combo)
        size_label = QLabel("Size")
        size_label.setBuddy(self.size_combo)
        for w in (sort_label, self.sort_combo, self.order_button, size_label, self.size_combo):
            sort_row.addWidget(w)
        sort_row.addStretch(1)

        self.count_label = QLabel()
        self.count_label.setWordWrap(True)
        count_row = QHBoxLayout()
        count_row.addWidget(self.count_label, 1)
        count_row.addWidget(reset)
        legend = QHBoxLayout()
        legend.setSpacing(4)
        small = QFont(self.font())
        small.setPointSizeF(self.font().pointSizeF() * 0.9)
        for kind, _, text, tip in BADGES:
            icon = QLabel()
            icon.setPixmap(badge_pixmap(kind))
            label = QLabel(text)
            label.setFont(small)
            icon.setToolTip(tip)
            label.setToolTip(tip)
            legend.addWidget(icon)
            legend.addWidget(label)
            legend.addSpacing(6)
        legend.addStretch(1)
        self.pred_label = QLabel()
        self.pred_label.setWordWrap(True)
        self.pred_label.setFont(small)
        self.pred_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(5)
        layout.addWidget(self.filters)
        layout.addLayout(sort_row)
        layout.addLayout(count_row)
        layout.addLayout(legend)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.pred_label)
        self._sort_row = sort_row

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        """At least 300 px wide and never narrower than the sort row (a fixed 300 px squeezed "Confidence"
        and "Medium" at 1366x768); the filters reflow into any width."""
        m = self.layout().contentsMargins()
        width = max(300, self._sort_row.minimumSize().width() + m.left() + m.right())
        return QSize(width, super().minimumSizeHint().height())

    # -- project data -----------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the samples again (project opened, closed, or images imported)."""
        project = self.session.project
        if project is None:
            self.cache.set_root(None)
            self.model.set_table(empty_table(), [])
            self._pred_model = self._pred_job = None
            self._fill_data_filters([], [], [])
            self._update_enabled()
            self._update_count()
            return
        try:
            table = sample_table(project)
        except Exception as e:  # noqa: BLE001 - a damaged database is told, not raised into Qt
            self.session.report(e, "Reading the project's images")
            return
        self.cache.set_root(project.root)
        self.model.set_table(table, project.classes)
        self._fill_data_filters(
            project.classes, table.splits(), table.groups(), bool((table.group == "").any())
        )
        self._pred_model = self._pred_job = None
        self._load_membership()
        self._load_verdicts()
        self._update_predictions()
        self._update_enabled()
        self._update_count()

    def _fill_data_filters(
        self, classes: list[str], splits: list[str], groups: list[str], unknown: bool = False
    ) -> None:
        _fill(self.class_combo, [("Any class", None)] + [(f"Class: {c}", k) for k, c in enumerate(classes)])
        _fill(self.split_combo, [("Any split", None)] + [(f"Split: {s}", s) for s in splits])
        group_items = [("Any group", None)] + [(f"Group: {g}", g) for g in groups]
        if unknown and groups:
            group_items.append(("Group: unknown", ""))
        _fill(self.group_combo, group_items)
        preds = [(f"Predicted: {c}", k) for k, c in enumerate(classes)]
        _fill(self.pred_combo, [("Any prediction", None)] + preds)
        self.group_combo.setEnabled(bool(groups))
        self._apply_filter()

    def _load_membership(self) -> None:
        project = self.session.project
        if project is None:
            return
        set_id = self.session.alignment_set_id()
        try:
            members = alignment_membership(project, self.model.table, set_id) if set_id else None
        except Exception as e:  # noqa: BLE001
            self.session.report(e, "Reading the alignment set")
            members = None
        self.model.set_membership(members)
        self._update_enabled()

    def _load_verdicts(self) -> None:
        project = self.session.project
        if project is None:
            return
        expl_id = self.session.explanation_id()
        status, flags = {}, None
        if expl_id is not None:
            try:
                status = verdict_status(project, expl_id)
                flags = VerdictFlags.build(self.model.table, status)
            except Exception as e:  # noqa: BLE001
                self.session.report(e, "Reading the verdicts")
        self.model.set_verdicts(status, flags)
        self._update_enabled()

    # -- predictions (a job in the "background" lane) ------------------------------------------------------------
    def _update_predictions(self) -> None:
        mid = self.session.latest_model_id()
        if mid is None:
            self._pred_model = self._pred_job = None
            self.model.set_predictions(None)
            self.pred_label.setText("No model yet: the prediction filters and sorts need a trained model.")
            self._update_enabled()
            return
        if mid == self._pred_model:
            return
        self._pred_model, self._pred_job = mid, None
        self.model.set_predictions(None)
        self._update_enabled()
        try:
            device = self.session.device()
        except ValueError as e:
            self.pred_label.setText(f"Predictions unavailable: {e}")
            return
        row = self.session.project.model_row(mid)
        what = f"model #{mid} ({row['kind']})"
        self.pred_label.setText(f"Computing the predictions of {what}…")

        def work(project, state, mid=mid, device=device):
            return model_predictions(project, mid, device, state)

        job = Job(PRED_KIND, f"Predicting every image with {what}", work, lane="background")
        job.on_done = lambda probs: self._on_predictions(job, what, probs)
        job.on_failed = lambda err: self._on_predictions_failed(job, err)
        self._pred_job = job
        # the job competes with the thumbnails for the CPU: it starts once the first screen is up
        self._deferred.start()

    def _submit_deferred(self) -> None:
        self._deferred.stop()
        job = self._pred_job
        if job is not None and not job.id and not self.runner.is_closing():  # not submitted yet
            self.runner.submit(job)

    def _on_predictions(self, job: Job, what: str, probs: np.ndarray) -> None:
        if job is not self._pred_job or self.session.project is None:
            return  # a newer model (or another project) came meanwhile
        self.model.set_predictions(probs)
        known = ~np.isnan(probs).any(axis=1)
        self.pred_label.setText(
            f"Predictions of {what}: {int(self.model.wrong.sum()):,} wrong of {int(known.sum()):,} images."
        )
        self._update_enabled()
        self._update_count()

    def _on_predictions_cancelled(self, job: Job) -> None:
        if job is self._pred_job:
            self._pred_model = None  # computed again on the next "models" change or reopening
            self.pred_label.setText(
                "The predictions were stopped; they are computed again when a model changes."
            )

    def _on_predictions_failed(self, job: Job, err) -> None:
        if job is self._pred_job:
            self._pred_model = None  # try again on the next "models" change
            self.pred_label.setText(f"Predictions unavailable: {getattr(err, 'message', err)}")

    def _on_job_progress(self, job, fraction: float, message: str, left: float) -> None:
        if job is self._pred_job and self.model.probs is None:
            self.pred_label.setText(f"Computing predictions: {message} ({fraction:.0%})")

    # -- filters and sort ---------------------------------------------------------------------------------
    def _update_enabled(self) -> None:
        """Grey what has no data yet (and set it back to "any", so nothing hidden filters silently)."""
        has_preds = self.model.probs is not None
        why = "Needs the predictions of a model; they appear when ready." if not has_preds else ""
        for combo, ok, tip in (
            (self.pred_combo, has_preds, why),
            (self.correct_combo, has_preds, why),
            (self.member_combo, self.model.members is not None, "No alignment set yet."),
            (self.verdict_combo, self.model.verdicts is not None, "No explanation with verdicts yet."),
        ):
            if not ok and combo.currentIndex() != 0:
                combo.setCurrentIndex(0)  # refilters through the signal
            combo.setEnabled(ok)
            combo.setToolTip(combo.property("filter_tip") if ok else tip)
        items = self.sort_combo.model()
        for i in (1, 2):
            items.item(i).setEnabled(has_preds)
        if not has_preds and self.sort_combo.currentIndex() != 0:
            self.sort_combo.setCurrentIndex(0)
        self.sort_combo.setToolTip("" if has_preds else "Entropy and confidence need the predictions.")

    def current_filter(self) -> BrowseFilter:
        return BrowseFilter(
            label=self.class_combo.currentData(),
            split=self.split_combo.currentData(),
            group=self.group_combo.currentData(),
            predicted=self.pred_combo.currentData(),
            correct=self.correct_combo.currentData(),
            in_alignment_set=self.member_combo.currentData(),
            verdict=self.verdict_combo.currentData(),
        )

    def _apply_filter(self) -> None:
        self.model.set_filter(self.current_filter())
        self._update_count()

    def _apply_sort(self) -> None:
        self._update_order_text()
        self.model.set_sort(self.sort_combo.currentData(), self.order_button.isChecked())
        self._update_count()

    def _update_order_text(self) -> None:
        down = self.order_button.isChecked()
        self.order_button.setText("↓ desc" if down else "↑ asc")
        self.order_button.setToolTip("Descending: largest first." if down else "Ascending: smallest first.")

    def _apply_size(self) -> None:
        size = int(self.size_combo.currentData())
        QSettings().setValue("browser/thumbnail_size", size)
        self.cache.set_size(size)
        self.view.apply_size()
        self._scroll_to_current()

    def reset_filters(self) -> None:
        for combo in (
            self.class_combo,
            self.split_combo,
            self.group_combo,
            self.pred_combo,
            self.correct_combo,
            self.member_combo,
            self.verdict_combo,
        ):
            combo.blockSignals(True)
            combo.setCurrentIndex(0)
            combo.blockSignals(False)
        self._apply_filter()

    def _update_count(self) -> None:
        if self.session.project is None:
            self.count_label.setText("No project open.")
            return
        n, m = self.model.rowCount(), len(self.model.table)
        text = f"Showing {n:,} of {m:,} images"
        cur = self.session.current_sample
        if cur >= 0 and self.model.table.position(cur) is not None and self.model.row_of(cur) is None:
            text += f" (image #{cur} is hidden by the filters)"
        self.count_label.setText(text)

    # -- selection ----------------------------------------------------------------------------------------
    def _on_current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        if self._following or not current.isValid():
            return
        self.session.select_sample(self.model.sample_id(current.row()))
        self._update_count()

    def follow_sample(self, sample_id: int) -> None:
        """Select and show the image another pane chose (nothing is emitted back)."""
        row = self.model.row_of(sample_id) if sample_id >= 0 else None
        self._following = True
        try:
            if row is None:
                self.view.selectionModel().clearCurrentIndex()
                self.view.clearSelection()
            else:
                index = self.model.index(row)
                self.view.selectionModel().setCurrentIndex(
                    index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                )
                self.view.scrollTo(index, QListView.ScrollHint.EnsureVisible)
        finally:
            self._following = False
        self._update_count()

    def _after_reset(self) -> None:
        self.follow_sample(self.session.current_sample)

    def _scroll_to_current(self) -> None:
        row = self.model.row_of(self.session.current_sample)
        if row is not None:
            self.view.scrollTo(self.model.index(row), QListView.ScrollHint.PositionAtCenter)

    # -- session ------------------------------------------------------------------------------------------
    def _on_changed(self, topic: str) -> None:
        if topic in ("project", "samples"):
            self.reload()
        elif topic == "models":
            self._update_predictions()
        elif topic == "alignment":
            self._load_membership()
        elif topic in ("explanation", "critique", "verdicts"):
            self._load_verdicts()
        else:
            return
        self._update_count()

    def closeEvent(self, event) -> None:
        self.cache.shutdown()
        super().closeEvent(event)
