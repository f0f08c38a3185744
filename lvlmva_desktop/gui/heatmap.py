"""The heatmap viewer pane (issue parts 3 and 6): the current image with its attribution, segments and
artefact mask, one model or two side by side with linked zoom, and the expert's verdicts per segment.

Where the image is in the current explanation and the model and method are the explanation's, the stored
map and segments are shown (those the critic judged and the verdicts refer to); otherwise the attribution
is computed on demand in the "view" lane (core.views.viewer.explain_samples) and kept in memory per
(model, image, method). Drawing is in heatmap_view.py, the verdict table and undo commands in verdicts.py.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import shiboken6
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QLabel,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lvlmva_desktop.gui.heatmap_view import (
    METHOD_NAMES,
    Attribution,
    AttributionView,
    Display,
    DisplayControls,
    group,
    overlay_levels,
)
from lvlmva_desktop.gui.jobs import Job
from lvlmva_desktop.gui.verdicts import VerdictTable

if (
    TYPE_CHECKING
):  # core.method.pipeline and torch are imported where used: the window appears before torch loads
    import torch

    from lvlmva_desktop.core.views.viewer import SegmentVerdictRow

log = logging.getLogger(__name__)

CACHE_SIZE = 64  # computed attributions kept in memory
JOB_KIND = "heatmap-attribution"


@dataclass
class _Image:
    pixels: np.ndarray  # (H, W, 3) or (H, W) uint8
    label: int
    split: str
    mask: np.ndarray | None


@dataclass
class _Explanation:
    id: int
    model_id: int
    method: str
    index: dict[int, int]  # sample id -> row of the tensors
    tensors: dict[str, torch.Tensor]
    settings: dict  # as recorded: other models' maps are computed with the same references and evidence


def _image_u8(x: torch.Tensor) -> np.ndarray:
    import torch

    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr[:3].transpose(1, 2, 0))


class HeatmapPane(QWidget):
    """See the module docstring. ``undo_stack`` holds the verdict edits (for Edit > Undo); the verdict
    actions (S / R / U / C) act on the selected segment while the focus is in this pane."""

    def __init__(self, session, runner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.runner = session, runner
        self.display = Display()
        self._sid = -1
        self._expl: _Explanation | None = None
        self._expl_loaded = False
        self._images: OrderedDict[int, _Image | None] = OrderedDict()
        self._cache: OrderedDict[tuple, Attribution] = OrderedDict()
        self._failed: dict[tuple, str] = {}
        self._job_keys: dict[int, list[tuple]] = {}
        self._picked: list[int | None] = [None, None]  # models the user chose (None: the default)
        self._method: str | None = None  # the method the user chose (None: the explanation's)
        self._refreshing = False
        self._generation = 0
        self._hovered = -1  # the segment of the verdict row under the mouse
        self._build_ui()
        session.changed.connect(self._on_changed)
        session.currentSampleChanged.connect(self._on_sample)
        self._on_changed("project")

    # -- construction ---------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.controls = DisplayControls(self.display)
        c = self.controls  # the controls, also as the pane's own attributes for the window and tests
        self.compare_check, self.method_combo, self.fit_button = c.compare_check, c.method_combo, c.fit_button
        self.cmap_combo, self.sign_combo, self.opacity_slider = c.cmap_combo, c.sign_combo, c.opacity_slider
        self.clip_spin, self.threshold_spin = c.clip_spin, c.threshold_spin
        self.segments_check, self.mask_check = c.segments_check, c.mask_check
        self.model_combos = [QComboBox(), QComboBox()]
        self.views = [AttributionView(), AttributionView()]
        self.columns = []
        views_row = QSplitter(Qt.Orientation.Horizontal)
        for i, (combo, view) in enumerate(zip(self.model_combos, self.views)):
            combo.setToolTip("The model whose attribution this view shows")
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
            combo.activated.connect(lambda _=0, i=i: self._on_model_picked(i))
            view.segmentClicked.connect(lambda s, pos, i=i: self._on_segment_clicked(i, s, pos))
            col = QWidget()
            lay = QVBoxLayout(col)
            lay.setContentsMargins(0, 0, 0, 0)
            lay.setSpacing(2)
            lay.addWidget(group(QLabel("Model"), combo, stretch_last=True))
            lay.addWidget(view, 1)
            views_row.addWidget(col)
            self.columns.append(col)
        self.columns[1].hide()
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.table = VerdictTable(self.session)
        self.table.segmentSelected.connect(self._on_segment_selected)
        self.table.segmentHovered.connect(self._on_segment_hovered)
        # what the main window wires (Edit > Undo) and what the S / R / U / C keys trigger in this pane
        self.undo_stack = self.table.undo_stack
        self.verdict_actions = self.table.verdict_actions
        self.act_spurious, self.act_relevant, self.act_undecided, self.act_take_back = self.verdict_actions
        self.verdict_menu = self.table.menu
        self.addActions(self.verdict_actions)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(views_row)
        self.splitter.addWidget(self.table)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        self._splitter_moved = False
        self.splitter.splitterMoved.connect(lambda *_: setattr(self, "_splitter_moved", True))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addWidget(self.controls)
        lay.addWidget(self.info)
        lay.addWidget(self.splitter, 1)
        self.setMinimumSize(360, 360)
        self.compare_check.toggled.connect(self._on_compare)
        self.method_combo.activated.connect(self._on_method_picked)
        self.controls.displayChanged.connect(self._on_display_changed)
        self.controls.opacityChanged.connect(lambda o: [v.set_opacity(o) for v in self.views])
        self.fit_button.clicked.connect(lambda: [v.fit() for v in self.views])

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """The verdict table goes beside the views when the pane is wide, below them when it is tall, and
        gets room for its rows (up to 35 % of the pane) until the user moves the splitter."""
        super().resizeEvent(event)
        wide = self.width() > 1.45 * self.height() and self.width() > 900
        self.splitter.setOrientation(Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical)
        if not self._splitter_moved:
            total = self.splitter.width() if wide else self.splitter.height()
            want = self.table.sizeHint().width() if wide else self.table.sizeHint().height()
            part = min(want, int(0.35 * total))
            self.splitter.setSizes([total - part, part])

    # -- session events ---------------------------------------------------------------------------------
    def _on_changed(self, topic: str) -> None:
        if topic == "project":
            self._generation += 1  # results of jobs started for the previous project are dropped
            self.undo_stack.clear()
            self._images.clear()
            self._cache.clear()
            self._failed.clear()
            self._picked = [None, None]
            self._method = None
            self._sid = self.session.current_sample
        if topic in ("project", "explanation"):
            self._expl_loaded = False
        if topic == "explanation":
            self._cache.clear()  # other models' maps follow the explanation's references and evidence
        if topic == "settings":
            self._cache.clear()  # computed with other settings
            self._generation += 1  # and a job still computing with the old ones is not shown or cached
        if topic in ("project", "settings", "models"):
            self._failed.clear()
        if topic == "samples":
            self._images.clear()
        if topic in ("project", "models", "explanation", "settings", "samples", "verdicts", "critique"):
            self._fill_models()
            self.refresh()

    def _on_sample(self, sample_id: int) -> None:
        self._sid = sample_id
        self._refreshing = True
        self.table.select_segment(-1)
        self._refreshing = False
        self.refresh()

    # -- what to show -----------------------------------------------------------------------------------
    def _explanation(self) -> _Explanation | None:
        if not self._expl_loaded:
            self._expl_loaded, self._expl = True, None
            eid = self.session.explanation_id()
            if eid is not None:
                try:
                    row, t = self.session.project.explanation(eid)
                    if not {"sample_ids", "maps", "segments", "evidence"} <= set(t):
                        return None  # not made by step 3-4 (no maps to show)
                    recorded = json.loads(row["settings"] or "{}")
                    method = recorded.get("attribution", {}).get("method") or recorded.get("explain", {}).get(
                        "method", "deeplift_shap"
                    )  # the method used (recorded since issue 14), else asked
                    index = {int(s): k for k, s in enumerate(t["sample_ids"].tolist())}
                    self._expl = _Explanation(eid, int(row["model_id"]), method, index, t, recorded)
                except Exception as e:  # noqa: BLE001
                    self.session.report(e, "Reading the explanation")
        return self._expl

    def _image(self, sid: int) -> _Image | None:
        if sid not in self._images:
            try:
                from lvlmva_desktop.core.views.viewer import load_samples

                got = load_samples(self.session.project, [sid])
                mask = got.masks[0].numpy() if bool(got.has_mask[0]) else None
                self._images[sid] = _Image(_image_u8(got.x[0]), int(got.y[0]), got.splits[0], mask)
            except Exception as e:  # noqa: BLE001
                self.session.report(e, f"Showing image #{sid}")
                self._images[sid] = None
            while len(self._images) > 32:
                self._images.popitem(last=False)
        return self._images[sid]

    def method(self) -> str:
        if self._method is not None:
            return self._method
        expl = self._explanation()
        return expl.method if expl is not None else self.session.pipeline_settings().explain.method

    def model_ids(self) -> list[int | None]:
        """The model of each view (the second only counts in compare mode)."""
        return [c.currentData() for c in self.model_combos]

    def _attribution(self, model_id: int, sid: int) -> Attribution | None:
        method = self.method()
        expl = self._explanation()
        if expl is not None and expl.model_id == model_id and expl.method == method and sid in expl.index:
            from lvlmva_desktop.core.method.segment import (
                recorded_evidence,  # torch is loaded: the explanation's tensors are
            )

            k, t = expl.index[sid], expl.tensors
            return Attribution(
                ("stored", expl.id, sid),
                t["maps"][k].numpy(),
                t["segments"][k].long().numpy(),
                t["evidence"][k].tolist(),
                True,
                f"explanation #{expl.id}",
                evidence_kind=recorded_evidence(expl.settings),
            )
        return self._cache.get((model_id, sid, method))

    def _pending(self) -> set[tuple]:
        jobs = [self.runner.running("view"), *self.runner.queued("view")]
        return {k for j in jobs if j is not None for k in self._job_keys.get(j.id, [])}

    # -- drawing ----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw the views and the verdict table from the project and the caches; start missing work."""
        self._refreshing = True
        try:
            self._refresh()
        finally:
            self._refreshing = False

    def _refresh(self) -> None:
        project = self.session.project
        image = self._image(self._sid) if project is not None and self._sid >= 0 else None
        if image is None:
            for v in self.views:
                v.show_content(None, None, self.display, "")
            self.info.setText(
                "Open a project and select an image." if project is None else "Select an image."
            )
            self.table.show_rows([], None, "")
            return
        shown = self._shown(image)
        rows, context, caption, tip, source = self._verdict_rows(shown[0])
        self.table.show_rows(rows, context, caption, tip)
        self._render(image, shown, rows, source)
        self._update_info(image, context is not None)

    def _shown(self, image: _Image) -> list[Attribution | None]:
        visible = 2 if self.compare_check.isChecked() else 1
        pending, missing, out = self._pending(), [], []
        for mid in self.model_ids()[:visible]:
            a = self._attribution(mid, self._sid) if mid is not None else None
            key = (mid, self._sid, self.method())
            if a is None and mid is not None and key not in pending and key not in self._failed:
                missing.append(mid)
            out.append(a)
        if missing:
            self._submit(sorted(set(missing)))
        return out

    def _verdict_rows(self, first: Attribution | None) -> tuple[list, tuple | None, str, str, tuple]:
        """The table's rows, their (explanation, sample) if editable, caption, tooltip, whose segments."""
        expl = self._explanation()
        if expl is not None and self._sid in expl.index:
            try:
                from lvlmva_desktop.core.views.viewer import segment_verdict_rows

                rows = segment_verdict_rows(self.session.project, expl.id, self._sid, expl.tensors)
            except Exception as e:  # noqa: BLE001
                self.session.report(e, "Reading the verdicts")
                return [], None, "", "", ()
            tip = (
                f"The segments of explanation #{expl.id} ({self._model_name(expl.model_id)}, "
                f"{METHOD_NAMES.get(expl.method, expl.method)}). Your verdict overrides the critic's for "
                "alignment; the critic's stays recorded and shown."
            )
            caption = f"<b>Verdicts</b> (explanation #{expl.id})"
            return rows, (expl.id, self._sid), caption, tip, ("stored", expl.id, self._sid)
        if first is None or first.segments is None:
            return [], None, "<b>Segments</b>", "", ()
        from lvlmva_desktop.core.views.viewer import SegmentVerdictRow

        rows = [SegmentVerdictRow(s, e, *[None] * 6) for s, e in enumerate(first.evidence)]
        caption = "<b>Segments</b> of the computed attribution (no verdicts)"
        return rows, None, caption, "Verdicts are given on the images of the alignment set.", first.key

    def _render(self, image: _Image, shown: list[Attribution | None], rows, source: tuple) -> None:
        verdicts = {r.segment: r.effective for r in rows}
        selected = self.table.selected_segment()
        pending = self._pending()
        levels = self._shared_levels(shown)
        for i, view in enumerate(self.views[: len(shown)]):
            a, mid = shown[i], self.model_ids()[i]
            key = (mid, self._sid, self.method())
            if mid is None:
                status = "No model yet: train or import one."
            elif a is not None:
                status = f"{METHOD_NAMES.get(self.method(), self.method())} · {a.source}"
            elif key in self._failed:
                status = f"Attribution failed: {self._failed[key]}"
            else:
                status = "Computing the attribution…" if key in pending else ""
            same = a is not None and a.key == source
            view.show_content(
                image.pixels,
                a,
                self.display,
                status,
                image.mask,
                verdicts if same and a.stored else None,
                selected if same else -1,
                levels,
            )
            view.set_hover(self._hovered if same else -1)

    def _shared_levels(self, shown: list[Attribution | None]) -> tuple[float, float] | None:
        """One colour scale for both views of a comparison, the larger of their own (a weaker map looks
        weaker); None with one map, which keeps its own."""
        maps = [a.map for a in shown if a is not None]
        if len(maps) < 2:
            return None
        d = self.display
        tops = [overlay_levels(m, d.signed, d.clip) for m in maps]
        lo, hi = min(t[0] for t in tops), max(t[1] for t in tops)
        return (-hi, hi) if d.signed else (lo, hi)

    def _update_info(self, image: _Image, editable: bool) -> None:
        classes = self.session.project.classes
        label = classes[image.label] if 0 <= image.label < len(classes) else str(image.label)
        text = f"<b>Image #{self._sid}</b> · {label} · {image.split}"
        if editable:
            text += " · alignment set: click a segment to give your verdict"
        elif self._explanation() is not None:
            text += " · not in the alignment set (no verdicts)"
        if image.mask is not None and self.display.mask:
            text += " · dashed: the known artefact"
        scales = [v.levels for v in self.views[: self._n_visible()] if v.levels is not None]
        if scales:
            hi = max(s[1] for s in scales)
            text += f" · colour scale {f'±{hi:.2g}' if self.display.signed else f'0 to {hi:.2g}'}"
            if len(scales) > 1:
                text += ", shared by both views"
        self.info.setText(text)

    def _model_name(self, model_id: int) -> str:
        for i in range(self.model_combos[0].count()):
            if self.model_combos[0].itemData(i) == model_id:
                return self.model_combos[0].itemText(i)
        return f"model #{model_id}"

    # -- on-demand attributions ---------------------------------------------------------------------------
    def _compute_settings(self):
        """Explanation and segment settings for maps computed here: the current explanation's, as recorded
        (so that side-by-side maps use the same references and evidence), else the project's settings."""
        from lvlmva_desktop.core.method.settings import PipelineSettings

        expl = self._explanation()
        s = (
            PipelineSettings.from_record(expl.settings)
            if expl is not None
            else self.session.pipeline_settings()
        )
        return s.explain, s.segment

    def _submit(self, model_ids: list[int]) -> None:
        sid, method = self._sid, self.method()
        try:
            device = self.session.device()
        except Exception as e:  # noqa: BLE001 - e.g. a GPU that is not there
            for mid in model_ids:
                self._failed[(mid, sid, method)] = str(e)
            self.session.report(e, "Choosing the device")
            return
        explain, segment = self._compute_settings()
        explain = replace(explain, method=method)
        keys = [(mid, sid, method) for mid in model_ids]

        def fn(project, state):
            from lvlmva_desktop.core.views.viewer import explain_samples

            out = {}
            for i, mid in enumerate(model_ids):
                sub = state.child(i / len(model_ids), (i + 1) / len(model_ids))
                r = explain_samples(project, mid, [sid], explain, device, sub, segment=segment)
                out[(mid, sid, method)] = (
                    r.maps[0].numpy(),
                    r.segments[0].numpy(),
                    r.evidence[0].tolist(),
                    segment.evidence,
                )
            return out

        job = Job(JOB_KIND, f"Attribution of image #{sid}", fn, lane="view")
        generation = self._generation
        job.on_done = lambda result: self._on_computed(job.id, result, generation)
        job.on_failed = lambda error: self._on_compute_failed(job.id, keys, error, generation)
        self.runner.submit(job)
        self._job_keys[job.id] = keys

    def _on_computed(self, job_id: int, result: dict, generation: int) -> None:
        if not shiboken6.isValid(self) or generation != self._generation:
            return
        self._job_keys.pop(job_id, None)
        for key, (amap, seg, evidence, kind) in result.items():
            self._cache[key] = Attribution(
                key, amap, seg, evidence, False, f"computed (model #{key[0]})", evidence_kind=kind
            )
            self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        self.refresh()

    def _on_compute_failed(self, job_id: int, keys: list[tuple], error, generation: int) -> None:
        if not shiboken6.isValid(self) or generation != self._generation:
            return
        self._job_keys.pop(job_id, None)
        for k in keys:
            self._failed[k] = error.message
        self.refresh()

    # -- controls -----------------------------------------------------------------------------------------
    def _fill_models(self) -> None:
        project = self.session.project
        rows = project.models() if project is not None else []
        ids = [int(r["id"]) for r in rows]
        original = self.session.original_model_id() if project is not None else None
        aligned = self.session.aligned_model_id() if project is not None else None
        first = original if original is not None else (ids[-1] if ids else None)
        others = [i for i in ids if i != first]
        defaults = [first, aligned if aligned is not None else (others[-1] if others else first)]
        for i, combo in enumerate(self.model_combos):
            combo.blockSignals(True)
            combo.clear()
            for r in rows:
                combo.addItem(f"#{r['id']} {r['name']}", int(r["id"]))
            want = self._picked[i] if self._picked[i] in ids else defaults[i]
            combo.setCurrentIndex(ids.index(want) if want in ids else -1)
            combo.blockSignals(False)
        method = self.method() if project is not None else self.method_combo.currentData()
        self.method_combo.setCurrentIndex(max(0, self.method_combo.findData(method)))

    def _on_model_picked(self, i: int) -> None:
        self._picked[i] = self.model_combos[i].currentData()
        self.refresh()

    def _on_method_picked(self) -> None:
        self._method = self.method_combo.currentData()
        self.refresh()

    def _on_compare(self, on: bool) -> None:
        """Show the second view with zoom and pan linked to the first.

        Two aspect-locked views linked on both axes push each other's ranges outwards when their sizes
        differ by a pixel, so while linked the second view gives up its own aspect lock and follows the
        first (same size, so the same aspect); a hidden view is never linked.
        """
        first, second = self.views[0].vb, self.views[1].vb
        if not on:
            second.setXLink(None)
            second.setYLink(None)
            second.setAspectLocked(True)
        self.columns[1].setVisible(on)
        if on:
            second.setAspectLocked(False)
            second.setXLink(first)
            second.setYLink(first)
            self.views[0].fit()
        self.refresh()

    def _on_display_changed(self, display: Display) -> None:
        self.display = display
        self.refresh()

    # -- verdicts -----------------------------------------------------------------------------------------
    def _on_segment_selected(self, segment: int) -> None:
        if self._refreshing:
            return  # refresh draws once at its end
        image = self._images.get(self._sid)
        if image is not None:
            self._render(image, [v.attribution for v in self.views[: self._n_visible()]], *self._source())

    def _on_segment_hovered(self, segment: int) -> None:
        """Outline the segment of the verdict row under the mouse, in the views that show those segments."""
        self._hovered = segment
        if self._refreshing:
            return
        source = self._source()[1]
        for view in self.views[: self._n_visible()]:
            a = view.attribution
            view.set_hover(segment if a is not None and a.key == source else -1)

    def _n_visible(self) -> int:
        return 2 if self.compare_check.isChecked() else 1

    def _source(self) -> tuple[list[SegmentVerdictRow], tuple]:
        expl = self._explanation()
        if self.table.editable and expl is not None:
            return self.table.rows, ("stored", expl.id, self._sid)
        a = self.views[0].attribution
        return self.table.rows, (a.key if a is not None else ())

    def _on_segment_clicked(self, view: int, segment: int, pos: QPoint) -> None:
        a = self.views[view].attribution
        if a is None or a.key != self._source()[1]:
            expl = self._explanation()
            if expl is not None and self._sid in expl.index:
                self.info.setText(
                    f"Verdicts belong to the segments of explanation #{expl.id} "
                    f"({self._model_name(expl.model_id)}, {METHOD_NAMES.get(expl.method, expl.method)}): "
                    "click in the view that shows it, or use the table."
                )
            return
        self.table.popup_menu(segment, pos)
