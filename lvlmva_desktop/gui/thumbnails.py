"""The browser's thumbnail grid: its model (numpy rows), its view and delegate, and the thumbnail cache.

Model/view, not one widget per image: ``BrowserModel`` holds the project's samples as numpy arrays
(core.views.browse) and the rows that pass the filters; ``QListView`` asks only for the cells it paints, and the
delegate asks the ``ThumbnailCache`` only for those, so 50,000 images cost no more than 50 at paint time.

Thumbnails are made off the GUI thread, only for what is painted, and kept in a size-bounded LRU cache.
The delegate asks ``ThumbnailCache.get`` while painting a cell; a miss queues the image and
returns None (the delegate draws a placeholder). A few QRunnables decode queued images into QImages
(QImage, unlike QPixmap, may be built outside the GUI thread), newest request first, so the rows the user
scrolled to come before the ones scrolled past; requests beyond ``MAX_PENDING`` are dropped (a row painted
again asks again). Arrivals are batched into one ``updated`` signal so the view repaints once per batch.
"""

from __future__ import annotations

import html
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QRunnable,
    QSize,
    Qt,
    QThreadPool,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QColor, QFont, QImage, QImageReader, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QListView, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from lvlmva_desktop.core.views.browse import (
    BrowseFilter,
    SampleTable,
    VerdictFlags,
    VerdictStatus,
    confidence,
    select_rows,
    sort_rows,
)

log = logging.getLogger(__name__)

MAX_PENDING = 400  # queued requests kept; older ones are dropped when the user scrolls fast
CACHE_BYTES = 96 * 1024 * 1024  # decoded thumbnails kept in memory
REPAINT_MS = 25  # arrivals within this time cause one repaint
PAD = 5  # around the thumbnail inside a cell
CAPTION = 15  # height of the "#id" caption under the thumbnail
WRONG = QColor("#d32f2f")  # border: the model's prediction is wrong
MEMBER = QColor("#1565c0")  # round badge "A": in the current alignment set
SPURIOUS = QColor("#ef6c00")  # square badge "S": a segment judged spurious
BADGES = (  # kind, colour, legend text, legend tooltip
    ("wrong", WRONG, "wrong", "Red border: the model's prediction is wrong"),
    ("member", MEMBER, "alignment set", "A: the image is in the current alignment set"),
    ("spurious", SPURIOUS, "spurious", "S: a segment of the image was judged spurious"),
)


def load_thumbnail(path: str, size: int) -> QImage:
    """A QImage fitting in size x size (aspect kept), or a null QImage if the file cannot be read.

    Qt's readers come first (they decode JPEG at reduced size); files Qt cannot read (16-bit or float
    TIFF, for instance) go through the core's reader, the same one the model's data goes through.
    """
    reader = QImageReader(path)
    reader.setAutoTransform(False)  # the model sees the pixels as stored; so does the browser
    src = reader.size()
    if src.isValid() and (src.width() > size or src.height() > size):
        reader.setScaledSize(src.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))
    img = reader.read()
    if img.isNull():
        img = _load_with_core(path)
        if img.isNull():
            return img
    if img.width() != size and img.height() != size:
        img = img.scaled(
            size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
    return img.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)


def _load_with_core(path: str) -> QImage:
    from lvlmva_desktop.core.data.images import ImageLoadError, read_image

    try:
        a = read_image(path)
    except ImageLoadError as e:
        log.info("no thumbnail for %s: %s", path, e)
        return QImage()
    a8 = np.ascontiguousarray((a * 255.0 + 0.5).astype(np.uint8))
    h, w, c = a8.shape
    fmt = QImage.Format.Format_Grayscale8 if c == 1 else QImage.Format.Format_RGB888
    return QImage(a8.data, w, h, w * c, fmt).copy()  # copy: the QImage must own its pixels


class _Loader(QRunnable):
    """Decodes queued images until the queue is empty, then ends."""

    def __init__(self, cache: ThumbnailCache) -> None:
        super().__init__()
        self.cache = cache

    def run(self) -> None:
        cache = self.cache
        while True:
            with cache._lock:
                if not cache._queue:
                    cache._active -= 1
                    return
                generation, key, path, size, dpr = cache._queue.pop()
            try:
                img = load_thumbnail(path, round(size * dpr))
                img.setDevicePixelRatio(dpr)  # sharp on high-DPI screens
            except Exception:  # noqa: BLE001 - one odd file must not stop the thumbnails
                log.warning("thumbnail of %s failed", path, exc_info=True)
                img = QImage()
            try:
                cache._arrived.emit(generation, key, img)
            except RuntimeError:  # the cache was deleted while we decoded
                return


class ThumbnailCache(QObject):
    """Thumbnails keyed by sample id for one project folder and one size."""

    updated = Signal()  # thumbnails arrived: repaint
    idle = Signal()  # every requested thumbnail is made (the first screen is up)
    _arrived = Signal(int, int, QImage)  # generation, key, image (from the loaders' threads)

    def __init__(self, size: int = 72, threads: int | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = size  # logical pixels
        self.dpr = 1.0  # the screen's device pixel ratio: thumbnails are made at size * dpr pixels
        self.root: Path | None = None
        self._images: OrderedDict[int, QImage] = OrderedDict()
        self._bytes = 0
        self._pending: set[int] = set()
        self._queue: list[tuple[int, int, str, int, float]] = []  # a stack: newest request on top
        self._lock = threading.Lock()
        self._active = 0
        self._generation = 0
        self.requests = 0  # images queued for decoding since the last clear (tests, benchmark)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads or max(2, min(4, QThreadPool.globalInstance().maxThreadCount())))
        self._arrived.connect(self._on_arrived, Qt.ConnectionType.QueuedConnection)
        self._repaint = QTimer(self)
        self._repaint.setSingleShot(True)
        self._repaint.setInterval(REPAINT_MS)
        self._repaint.timeout.connect(self.updated)

    # -- public ------------------------------------------------------------------------------------------
    def set_root(self, root: Path | None) -> None:
        self.root = root
        self.clear()

    def set_size(self, size: int, dpr: float | None = None) -> None:
        dpr = self.dpr if dpr is None else dpr
        if size != self.size or dpr != self.dpr:
            self.size, self.dpr = size, dpr
            self.clear()

    def clear(self) -> None:
        """Forget every thumbnail and queued request (results still in flight are ignored)."""
        with self._lock:
            self._queue.clear()
            self._generation += 1
        self._images.clear()
        self._bytes = 0
        self._pending.clear()
        self.requests = 0

    def get(self, key: int, rel_path: str) -> QImage | None:
        """The thumbnail if made (a null QImage for an unreadable file); else queue it and return None."""
        img = self._images.get(key)
        if img is not None:
            self._images.move_to_end(key)
            return img
        if key not in self._pending and self.root is not None:
            self._request(key, os.path.join(self.root, rel_path))
        return None

    def has(self, key: int) -> bool:
        return key in self._images

    def __len__(self) -> int:
        return len(self._images)

    def shutdown(self, timeout_ms: int = 3000) -> None:
        """Drop the queue and wait for the loaders (called when the pane goes away)."""
        with self._lock:
            self._queue.clear()
            self._generation += 1
        self._pool.waitForDone(timeout_ms)

    # -- internals -----------------------------------------------------------------------------------
    def _request(self, key: int, path: str) -> None:
        self._pending.add(key)
        self.requests += 1
        start = False
        with self._lock:
            self._queue.append((self._generation, key, path, self.size, self.dpr))
            if len(self._queue) > MAX_PENDING:
                dropped = self._queue[: len(self._queue) - MAX_PENDING]
                del self._queue[: len(dropped)]
                self._pending.difference_update(k for _, k, *_ in dropped)
            if self._active < self._pool.maxThreadCount():
                self._active += 1
                start = True
        if start:
            self._pool.start(_Loader(self))

    @Slot(int, int, QImage)
    def _on_arrived(self, generation: int, key: int, img: QImage) -> None:
        if generation != self._generation:
            return
        self._pending.discard(key)
        old = self._images.pop(key, None)
        if old is not None:
            self._bytes -= old.sizeInBytes()
        self._images[key] = img
        self._bytes += img.sizeInBytes()
        while self._bytes > CACHE_BYTES and len(self._images) > 1:
            _, dropped = self._images.popitem(last=False)
            self._bytes -= dropped.sizeInBytes()
        if not self._repaint.isActive():
            self._repaint.start()
        if not self._pending:
            self.idle.emit()


SampleIdRole = Qt.ItemDataRole.UserRole + 1


def empty_table() -> SampleTable:
    z = np.zeros(0, np.int64)
    return SampleTable(z, z.copy(), np.zeros(0, "<U5"), np.zeros(0, "<U1"), np.zeros(0, object))


class BrowserModel(QAbstractListModel):
    """The filtered, sorted rows of the sample table; all per-image facts are numpy arrays."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.table = empty_table()
        self.classes: list[str] = []
        self.rows = np.zeros(0, np.int64)  # table positions, in display order
        self.probs: np.ndarray | None = None
        self.pred: np.ndarray | None = None
        self.wrong = np.zeros(0, bool)
        self.members: np.ndarray | None = None
        self.verdicts: VerdictFlags | None = None
        self.status: dict[int, VerdictStatus] = {}
        self.filter = BrowseFilter()
        self.sort_key = "id"
        self.descending = False

    # -- data in -----------------------------------------------------------------------------------------
    def set_table(self, table: SampleTable, classes: list[str]) -> None:
        self.table, self.classes = table, list(classes)
        self.probs = self.pred = self.members = self.verdicts = None
        self.wrong = np.zeros(len(table), bool)
        self.status = {}
        self.refresh(force_reset=True)

    def set_predictions(self, probs: np.ndarray | None) -> None:
        if probs is not None and len(probs) != len(self.table):
            log.warning("predictions for %d images, table has %d; ignored", len(probs), len(self.table))
            probs = None
        self.probs = probs
        if probs is None:
            self.pred, self.wrong = None, np.zeros(len(self.table), bool)
        else:
            known = ~np.isnan(probs).any(axis=1)
            self.pred = np.where(known, np.nan_to_num(probs).argmax(axis=1), -1)
            self.wrong = known & (self.pred != self.table.labels)
        self.refresh()

    def set_membership(self, members: np.ndarray | None) -> None:
        self.members = members
        self.refresh()

    def set_verdicts(self, status: dict[int, VerdictStatus], flags: VerdictFlags | None) -> None:
        self.status, self.verdicts = status, flags
        self.refresh()

    def set_filter(self, flt: BrowseFilter) -> None:
        self.filter = flt
        self.refresh()

    def set_sort(self, key: str, descending: bool) -> None:
        self.sort_key, self.descending = key, descending
        self.refresh()

    def refresh(self, force_reset: bool = False) -> None:
        """Recompute the rows (vectorised); reset the view only if they changed, else just repaint."""
        rows = select_rows(self.table, self.filter, self.probs, self.members, self.verdicts)
        rows = sort_rows(rows, self.table, self.sort_key, self.descending, self.probs)
        if not force_reset and np.array_equal(rows, self.rows):
            if len(rows):
                self.dataChanged.emit(self.index(0), self.index(len(rows) - 1))
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    # -- data out ----------------------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        pos = int(self.rows[index.row()])
        if role == Qt.ItemDataRole.DisplayRole:
            return f"#{int(self.table.ids[pos])}"
        if role == SampleIdRole:
            return int(self.table.ids[pos])
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.tooltip(pos)
        return None

    def sample_id(self, row: int) -> int:
        return int(self.table.ids[self.rows[row]])

    def row_of(self, sample_id: int) -> int | None:
        """Display row of a sample id, or None when it is filtered out."""
        pos = self.table.position(sample_id)
        if pos is None:
            return None
        hit = np.flatnonzero(self.rows == pos)
        return int(hit[0]) if len(hit) else None

    def cell(self, row: int) -> tuple[int, str, bool, bool, bool]:
        """(sample id, relative path, wrong prediction, in the alignment set, has a spurious verdict)."""
        pos = int(self.rows[row])
        return (
            int(self.table.ids[pos]),
            self.table.paths[pos],
            bool(self.wrong[pos]),
            bool(self.members is not None and self.members[pos]),
            bool(self.verdicts is not None and self.verdicts.spurious[pos]),
        )

    def class_name(self, k: int) -> str:
        return self.classes[k] if 0 <= k < len(self.classes) else str(k)

    def tooltip(self, pos: int) -> str:
        t = self.table
        sid = int(t.ids[pos])
        lines = [
            f"<b>Image #{sid}</b>",
            html.escape(str(t.paths[pos])),
            f"Class: {html.escape(self.class_name(int(t.labels[pos])))} · split: {t.split[pos]}"
            f" · group: {html.escape(str(t.group[pos]) or 'unknown')}",
        ]
        if self.probs is not None and self.pred is not None and self.pred[pos] >= 0:
            conf = float(confidence(self.probs[pos : pos + 1])[0])
            right = "wrong" if self.wrong[pos] else "correct"
            name = html.escape(self.class_name(int(self.pred[pos])))
            lines.append(f"Prediction: {name} ({conf:.0%}), {right}")
        else:
            lines.append("Prediction: not known yet")
        if self.members is not None and self.members[pos]:
            lines.append("In the current alignment set")
        st = self.status.get(sid)
        if st is not None:
            lines.append(f"Verdicts: {html.escape(st.summary())}")
        elif self.verdicts is not None:
            lines.append("Verdicts: no critique")
        return "<br>".join(lines)


def draw_badge(p: QPainter, kind: str, rect: QRect) -> None:
    """One badge, the same in the cells and in the legend (colour plus a letter, not colour alone)."""
    p.save()
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    if kind == "wrong":
        p.setPen(QPen(WRONG, 3))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(rect.adjusted(1, 1, -2, -2))
    else:
        color = MEMBER if kind == "member" else SPURIOUS
        p.setPen(QPen(QColor("white"), 1.2))
        p.setBrush(color)
        if kind == "member":
            p.drawEllipse(rect)
        else:
            p.drawRoundedRect(rect, 3, 3)
        f = QFont(p.font())
        f.setBold(True)
        f.setPixelSize(max(8, int(rect.height() * 0.7)))
        p.setFont(f)
        p.setPen(QColor("white"))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "A" if kind == "member" else "S")
    p.restore()


def badge_pixmap(kind: str, size: int = 14) -> QPixmap:
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    draw_badge(p, kind, QRect(0, 0, size, size))
    p.end()
    return pm


class ThumbnailDelegate(QStyledItemDelegate):
    """Paints a thumbnail (or a placeholder until it is made), its badges and an "#id" caption."""

    def __init__(self, cache: ThumbnailCache, parent=None) -> None:
        super().__init__(parent)
        self.cache = cache
        self.painted_thumbnails = 0  # cells painted with their real thumbnail (benchmark, tests)

    def cell_size(self) -> QSize:
        s = self.cache.size
        return QSize(s + 2 * PAD, s + 2 * PAD + CAPTION)

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return self.cell_size()

    def paint(
        self, p: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        model = index.model()
        sid, path, wrong, member, spurious = model.cell(index.row())
        r = option.rect
        pal = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            p.fillRect(r.adjusted(1, 1, -1, -1), pal.color(QPalette.ColorRole.Highlight))
        s = self.cache.size
        box = QRect(r.x() + (r.width() - s) // 2, r.y() + PAD, s, s)
        img = self.cache.get(sid, path)
        if img is None or img.isNull():
            p.fillRect(box, pal.color(QPalette.ColorRole.Mid).lighter(130))
            if img is not None:  # unreadable file
                p.setPen(pal.color(QPalette.ColorRole.Text))
                p.drawText(box, Qt.AlignmentFlag.AlignCenter, "?")
        else:
            logical = img.deviceIndependentSize().toSize()
            target = QRect(0, 0, logical.width(), logical.height())
            target.moveCenter(box.center())
            p.drawImage(target, img)
            self.painted_thumbnails += 1
        if wrong:  # around the image, in the padding: nothing of the image is covered
            draw_badge(p, "wrong", box.adjusted(-PAD + 1, -PAD + 1, PAD - 1, PAD - 1))
        # the caption row: "#id" on the left, the badges on the right (never over the image)
        cap = QRect(box.left(), box.bottom() + 3, box.width(), CAPTION - 3)
        b = cap.height()
        x = cap.right() + 1
        for kind, on in (("spurious", spurious), ("member", member)):
            if on:
                x -= b
                draw_badge(p, kind, QRect(x, cap.top(), b, b))
                x -= 2
        f = QFont(option.font)
        f.setPixelSize(max(9, b - 1))
        p.setFont(f)
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        p.setPen(pal.color(role))
        text_rect = QRect(cap.left(), cap.top(), x - cap.left() - 1, cap.height())
        text = p.fontMetrics().elidedText(f"#{sid}", Qt.TextElideMode.ElideRight, text_rect.width())
        p.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)


class ThumbnailGrid(QListView):
    """A QListView set up for many uniform cells: icon mode, static, uniform sizes, single selection."""

    def __init__(self, cache: ThumbnailCache, parent=None) -> None:
        super().__init__(parent)
        self.cache = cache
        self.delegate = ThumbnailDelegate(cache, self)
        self.setItemDelegate(self.delegate)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.SinglePass)
        self.setSelectionMode(QListView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QListView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # always there, so the viewport's width (and the columns) does not jump when the rows grow
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.setSpacing(0)
        self.setWordWrap(False)
        self.setMouseTracking(False)
        self.apply_size()
        cache.updated.connect(self.viewport().update)

    def apply_size(self) -> None:
        """Cells of the thumbnail size, widened so the columns fill the width (no ragged right edge)."""
        cell = self.delegate.cell_size()
        width = self.viewport().width()
        cols = max(1, width // cell.width())
        grid = QSize(max(cell.width(), width // cols), cell.height())
        if grid != self.gridSize():
            self.setGridSize(grid)
        self.verticalScrollBar().setSingleStep(max(8, cell.height() // 3))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.apply_size()

    def paintEvent(self, event) -> None:
        dpr = self.viewport().devicePixelRatioF()
        if dpr != self.cache.dpr:  # first shown, or moved to a screen of another pixel density
            self.cache.set_size(self.cache.size, dpr)
        super().paintEvent(event)

    def visible_rows(self) -> list[int]:
        """Rows whose cells intersect the viewport (what a paint would ask thumbnails for)."""
        model = self.model()
        if model is None or model.rowCount() == 0:
            return []
        rect = self.viewport().rect()
        grid = self.gridSize()
        cols = max(1, rect.width() // max(1, grid.width()))
        start = max(0, (self.verticalScrollBar().value() // max(1, grid.height()) - 1) * cols)
        out = []
        for row in range(start, model.rowCount()):
            vr = self.visualRect(model.index(row))
            if vr.top() > rect.bottom():
                break
            if vr.intersects(rect):
                out.append(row)
        return out
