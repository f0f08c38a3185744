"""The dataset browser: virtualised thumbnails, every filter and sort, selection both ways, screenshots."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from lvlmva_desktop.core.views.browse import SampleTable, verdict_status
from lvlmva_desktop.gui.browser import BrowserPane
from lvlmva_desktop.gui.jobs import JobRunner
from lvlmva_desktop.gui.session import Session
from lvlmva_desktop.gui.thumbnails import BrowserModel, ThumbnailCache, ThumbnailGrid


@pytest.fixture
def open_pane(qtbot):
    made = []

    def make(root, size=(600, 700)):
        session = Session(device="cpu")
        runner = JobRunner(lambda: session.root)
        session.open_project(root)
        pane = BrowserPane(session, runner)
        qtbot.addWidget(pane)
        pane.resize(*size)
        pane.show()
        qtbot.waitExposed(pane)
        made.append((session, runner, pane))
        return session, runner, pane

    yield make
    for session, runner, pane in made:
        runner.shutdown()
        pane.cache.shutdown()
        session.close_project()


def wait_thumbnails(qtbot, grid: ThumbnailGrid, timeout=10000):
    """Until every visible cell's thumbnail is made and a repaint drew them."""
    model = grid.model()
    qtbot.waitUntil(
        lambda: grid.visible_rows() and all(grid.cache.has(model.sample_id(r)) for r in grid.visible_rows()),
        timeout=timeout,
    )
    painted = grid.delegate.painted_thumbnails
    grid.viewport().repaint()
    assert grid.delegate.painted_thumbnails > painted


def wait_predictions(qtbot, pane, timeout=60000):
    qtbot.waitUntil(lambda: pane.model.probs is not None, timeout=timeout)


def shown_ids(pane) -> list[int]:
    m = pane.model
    return [m.sample_id(r) for r in range(m.rowCount())]


def choose(combo, value):
    i = combo.findData(value)
    assert i >= 0, f"{value!r} is not offered"
    combo.setCurrentIndex(i)


# -- virtualisation ----------------------------------------------------------------------------------------
def test_5000_rows_make_thumbnails_only_for_visible_cells(qtbot, tmp_path):
    for i in range(7):
        Image.fromarray(np.full((40, 30, 3), 30 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    n = 5000
    table = SampleTable(
        ids=np.arange(1, n + 1, dtype=np.int64),
        labels=np.arange(n) % 2,
        split=np.full(n, "train"),
        group=np.full(n, ""),
        paths=np.asarray([f"im{i % 7}.png" for i in range(n)], dtype=object),
    )
    cache = ThumbnailCache(64)
    cache.set_root(tmp_path)
    model = BrowserModel()
    model.set_table(table, ["a", "b"])
    grid = ThumbnailGrid(cache)
    grid.setModel(model)
    qtbot.addWidget(grid)
    grid.resize(600, 500)
    grid.show()
    qtbot.waitExposed(grid)
    wait_thumbnails(qtbot, grid)
    visible = len(grid.visible_rows())
    assert 10 <= visible <= 60
    assert cache.requests <= visible + 10 and len(cache) == cache.requests  # nothing made beyond the screen
    img = cache.get(model.sample_id(0), table.paths[0])
    assert max(img.width(), img.height()) == 64 and not img.isNull()  # scaled to the thumbnail size

    grid.scrollTo(model.index(4000))
    wait_thumbnails(qtbot, grid)
    assert model.sample_id(grid.visible_rows()[0]) > 3900
    assert cache.requests <= 2 * visible + 20  # the scrolled-past rows were never decoded
    cache.shutdown()


def test_unreadable_image_gets_a_marker_not_a_retry_loop(qtbot, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    cache = ThumbnailCache(48)
    cache.set_root(tmp_path)
    assert cache.get(1, "bad.png") is None
    qtbot.waitUntil(lambda: cache.has(1), timeout=5000)
    assert cache.get(1, "bad.png").isNull() and cache.requests == 1
    cache.shutdown()


# -- filters and sorts ---------------------------------------------------------------------------------------
def test_data_filters_on_the_demo_project(qtbot, open_pane, demo_project):
    session, _, pane = open_pane(demo_project)
    db = session.project.db
    total = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    assert pane.count_label.text() == f"Showing {total} of {total} images"
    assert not pane.pred_combo.isEnabled() and not pane.correct_combo.isEnabled()  # no model yet
    assert not pane.member_combo.isEnabled() and not pane.verdict_combo.isEnabled()
    assert not pane.sort_combo.model().item(1).isEnabled()  # entropy needs predictions

    choose(pane.class_combo, 1)
    want = [r[0] for r in db.execute("SELECT id FROM samples WHERE label=1 ORDER BY id")]
    assert shown_ids(pane) == want and 0 < len(want) < total
    assert pane.count_label.text() == f"Showing {len(want)} of {total} images"
    choose(pane.split_combo, "test")
    want = [r[0] for r in db.execute("SELECT id FROM samples WHERE label=1 AND split='test' ORDER BY id")]
    assert shown_ids(pane) == want and want
    choose(pane.group_combo, "patch")
    want = [
        r[0]
        for r in db.execute(
            "SELECT id FROM samples WHERE label=1 AND split='test' AND grp='patch' ORDER BY id"
        )
    ]
    assert shown_ids(pane) == want
    pane.reset_filters_action.trigger()
    assert len(shown_ids(pane)) == total
    pane.order_button.setChecked(True)
    assert shown_ids(pane) == sorted(shown_ids(pane), reverse=True)

    choose(pane.size_combo, 112)  # larger thumbnails: bigger cells, remade at the new size, remembered
    assert pane.view.gridSize().height() > 112 and pane.cache.size == 112
    wait_thumbnails(qtbot, pane.view)
    img = pane.cache.get(pane.model.sample_id(pane.view.visible_rows()[0]), "")
    assert max(img.width(), img.height()) == 112
    again = BrowserPane(session, pane.runner)
    qtbot.addWidget(again)
    assert again.cache.size == 112 and again.size_combo.currentData() == 112
    choose(again.size_combo, 72)


def test_prediction_alignment_and_verdict_filters(qtbot, open_pane, explained_project):
    session, _, pane = open_pane(explained_project)
    wait_predictions(qtbot, pane)
    assert pane.pred_combo.isEnabled() and pane.member_combo.isEnabled() and pane.verdict_combo.isEnabled()
    assert "wrong of 360 images" in pane.pred_label.text()
    m = pane.model
    probs, labels = m.probs, m.table.labels
    pred = probs.argmax(1)

    choose(pane.correct_combo, False)
    rows = [m.table.position(s) for s in shown_ids(pane)]
    assert rows and all(pred[r] != labels[r] for r in rows)
    assert len(rows) == int((pred != labels).sum())
    choose(pane.correct_combo, True)
    assert len(shown_ids(pane)) == int((pred == labels).sum())
    choose(pane.pred_combo, 0)
    rows = [m.table.position(s) for s in shown_ids(pane)]
    assert all(pred[r] == 0 and labels[r] == 0 for r in rows)
    pane.reset_filters()

    choose(pane.sort_combo, "confidence")
    pane.order_button.setChecked(True)
    conf = probs.max(1)[[m.table.position(s) for s in shown_ids(pane)]]
    assert np.all(np.diff(conf) <= 1e-7)
    choose(pane.sort_combo, "entropy")
    pane.order_button.setChecked(False)
    p = probs[[m.table.position(s) for s in shown_ids(pane)]]
    ent = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
    assert np.all(np.diff(ent) >= -1e-6)

    members = sorted(r["sample_id"] for r in session.project.alignment_members(session.alignment_set_id()))
    status = verdict_status(session.project, session.explanation_id())
    # the badges and the tooltip of one alignment-set image with a spurious verdict
    sid = next(s for s, st in status.items() if st.n_spurious)
    row = m.row_of(sid)
    pos = m.table.position(sid)
    assert m.cell(row) == (sid, m.table.paths[pos], bool(pred[pos] != labels[pos]), True, True)
    tip = m.data(m.index(row), Qt.ItemDataRole.ToolTipRole)
    for part in (f"Image #{sid}", m.table.paths[pos], "Class:", "group:", "Prediction:", "%", "spurious"):
        assert part in tip
    outsider = next(r for r in range(m.rowCount()) if m.sample_id(r) not in members)
    assert m.cell(outsider)[3:] == (False, False)
    choose(pane.member_combo, True)
    assert sorted(shown_ids(pane)) == members and len(members) == 16
    choose(pane.member_combo, False)
    assert len(shown_ids(pane)) == 360 - 16
    pane.reset_filters()

    choose(pane.verdict_combo, "spurious")
    assert sorted(shown_ids(pane)) == sorted(s for s, st in status.items() if st.n_spurious)
    assert shown_ids(pane)
    choose(pane.verdict_combo, "relevant")
    want = sorted(s for s, st in status.items() if st.n_relevant and not st.n_spurious and not st.n_undecided)
    assert sorted(shown_ids(pane)) == want
    choose(pane.verdict_combo, "none")
    assert len(shown_ids(pane)) == 360 - len(status)

    # the expert overrules the critic on one image: the browser follows the "verdicts" topic
    sid = next(s for s, st in status.items() if st.n_spurious)
    seg = next(
        k
        for k, v in session.project.effective_verdicts(session.explanation_id())[sid].items()
        if v["verdict"] == "spurious"
    )
    session.project.set_expert_verdict(session.explanation_id(), sid, seg, "relevant")
    session.notify("verdicts")
    choose(pane.verdict_combo, "overruled")
    assert shown_ids(pane) == [sid]
    assert "overruled" in pane.model.tooltip(pane.model.table.position(sid))


def test_new_model_recomputes_predictions_and_greys_filters_meanwhile(qtbot, open_pane, explained_project):
    import torch

    from lvlmva_desktop.core.method.models import ModelSpec, build_model

    session, _, pane = open_pane(explained_project)
    wait_predictions(qtbot, pane)
    choose(pane.correct_combo, False)
    first = pane.model.probs.copy()
    torch.manual_seed(3)
    spec = ModelSpec("mlp", 2, 3, (32, 32))
    mid = session.project.save_model(build_model(spec), spec, "other", "imported", None, None)
    session.notify("models")
    assert pane.model.probs is None and not pane.correct_combo.isEnabled()
    assert pane.correct_combo.currentData() is None  # no hidden filter while greyed
    wait_predictions(qtbot, pane)
    assert f"model #{mid}" in pane.pred_label.text() and not np.allclose(pane.model.probs, first)


# -- selection ------------------------------------------------------------------------------------------------
def test_clicking_selects_for_the_session_and_the_browser_follows(qtbot, open_pane, demo_project):
    session, _, pane = open_pane(demo_project)
    view = pane.view
    seen = []
    session.currentSampleChanged.connect(seen.append)
    index = pane.model.index(3)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(index).center())
    assert session.current_sample == pane.model.sample_id(3) and seen == [session.current_sample]

    far = pane.model.sample_id(300)
    session.select_sample(far)
    assert view.currentIndex().row() == 300 and view.selectionModel().isSelected(pane.model.index(300))
    assert view.visualRect(view.currentIndex()).intersects(view.viewport().rect())  # scrolled to it
    assert seen[-1] == far and len(seen) == 2  # following did not emit again

    label = int(pane.model.table.labels[pane.model.table.position(far)])
    choose(pane.class_combo, 1 - label)
    assert f"image #{far} is hidden by the filters" in pane.count_label.text()
    assert not view.selectionModel().hasSelection() and session.current_sample == far
    pane.reset_filters()
    assert pane.model.sample_id(view.currentIndex().row()) == far  # selected again when shown again

    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert session.current_sample == pane.model.sample_id(301)


def test_closing_the_project_empties_the_browser(qtbot, open_pane, demo_project):
    session, _, pane = open_pane(demo_project)
    session.close_project()
    assert pane.model.rowCount() == 0 and pane.count_label.text() == "No project open."
    session.open_project(demo_project)
    assert pane.model.rowCount() == 360


# -- screenshots ----------------------------------------------------------------------------------------------
def test_screenshots(qtbot, open_pane, explained_project, artifacts_dir):
    session, _, pane = open_pane(explained_project, size=(450, 700))
    wait_predictions(qtbot, pane)
    session.select_sample(pane.model.sample_id(7))
    wait_thumbnails(qtbot, pane.view)
    pane.grab().save(str(artifacts_dir / "browser_small.png"))
    pane.resize(360, 700)  # the main window's default dock width
    wait_thumbnails(qtbot, pane.view)
    pane.grab().save(str(artifacts_dir / "browser_narrow.png"))

    pane.resize(1000, 900)
    choose(pane.member_combo, True)
    choose(pane.sort_combo, "confidence")
    wait_thumbnails(qtbot, pane.view)
    pane.grab().save(str(artifacts_dir / "browser_large.png"))
    assert (artifacts_dir / "browser_large.png").stat().st_size > 10_000


def test_predictions_of_a_closed_project_are_not_shown_in_the_next(
    qtbot, open_pane, explained_project, demo_project
):
    session = Session(device="cpu")
    runner = JobRunner(lambda: session.root)
    pane = BrowserPane(session, runner)
    qtbot.addWidget(pane)
    pane.show()
    with qtbot.waitSignal(runner.started, timeout=10000) as started:
        session.open_project(explained_project)
    assert started.args[0].kind == "browser-predictions"
    session.open_project(demo_project)  # no model there; the job's result arrives after this
    qtbot.waitUntil(lambda: not runner.is_busy("background"), timeout=60000)
    assert pane.model.probs is None and not pane.correct_combo.isEnabled()
    assert pane.pred_label.text().startswith("No model yet")
    runner.shutdown()
    pane.cache.shutdown()
    session.close_project()


def test_core_reader_fallback_makes_a_qimage(tmp_path):
    from lvlmva_desktop.gui.thumbnails import _load_with_core

    rgb = np.zeros((6, 4, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((5, 7), 90, np.uint8)).save(tmp_path / "grey.png")
    img = _load_with_core(str(tmp_path / "rgb.png"))
    assert (img.width(), img.height()) == (4, 6) and img.pixelColor(1, 1).red() == 200
    img = _load_with_core(str(tmp_path / "grey.png"))
    assert (img.width(), img.height()) == (7, 5) and img.pixelColor(0, 0).green() == 90
    assert _load_with_core(str(tmp_path / "missing.png")).isNull()


def test_thumbnails_are_made_at_the_screens_pixel_density(qtbot, tmp_path):
    Image.fromarray(np.full((100, 100, 3), 120, np.uint8)).save(tmp_path / "a.png")
    cache = ThumbnailCache(48)
    cache.set_root(tmp_path)
    cache.set_size(48, 2.0)  # a high-DPI screen
    cache.get(1, "a.png")
    qtbot.waitUntil(lambda: cache.has(1), timeout=5000)
    img = cache.get(1, "a.png")
    assert img.width() == 96 and img.deviceIndependentSize().width() == 48
    cache.shutdown()
