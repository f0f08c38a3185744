"""Drawing for the heatmap viewer: one image with its attribution overlay, segments, mask and colour bar.

Pure display: the pane (heatmap.py) decides what to show. Images are (row, col) arrays, drawn upright
(y axis down, aspect locked); segment and mask outlines are vector paths along pixel edges, crisp at
any zoom; segment numbers (from 1, as the LVLM and the command line show them) sit at each segment's
centre of evidence, or as near to it as they can without covering another number (``place_labels``: a
ring's centre is its inner disc's, and labels keep their screen size at any zoom, so they are placed anew
whenever the zoom changes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainterPath
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QSlider,
    QToolButton,
    QWidget,
)

from lvlmva_desktop.gui.verdicts import VERDICT_COLOURS, VERDICT_MARKS

log = logging.getLogger(__name__)

pg.setConfigOptions(imageAxisOrder="row-major")  # arrays are (row, col) like the images and the core

METHOD_NAMES = {
    "deeplift_shap": "DeepLIFT-SHAP",
    "input_x_gradient": "Input × gradient",
    "integrated_gradients": "Integrated gradients",
}
LABEL_GAP = 2.0  # screen pixels kept between two segment numbers
COLOURMAPS = {  # signed maps need a diverging colour map, positive-only ones a sequential one
    True: (("Blue–white–red", "CET-D1"), ("Blue–black–red", "CET-D4"), ("Blue–yellow (CB safe)", "CET-CBD1")),
    False: (("Fire", "CET-L3"), ("Inferno", "inferno"), ("Viridis", "viridis")),
}


@dataclass
class Display:
    """How the attribution is drawn; shared by both views."""

    cmap: str = "CET-D1"
    signed: bool = True
    opacity: float = 0.85
    clip: float = 99.0  # percentile of |attribution| that saturates the colour map
    threshold: float = 0.1  # hide |attribution| below this fraction of the clip level
    segments: bool = True
    mask: bool = True


@dataclass
class Attribution:
    key: tuple  # ("stored", explanation id, sample) or (model id, sample, method)
    map: np.ndarray  # (H, W) float32
    segments: np.ndarray | None  # (H, W) 0-based segment per pixel
    evidence: list[float]
    stored: bool  # the current explanation's: its segments carry the verdicts
    source: str
    centres: dict[int, tuple[float, float]] = field(default_factory=dict)
    evidence_kind: str = "positive"  # what the segments were fitted to (SegmentSettings.evidence)

    def __post_init__(self) -> None:
        if self.segments is not None and not self.centres:
            import torch  # here, not at the top: the window appears before torch loads

            from lvlmva_desktop.core.method.segment import evidence_map
            from lvlmva_desktop.lvlm.render import centres

            # numbers where the critic's overlay put them: at the centre of the evidence the segments follow
            ev = evidence_map(torch.from_numpy(self.map), self.evidence_kind)
            self.centres = centres(torch.from_numpy(self.segments), ev)


def overlay_levels(amap: np.ndarray, signed: bool, clip: float) -> tuple[float, float]:
    """Colour-map levels: symmetric around 0 for signed maps, clipped at a percentile of the magnitude."""
    vals = np.abs(amap) if signed else np.clip(amap, 0, None)
    vals = vals[np.isfinite(vals)]
    top = float(np.percentile(vals, clip)) if vals.size else 0.0
    if not top > 0:
        top = float(vals.max()) if vals.size and vals.max() > 0 else 1e-12
    return (-top, top) if signed else (0.0, top)


def overlay_lut(cmap: str, signed: bool, threshold: float) -> np.ndarray:
    """(256, 4) RGBA table whose opacity grows with the attribution's magnitude, so that the image stays
    visible under weak evidence; magnitudes below ``threshold`` (a fraction of the level) are hidden."""
    lut = pg.colormap.get(cmap).getLookupTable(0.0, 1.0, 256, alpha=True).copy()
    centre = (np.arange(256) + 0.5) / 256  # where each entry's values lie between the two levels
    mag = np.abs(2 * centre - 1) if signed else centre
    ramp = np.clip((mag - threshold) / max(1.0 - threshold, 1e-6), 0.0, 1.0) ** 0.8
    if not signed:
        ramp[0] = 0.0  # zero and negative evidence: nothing to show
    lut[:, 3] = np.round(255 * ramp).astype(np.uint8)
    return lut


def edge_path(labels: np.ndarray, border: bool) -> QPainterPath:
    """Pixel-exact boundaries between differing values (with ``border``, also around the image edge)."""
    a = np.pad(labels, 1, constant_values=-1 if labels.dtype != bool else False) if border else labels
    off = -1 if border else 0
    ys, xs = np.nonzero(a[:, :-1] != a[:, 1:])  # vertical edge right of (ys, xs)
    vx0 = vx1 = xs + 1 + off
    vy0, vy1 = ys + off, ys + 1 + off
    ys2, xs2 = np.nonzero(a[:-1, :] != a[1:, :])  # horizontal edge below
    hx0, hx1 = xs2 + off, xs2 + 1 + off
    hy0 = hy1 = ys2 + 1 + off
    n = len(xs) + len(xs2)
    if n == 0:
        return QPainterPath()
    x = np.empty(2 * n)
    y = np.empty(2 * n)
    x[0::2], x[1::2] = np.concatenate([vx0, hx0]), np.concatenate([vx1, hx1])
    y[0::2], y[1::2] = np.concatenate([vy0, hy0]), np.concatenate([vy1, hy1])
    connect = np.zeros(2 * n, dtype=np.int32)
    connect[0::2] = 1
    return pg.arrayToQPath(x, y, connect=connect)


def place_labels(
    segments: np.ndarray,
    anchors: dict[int, tuple[float, float]],
    sizes: dict[int, tuple[float, float]],
    pixel: tuple[float, float],
    max_candidates: int = 2500,
) -> dict[int, tuple[float, float]]:
    """Where each segment's label goes, (x, y) of its centre in image coordinates, so that no two labels
    overlap: as near to the segment's anchor ((row, col), its centre of evidence) as a free spot inside the
    segment allows, with the whole label inside the image where it fits; a segment without a free spot
    gets the nearest free one anywhere around its anchor.

    ``sizes`` are the labels' (width, height) in screen pixels and ``pixel`` the image units per screen
    pixel (x, y), so distances are weighed as the eye sees them. Small segments are placed first: they
    have the fewest spots.
    """
    h, w = segments.shape
    px, py = pixel
    placed: list[tuple[float, float, float, float]] = []  # (x, y, half width, half height), image units
    out: dict[int, tuple[float, float]] = {}
    counts = {s: int((segments == s).sum()) for s in anchors}
    for s in sorted(anchors, key=lambda s: (counts[s], s)):
        r0, c0 = anchors[s]
        hw, hh = (sizes[s][0] + LABEL_GAP) * px / 2, (sizes[s][1] + LABEL_GAP) * py / 2
        ys, xs = np.nonzero(segments == s)
        if len(ys) > max_candidates:  # a large segment: an even subsample of its pixels is enough
            keep = np.linspace(0, len(ys) - 1, max_candidates).round().astype(int)
            ys, xs = ys[keep], xs[keep]
        cx, cy = xs + 0.5, ys + 0.5
        # in image: the label's box inside the image; inside: its four corners on the segment's pixels
        inside_image = (cx - hw >= 0) & (cx + hw <= w) & (cy - hh >= 0) & (cy + hh <= h)
        corners_in = np.zeros(len(cx))
        for dx, dy in ((-hw, -hh), (hw, -hh), (-hw, hh), (hw, hh)):
            r = np.clip(np.floor(cy + dy * 0.999).astype(int), 0, h - 1)
            c = np.clip(np.floor(cx + dx * 0.999).astype(int), 0, w - 1)
            corners_in += segments[r, c] == s
        dist = np.hypot((cx - (c0 + 0.5)) / px, (cy - (r0 + 0.5)) / py)  # screen pixels
        label = max(sizes[s]) + 1.0
        cost = dist + (~inside_image) * 4 * label + (4 - corners_in) * 0.5 * label
        free = _free(cx, cy, hw, hh, placed)
        if free.any():
            i = int(np.argmin(np.where(free, cost, np.inf)))
            x, y = float(cx[i]), float(cy[i])
        else:
            x, y = _nearest_free(c0 + 0.5, r0 + 0.5, hw, hh, placed)
        placed.append((x, y, hw, hh))
        out[s] = (x, y)
    return out


def _free(cx: np.ndarray, cy: np.ndarray, hw: float, hh: float, placed: list) -> np.ndarray:
    """Which candidate centres give a label box that overlaps none of the placed ones."""
    ok = np.ones(len(cx), dtype=bool)
    for x, y, w2, h2 in placed:
        ok &= (np.abs(cx - x) >= hw + w2) | (np.abs(cy - y) >= hh + h2)
    return ok


def _nearest_free(x0: float, y0: float, hw: float, hh: float, placed: list) -> tuple[float, float]:
    """The free spot nearest (x0, y0) on a grid of half-label steps, searched in growing squares (there is
    always one beyond the placed labels)."""
    step_x, step_y = hw, hh
    for radius in range(1, 10_000):
        k = np.arange(-radius, radius + 1)
        gx, gy = np.meshgrid(k, k)
        ring = (np.abs(gx) == radius) | (np.abs(gy) == radius)
        cx, cy = x0 + gx[ring] * step_x, y0 + gy[ring] * step_y
        free = _free(cx, cy, hw, hh, placed)
        if free.any():
            d = np.where(free, np.hypot(gx[ring] * step_x, gy[ring] * step_y), np.inf)
            i = int(np.argmin(d))
            return float(cx[i]), float(cy[i])
    return x0, y0  # not reached


def _path_item(pen: QColor | tuple, width: float, z: float, style=Qt.PenStyle.SolidLine):
    item = pg.QtWidgets.QGraphicsPathItem()
    item.setPen(pg.mkPen(pen, width=width, style=style, cosmetic=True))
    item.setZValue(z)
    return item


class AttributionView(pg.GraphicsLayoutWidget):
    """One image with its attribution overlay, segment outlines and numbers, mask outline and colour bar."""

    segmentClicked = Signal(int, QPoint)  # 0-based segment under the click, global position

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(140, 120)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.ci.setContentsMargins(2, 2, 2, 2)
        self.title = self.addLabel("", row=0, col=0, colspan=2, size="9pt")
        self.vb = self.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.vb.setDefaultPadding(0.01)
        self.bar = pg.ColorBarItem(
            values=(-1, 1),
            colorMap="CET-D1",
            interactive=False,
            width=12,
            colorMapMenu=False,
        )
        self.addItem(self.bar, row=1, col=1)
        self.base = pg.ImageItem()
        self.overlay = pg.ImageItem()
        self.overlay.setZValue(1)
        self.mask_item = _path_item((0, 230, 255), 2.0, 3, Qt.PenStyle.DashLine)
        self.halo_item = _path_item((0, 0, 0, 170), 3.5, 4)
        self.seg_item = _path_item((255, 255, 255), 1.5, 5)
        self.sel_item = _path_item((255, 200, 0), 3.5, 6)
        self.hover_item = _path_item((255, 200, 0), 3.0, 7, Qt.PenStyle.DashLine)  # the row under the mouse
        self._hovered = -1
        self.vb.addItem(self.base)
        items = (self.overlay, self.mask_item, self.halo_item, self.seg_item, self.sel_item, self.hover_item)
        for it in items:
            self.vb.addItem(it, ignoreBounds=True)  # the view fits the image alone
        self.numbers: list[pg.TextItem] = []
        self._number_segments: list[int] = []  # the segment of each label in ``numbers``
        self._placed_at: tuple[float, float] | None = None  # the zoom the labels were placed for
        self.attribution: Attribution | None = None
        self.levels: tuple[float, float] | None = None  # the colour scale drawn
        self._shape: tuple[int, ...] | None = None
        self.scene().sigMouseClicked.connect(self._on_click)
        self.vb.sigRangeChanged.connect(lambda *_: self._place_numbers())
        self.vb.sigResized.connect(lambda *_: self._place_numbers())

    def show_content(
        self,
        image: np.ndarray | None,
        attribution: Attribution | None,
        display: Display,
        status: str,
        mask: np.ndarray | None = None,
        verdicts: dict[int, str | None] | None = None,
        selected: int = -1,
        levels: tuple[float, float] | None = None,
    ) -> None:
        """Draw everything anew; ``verdicts`` colours the segment numbers (only for the stored segments);
        ``levels`` is a colour scale shared with another view (None: this map's own, ``overlay_levels``),
        kept in ``levels`` (None without a map)."""
        self.title.setText(status)
        self.attribution = attribution
        self.levels = None
        if attribution is not None:
            lo, hi = levels or overlay_levels(attribution.map, display.signed, display.clip)
            self.levels = (lo, hi)
        if image is None:
            for it in (self.base, self.overlay):
                it.clear()
            self._clear_paths()
            self._shape = None
            return
        self.base.setImage(image, levels=(0, 255), autoLevels=False)
        if attribution is not None:
            data = attribution.map if display.signed else np.clip(attribution.map, 0, None)
            lut = overlay_lut(display.cmap, display.signed, display.threshold)
            self.overlay.setImage(data, levels=(lo, hi), lut=lut, autoLevels=False)
            self.overlay.setOpacity(display.opacity)
            self.overlay.show()
            self.bar.setColorMap(pg.colormap.get(display.cmap))
            self.bar.setLevels((lo, hi))
            self.bar.show()
        else:
            self.overlay.clear()
            self.overlay.hide()
            self.bar.hide()
        self._clear_paths()
        seg = attribution.segments if attribution is not None else None
        if mask is not None and display.mask and mask.any():
            self.mask_item.setPath(edge_path(mask.astype(bool), border=True))
        if seg is not None and display.segments:
            path = edge_path(seg, border=False)
            self.halo_item.setPath(path)
            self.seg_item.setPath(path)
            for s, (r, c) in sorted(attribution.centres.items()):
                v = (verdicts or {}).get(s)
                text = f"{s + 1}{VERDICT_MARKS[v]}"
                item = pg.TextItem(
                    text, color=(255, 255, 255), fill=QColor(*VERDICT_COLOURS[v], 215), anchor=(0.5, 0.5)
                )
                item.setZValue(10)
                item.setPos(c + 0.5, r + 0.5)
                self.vb.addItem(item, ignoreBounds=True)
                self.numbers.append(item)
                self._number_segments.append(s)
        if seg is not None and 0 <= selected and (seg == selected).any():
            self.sel_item.setPath(edge_path(seg == selected, border=True))
        if self._shape != image.shape[:2]:
            self._shape = image.shape[:2]
            self.fit()
        self._place_numbers(force=True)

    def _place_numbers(self, force: bool = False) -> None:
        """Move the segment numbers apart (``place_labels``) for the current zoom; a pan keeps them."""
        a = self.attribution
        if not self.numbers or a is None or a.segments is None:
            return
        size = self.vb.viewPixelSize()
        pixel = (abs(float(size[0])), abs(float(size[1])))
        if not all(np.isfinite(pixel)) or min(pixel) <= 0:
            return  # not laid out yet: placed when the view gets its size
        if not force and self._placed_at is not None and np.allclose(pixel, self._placed_at, rtol=0.01):
            return
        self._placed_at = pixel
        sizes, anchors = {}, {}
        for s, item in zip(self._number_segments, self.numbers):
            rect = item.textItem.boundingRect()
            sizes[s] = (rect.width(), rect.height())
            anchors[s] = a.centres[s]
        for s, (x, y) in place_labels(a.segments, anchors, sizes, pixel).items():
            self.numbers[self._number_segments.index(s)].setPos(x, y)

    def fit(self) -> None:
        """Show the whole image now, and keep fitting it on resizes until the user zooms or pans."""
        if self.vb.linkedView(0) is not None:
            return  # a linked view follows the one it is linked to
        self.vb.enableAutoRange()
        self.vb.updateAutoRange()

    def image_shape(self) -> tuple[int, ...] | None:
        return self._shape

    def set_opacity(self, opacity: float) -> None:
        self.overlay.setOpacity(opacity)

    def set_hover(self, segment: int) -> None:
        """Outline one segment (the verdict row under the mouse); -1 takes the outline away."""
        a = self.attribution
        seg = a.segments if a is not None else None
        if seg is None or segment < 0 or not (seg == segment).any():
            segment = -1
        if segment == self._hovered:
            return
        self._hovered = segment
        self.hover_item.setPath(edge_path(seg == segment, border=True) if segment >= 0 else QPainterPath())

    def _clear_paths(self) -> None:
        self._hovered = -1
        for it in (self.mask_item, self.halo_item, self.seg_item, self.sel_item, self.hover_item):
            it.setPath(QPainterPath())
        for t in self.numbers:
            self.vb.removeItem(t)
        self.numbers = []
        self._number_segments = []
        self._placed_at = None

    def pixel_position(self, row: int, col: int) -> QPoint:
        """Where pixel (row, col) of the image is in this widget (for tests and tooltips)."""
        scene = self.vb.mapViewToScene(QPointF(col + 0.5, row + 0.5))
        return self.mapFromScene(scene)

    def _on_click(self, ev) -> None:
        a = self.attribution
        buttons = (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton)
        if ev.button() not in buttons or a is None or a.segments is None:
            return
        pos = ev.scenePos()
        if not self.vb.sceneBoundingRect().contains(pos):
            return
        p = self.vb.mapSceneToView(pos)
        x, y = int(np.floor(p.x())), int(np.floor(p.y()))
        h, w = a.segments.shape
        if 0 <= y < h and 0 <= x < w:
            ev.accept()
            self.segmentClicked.emit(int(a.segments[y, x]), ev.screenPos().toPoint())


class FlowLayout(QLayout):
    """Lays widgets out left to right and wraps them onto new lines, so the controls fit any dock width."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items = []
        self.setSpacing(spacing)
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item) -> None:  # noqa: N802 - Qt's name
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, i: int):  # noqa: N802
        return self._items[i] if 0 <= i < len(self._items) else None

    def takeAt(self, i: int):  # noqa: N802
        return self._items.pop(i) if 0 <= i < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._place(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        self._place(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802
        return self.minimumSize()

    def minimumSize(self) -> QSize:  # noqa: N802
        size = QSize()
        for it in self._items:
            size = size.expandedTo(it.minimumSize())
        return size

    def _place(self, rect: QRect, move: bool) -> int:
        x, y, line = rect.x(), rect.y(), 0
        for it in self._items:
            hint = it.sizeHint()
            if x + hint.width() > rect.right() + 1 and line > 0:
                x, y, line = rect.x(), y + line + self.spacing(), 0
            if move:
                it.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self.spacing()
            line = max(line, hint.height())
        return y + line - rect.y()


def group(*widgets: QWidget, stretch_last: bool = False) -> QWidget:
    """Widgets that stay together on one line of the flow (a label with its control)."""
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(4)
    for i, x in enumerate(widgets):
        lay.addWidget(x, 1 if stretch_last and i == len(widgets) - 1 else 0)
    return w


class DisplayControls(QWidget):
    """The viewer's controls, flowing onto as many lines as the width needs: compare, method, colour
    map, signed or positive only, opacity, percentile clip, threshold, segments and mask toggles, fit.

    ``displayChanged(Display)`` on any change of how the overlay is drawn; ``opacityChanged(float)``
    separately, as it needs no redraw. The pane connects compare, method and fit itself.
    """

    displayChanged = Signal(object)
    opacityChanged = Signal(float)

    def __init__(self, display: Display, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.display = replace(display)
        self._cmap = {True: display.cmap, False: COLOURMAPS[False][0][1]}  # last choice per family
        self.compare_check = QCheckBox("Compare two models")
        self.compare_check.setToolTip("Show two models' attributions of the image side by side")
        self.method_combo = QComboBox()
        for m, name in METHOD_NAMES.items():
            self.method_combo.addItem(name, m)
        self.method_combo.setToolTip("Attribution method (the explanation's is shown from the project)")
        self.cmap_combo = QComboBox()
        self.cmap_combo.setToolTip("Colour map")
        self.sign_combo = QComboBox()
        self.sign_combo.addItem("Signed", True)
        self.sign_combo.addItem("Positive only", False)
        self.sign_combo.setToolTip("Signed: evidence for (red) and against (blue) the label")
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(round(display.opacity * 100))
        self.opacity_slider.setFixedWidth(90)
        self.clip_spin = self._spin(50.0, 100.0, 1, 1.0, display.clip)
        self.clip_spin.setToolTip("Percentile of the attribution's magnitude that gets the strongest colour")
        self.threshold_spin = self._spin(0.0, 95.0, 0, 5.0, display.threshold * 100)
        self.threshold_spin.setToolTip("Hide attributions weaker than this share of the strongest colour")
        self.segments_check = QCheckBox("Segments")
        self.segments_check.setChecked(display.segments)
        self.mask_check = QCheckBox("Artefact mask")
        self.mask_check.setChecked(display.mask)
        self.mask_check.setToolTip("Outline of the known artefact (dashed), where the data has one")
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Show the whole image again")
        flow = FlowLayout(self)
        for w in (
            self.compare_check,
            group(QLabel("Method"), self.method_combo),
            group(QLabel("Colours"), self.cmap_combo, self.sign_combo),
            group(QLabel("Opacity"), self.opacity_slider),
            group(QLabel("Clip at"), self.clip_spin),
            group(QLabel("Hide below"), self.threshold_spin),
            group(self.segments_check, self.mask_check, self.fit_button),
        ):
            flow.addWidget(w)
        self._fill_cmaps()
        self.cmap_combo.activated.connect(self._changed)
        self.sign_combo.activated.connect(self._sign_changed)
        self.opacity_slider.valueChanged.connect(self._opacity_changed)
        for w in (self.clip_spin, self.threshold_spin):
            w.valueChanged.connect(self._changed)
        for w in (self.segments_check, self.mask_check):
            w.toggled.connect(self._changed)

    @staticmethod
    def _spin(lo: float, hi: float, decimals: int, step: float, value: float) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setDecimals(decimals)
        spin.setSingleStep(step)
        spin.setSuffix(" %")
        spin.setValue(value)
        return spin

    def _fill_cmaps(self) -> None:
        """A signed map gets the diverging colour maps, a positive-only one the sequential ones."""
        self.cmap_combo.blockSignals(True)
        self.cmap_combo.clear()
        for name, key in COLOURMAPS[self.display.signed]:
            self.cmap_combo.addItem(name, key)
        self.cmap_combo.setCurrentIndex(max(0, self.cmap_combo.findData(self._cmap[self.display.signed])))
        self.cmap_combo.blockSignals(False)

    def _sign_changed(self) -> None:
        self.display.signed = bool(self.sign_combo.currentData())
        self._fill_cmaps()
        self._changed()

    def _opacity_changed(self, value: int) -> None:
        self.display.opacity = value / 100.0
        self.opacityChanged.emit(self.display.opacity)

    def _changed(self) -> None:
        self._cmap[self.display.signed] = self.cmap_combo.currentData()
        self.display = replace(
            self.display,
            cmap=self._cmap[self.display.signed],
            clip=self.clip_spin.value(),
            threshold=self.threshold_spin.value() / 100.0,
            segments=self.segments_check.isChecked(),
            mask=self.mask_check.isChecked(),
        )
        self.displayChanged.emit(replace(self.display))
