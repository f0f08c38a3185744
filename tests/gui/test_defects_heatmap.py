"""Defects a user found in the heatmap viewer (issue 13): segment numbers that cover each other, compare
views that scale their colours separately, and a verdict row whose segment is not shown on hover."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from lvlmva_desktop.gui.heatmap_view import Attribution, AttributionView, Display, edge_path, overlay_levels

SLOW = 120_000  # ms: an attribution job on 2 shared CPU cores
SHOTS = "/tmp/shots"


def _nested_segments(n: int = 32) -> np.ndarray:
    """A disc inside a ring inside the background, and a small square beside the disc: the centres of the
    disc, the ring and the background coincide (as segments 1 and 4 of the demo's image #1 did)."""
    rr, cc = np.mgrid[0:n, 0:n]
    d = np.hypot(rr - n / 2 + 0.5, cc - n / 2 + 0.5)
    seg = np.zeros((n, n), dtype=np.int64)
    seg[d < 9] = 2  # ring
    seg[d < 5] = 1  # disc
    seg[14:18, 21:24] = 3  # a small square at the disc's edge, inside the ring
    return seg


def _label_rects(view: AttributionView):
    view.grab()  # a paint: the labels take their screen size and place
    return [n.sceneBoundingRect() for n in view.numbers]


def _assert_apart(rects) -> None:
    for (i, a), (j, b) in itertools.combinations(enumerate(rects), 2):
        assert not a.intersects(b), f"labels {i + 1} and {j + 1} overlap: {a} and {b}"


@pytest.mark.parametrize("size", [(420, 420), (200, 180)])
def test_segment_numbers_do_not_overlap(qtbot, size):
    seg = _nested_segments()
    amap = np.ones(seg.shape, dtype=np.float32)
    a = Attribution(("stored", 1, 1), amap, seg, [0.4, 0.3, 0.2, 0.1], True, "test")
    # today's anchors coincide: this is the collision the user saw
    assert all(np.allclose(a.centres[0], a.centres[s], atol=1.0) for s in (1, 2))
    view = AttributionView()
    qtbot.addWidget(view)
    view.resize(*size)
    view.show()
    qtbot.waitExposed(view)
    image = np.full((*seg.shape, 3), 128, dtype=np.uint8)
    view.show_content(image, a, Display(), "test", verdicts={0: "relevant", 1: "spurious", 2: None, 3: None})
    qtbot.wait(50)
    assert len(view.numbers) == 4
    rects = _label_rects(view)
    view.grab().save(f"{SHOTS}/labels-nested-{size[0]}x{size[1]}.png")
    _assert_apart(rects)
    if size[0] > 300:  # with room, every number sits inside its own segment
        for s, n in enumerate(view.numbers):
            p = n.pos()
            assert seg[int(np.floor(p.y())), int(np.floor(p.x()))] == s, (
                f"label {s + 1} is outside its segment"
            )
    # zooming out makes the labels larger than the image's pixels: they move apart again
    view.vb.scaleBy((3.0, 3.0))
    qtbot.wait(50)
    _assert_apart(_label_rects(view))


# -- the pane on a real explained project --------------------------------------------------------------------
# the viewer pane on a real explained project, as the viewer's other tests have it
from test_heatmap import env  # noqa: E402, F401


def _weak_model(session) -> int:
    """A second model version whose logits are the original's times 0.2: the same evidence, 5x weaker."""
    p = session.project
    module, spec = p.load_model(session.original_model_id())
    last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(0.2)
        last.bias.mul_(0.2)
    mid = p.save_model(module, spec, "small_cnn (weaker)", "rrr", session.original_model_id(), None)
    session.notify("models")
    return mid


def test_compare_views_share_one_colour_scale(qtbot, env):
    session, runner, pane, errors = env
    pane.resize(900, 700)
    eid = session.explanation_id()
    _, t = session.project.explanation(eid)
    _weak_model(session)
    session.select_sample(int(t["sample_ids"][0]))
    with qtbot.waitSignal(runner.finished, timeout=SLOW):
        qtbot.mouseClick(pane.compare_check, Qt.MouseButton.LeftButton)
    a, b = pane.views
    assert a.attribution is not None and b.attribution is not None
    own = [overlay_levels(v.attribution.map, True, 99.0)[1] for v in (a, b)]
    assert own[1] < 0.5 * own[0]  # the retrained side's own scale would be far smaller
    shared = max(own)
    assert a.overlay.getLevels() == pytest.approx((-shared, shared))
    assert b.overlay.getLevels() == pytest.approx((-shared, shared))
    assert a.bar.levels() == pytest.approx(b.bar.levels())
    assert f"colour scale ±{shared:.2g}, shared by both views" in pane.info.text()
    pane.grab().save(f"{SHOTS}/compare-shared-scale.png")
    # one view again: its own scale, said as such
    qtbot.mouseClick(pane.compare_check, Qt.MouseButton.LeftButton)
    assert a.overlay.getLevels() == pytest.approx((-own[0], own[0]))
    assert "shared" not in pane.info.text() and f"colour scale ±{own[0]:.2g}" in pane.info.text()
    assert errors == []


def _row_centre(table, row: int) -> QPoint:
    return table.visualRect(table.model().index(row, 1)).center()


def test_hovering_a_verdict_row_outlines_its_segment(qtbot, env):
    session, runner, pane, errors = env
    pane.resize(900, 700)
    eid = session.explanation_id()
    _, t = session.project.explanation(eid)
    k = 2
    session.select_sample(int(t["sample_ids"][k]))
    seg = t["segments"][k].long().numpy()
    present = sorted(np.unique(seg).tolist())
    assert len(present) >= 2
    view, table = pane.views[0], pane.table.table
    hovered = []
    pane.table.segmentHovered.connect(hovered.append)
    assert view.hover_item.path().isEmpty()
    for s in present[:2]:
        QTest.mouseMove(table.viewport(), _row_centre(table, s))
        qtbot.waitUntil(lambda s=s: hovered and hovered[-1] == s, timeout=2000)
        want = edge_path(seg == s, border=True).boundingRect()
        assert not view.hover_item.path().isEmpty()
        assert view.hover_item.path().boundingRect() == want
        assert view.hover_item.isVisible()
    pane.grab().save(f"{SHOTS}/verdict-row-hover.png")
    # leaving the table takes the outline away
    QTest.mouseMove(pane.info, QPoint(5, 5))
    qtbot.waitUntil(lambda: hovered[-1] == -1, timeout=2000)
    assert view.hover_item.path().isEmpty()
    # selecting a row (a click) outlines it as before
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=_row_centre(table, present[1]))
    assert pane.table.selected_segment() == present[1]
    assert view.sel_item.path().boundingRect() == edge_path(seg == present[1], border=True).boundingRect()
    assert errors == []
