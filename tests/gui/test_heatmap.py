"""The heatmap viewer and verdict editing on a real explained project: what is drawn, what is computed,
what a click stores, undo, linked compare views; screenshots to look at."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from lvlmva_desktop.core.method.pipeline import PipelineSettings
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.core.views.viewer import explain_samples, segment_verdict_rows
from lvlmva_desktop.gui.heatmap import HeatmapPane
from lvlmva_desktop.gui.heatmap_view import overlay_levels
from lvlmva_desktop.gui.jobs import JobRunner
from lvlmva_desktop.gui.session import Session

SLOW = 120_000  # ms: an attribution job on 2 shared CPU cores


@pytest.fixture
def env(qtbot, explained_project):
    session = Session(device="cpu")
    session.open_project(explained_project)
    runner = JobRunner(lambda: session.root)
    errors = []
    session.error.connect(errors.append)
    runner.failed.connect(lambda job, err: errors.append(err))
    pane = HeatmapPane(session, runner)
    qtbot.addWidget(pane)
    pane.resize(700, 600)
    pane.show()
    qtbot.waitExposed(pane)
    yield session, runner, pane, errors
    runner.shutdown(10)
    session.close_project()


def _explanation(session):
    eid = session.explanation_id()
    row, t = session.project.explanation(eid)
    return eid, int(row["model_id"]), t


def _wait_idle(qtbot, runner):
    qtbot.waitUntil(lambda: not runner.is_busy("view"), timeout=SLOW)


def _second_model(session) -> int:
    """A second model version (the original with perturbed weights) to compare against."""
    p = session.project
    module, spec = p.load_model(session.original_model_id())
    torch.manual_seed(1)
    with torch.no_grad():
        for w in module.parameters():
            w.add_(0.05 * torch.randn_like(w))
    mid = p.save_model(module, spec, "small_cnn (perturbed)", "rrr", session.original_model_id(), None)
    session.notify("models")
    return mid


def test_stored_map_and_segments_are_shown_for_an_alignment_image(qtbot, env):
    session, runner, pane, errors = env
    eid, mid, t = _explanation(session)
    k = 3
    sid = int(t["sample_ids"][k])
    session.select_sample(sid)
    view = pane.views[0]
    a = view.attribution
    assert a is not None and a.stored and a.key == ("stored", eid, sid)
    assert not runner.is_busy() and not pane._job_keys  # nothing computed: the project has it
    np.testing.assert_array_equal(view.overlay.image, t["maps"][k].numpy())
    present = sorted(np.unique(t["segments"][k].numpy()).tolist())
    assert [n.textItem.toPlainText()[0] for n in view.numbers] == [str(s + 1) for s in present]
    assert not view.seg_item.path().isEmpty()
    assert f"explanation #{eid}" in view.title.text
    # the table: one row per segment, with the evidence shares and the critic's verdicts
    rows = segment_verdict_rows(session.project, eid, sid)
    assert pane.table.table.rowCount() == len(rows) and pane.table.editable
    assert pane.table.table.item(0, 1).text() == f"{rows[0].evidence:.0%}"
    assert all(pane.table.table.item(i, 5).text() == "critic" for i in range(len(rows)))
    assert view.image_shape() == tuple(t["maps"][k].shape)
    assert errors == []


def test_on_demand_attribution_for_a_test_image(qtbot, env):
    session, runner, pane, errors = env
    _, mid, _ = _explanation(session)
    test_id = session.project.samples("test")[2]["id"]
    with qtbot.waitSignal(runner.finished, timeout=SLOW):
        session.select_sample(test_id)
        assert "Computing" in pane.views[0].title.text
    a = pane.views[0].attribution
    assert a is not None and not a.stored and a.segments is not None
    settings = PipelineSettings()
    want = explain_samples(
        session.project, mid, [test_id], settings.explain, torch.device("cpu"), segment=settings.segment
    )
    np.testing.assert_allclose(pane.views[0].overlay.image, want.maps[0].numpy(), rtol=1e-4, atol=1e-7)
    assert "computed" in pane.views[0].title.text
    assert not pane.table.editable and pane.table.table.rowCount() == len(a.evidence)
    assert not pane.act_spurious.isEnabled()
    # back and forth: the cached attribution is shown again without a new job
    session.select_sample(session.project.samples("train")[0]["id"])
    _wait_idle(qtbot, runner)
    session.select_sample(test_id)
    assert not runner.is_busy() and pane.views[0].attribution.key == a.key
    # another method is computed anew and differs
    with qtbot.waitSignal(runner.finished, timeout=SLOW):
        pane.method_combo.setCurrentIndex(pane.method_combo.findData("input_x_gradient"))
        pane.method_combo.activated.emit(pane.method_combo.currentIndex())
    other = pane.views[0].overlay.image
    assert not np.allclose(other, want.maps[0].numpy())
    assert errors == []


def test_display_controls_change_the_rendered_overlay(qtbot, env):
    session, _, pane, _ = env
    _, _, t = _explanation(session)
    session.select_sample(int(t["sample_ids"][0]))
    ov = pane.views[0].overlay
    amap = t["maps"][0].numpy()
    lo, hi = ov.getLevels()
    assert lo == -hi and hi == pytest.approx(np.percentile(np.abs(amap), 99.0))
    lut = ov.lut.copy()

    pane.clip_spin.setValue(90.0)
    assert ov.getLevels()[1] == pytest.approx(np.percentile(np.abs(amap), 90.0)) and ov.getLevels()[1] < hi
    assert pane.views[0].bar.levels() == pytest.approx(tuple(ov.getLevels()))

    hidden = int((lut[:, 3] == 0).sum())
    pane.threshold_spin.setValue(50.0)
    assert int((ov.lut[:, 3] == 0).sum()) > hidden + 60  # the weaker half of the scale is transparent
    np.testing.assert_array_equal(ov.lut[:, :3], lut[:, :3])

    pane.cmap_combo.setCurrentIndex(1)
    pane.cmap_combo.activated.emit(1)
    assert not np.array_equal(ov.lut[:, :3], lut[:, :3])

    pane.sign_combo.setCurrentIndex(1)  # positive only, with a sequential colour map
    pane.sign_combo.activated.emit(1)
    assert ov.getLevels()[0] == 0 and ov.image.min() >= 0
    assert pane.cmap_combo.currentData() in ("CET-L3", "inferno", "viridis")
    assert overlay_levels(amap, False, 90.0)[1] == pytest.approx(ov.getLevels()[1])

    pane.opacity_slider.setValue(30)
    assert ov.opacity() == pytest.approx(0.3)

    pane.segments_check.setChecked(False)
    assert pane.views[0].numbers == [] and pane.views[0].seg_item.path().isEmpty()
    pane.segments_check.setChecked(True)
    assert pane.views[0].numbers


def test_mask_outline_where_the_data_has_one(qtbot, env):
    session, runner, pane, _ = env
    _, _, t = _explanation(session)
    masked = [r["id"] for r in session.project.samples() if r["mask_path"]]
    plain = [r["id"] for r in session.project.samples() if not r["mask_path"]]
    in_set = [s for s in t["sample_ids"].tolist() if s in masked]
    session.select_sample(in_set[0] if in_set else masked[0])
    _wait_idle(qtbot, runner)
    view = pane.views[0]
    assert not view.mask_item.path().isEmpty()
    rect = view.mask_item.path().boundingRect()
    assert 0 <= rect.left() and rect.right() <= view.image_shape()[1]
    pane.mask_check.setChecked(False)
    assert view.mask_item.path().isEmpty()
    pane.mask_check.setChecked(True)
    session.select_sample(plain[0])
    assert view.mask_item.path().isEmpty()
    _wait_idle(qtbot, runner)


def _pixel_of(segments: np.ndarray, s: int) -> tuple[int, int]:
    rows, cols = np.nonzero(segments == s)
    i = len(rows) // 2
    return int(rows[i]), int(cols[i])


def test_clicking_a_segment_sets_the_expert_verdict_and_undo_restores(qtbot, env, explained_project):
    session, _, pane, errors = env
    eid, _, t = _explanation(session)
    k = 1
    sid = int(t["sample_ids"][k])
    session.select_sample(sid)
    before = segment_verdict_rows(session.project, eid, sid)
    seg = t["segments"][k].long().numpy()
    s = int(np.bincount(seg.ravel()).argmax())  # the largest segment: easy to hit
    critic = before[s].critic
    flipped = "relevant" if critic == "spurious" else "spurious"
    view = pane.views[0]
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.pixel_position(*_pixel_of(seg, s)))
    assert pane.table.selected_segment() == s
    assert pane.verdict_menu.isVisible() and f"Segment {s + 1}" in pane.verdict_menu.actions()[0].text()
    action = pane.act_spurious if flipped == "spurious" else pane.act_relevant
    pane.verdict_menu.hide()
    action.trigger()
    # stored apart from the critic's, seen by another connection
    with Project.open(explained_project) as other:
        assert other.expert_verdicts(eid)[sid] == {s: flipped}
        assert other.effective_verdicts(eid)[sid][s]["source"] == "expert"
    table = pane.table.table
    assert table.item(s, 5).text().startswith("expert")
    assert flipped in table.item(s, 4).text()
    assert table.item(s, 2).text().endswith(critic)  # the critic's word stays visible
    assert table.cellWidget(s, 3).currentData() == flipped
    label = [n for n in view.numbers if n.textItem.toPlainText().startswith(str(s + 1))][0]
    assert (
        "✗" in label.textItem.toPlainText() if flipped == "spurious" else "✓" in label.textItem.toPlainText()
    )
    assert pane.undo_stack.canUndo() and pane.act_take_back.isEnabled()

    pane.undo_stack.undo()
    assert session.project.expert_verdicts(eid).get(sid, {}) == {}
    assert segment_verdict_rows(session.project, eid, sid) == before
    assert table.item(s, 5).text() == "critic"
    pane.undo_stack.redo()
    assert session.project.expert_verdicts(eid)[sid] == {s: flipped}

    # take the expert's word back: the critic's verdict applies again; undo brings the expert's back
    pane.table.select_segment(s)
    pane.act_take_back.trigger()
    assert session.project.expert_verdicts(eid).get(sid, {}) == {}
    assert session.project.effective_verdicts(eid)[sid][s] == {
        "verdict": critic,
        "source": "critic",
        "author": before[s].critic_name,
    }
    pane.undo_stack.undo()
    assert session.project.expert_verdicts(eid)[sid] == {s: flipped}
    assert errors == []


def test_table_combo_and_keyboard_shortcuts(qtbot, env):
    session, _, pane, _ = env
    eid, _, t = _explanation(session)
    sid = int(t["sample_ids"][2])
    session.select_sample(sid)
    table = pane.table.table
    pane.table.select_segment(0)
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_U)
    assert session.project.expert_verdicts(eid)[sid] == {0: "undecided"}
    assert pane.table.selected_segment() == 0  # the selection survives the redraw
    qtbot.keyClick(table, Qt.Key.Key_S)
    assert session.project.expert_verdicts(eid)[sid] == {0: "spurious"}
    combo = table.cellWidget(1, 3)
    combo.setCurrentIndex(combo.findData("relevant"))
    combo.activated.emit(combo.currentIndex())
    assert session.project.expert_verdicts(eid)[sid] == {0: "spurious", 1: "relevant"}
    combo = table.cellWidget(0, 3)
    combo.setCurrentIndex(0)  # "— critic's": take it back
    combo.activated.emit(0)
    assert session.project.expert_verdicts(eid)[sid] == {1: "relevant"}
    assert pane.undo_stack.count() == 4
    while pane.undo_stack.canUndo():
        pane.undo_stack.undo()
    assert session.project.expert_verdicts(eid).get(sid, {}) == {}


def test_no_verdicts_outside_the_alignment_set(qtbot, env):
    session, runner, pane, _ = env
    eid, _, _ = _explanation(session)
    test_id = session.project.samples("test")[0]["id"]
    with qtbot.waitSignal(runner.finished, timeout=SLOW):
        session.select_sample(test_id)
    view = pane.views[0]
    seg = view.attribution.segments
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.pixel_position(*_pixel_of(seg, 0)))
    assert not pane.verdict_menu.isVisible()
    pane.table.select_segment(0)
    assert not pane.act_spurious.isEnabled()
    pane.act_spurious.trigger()
    assert session.project.expert_verdicts(eid) == {} and pane.undo_stack.count() == 0
    assert "not in the alignment set" in pane.info.text()


def test_compare_views_show_each_models_attribution_with_linked_zoom(qtbot, env):
    session, runner, pane, errors = env
    eid, mid, t = _explanation(session)
    second = _second_model(session)
    sid = int(t["sample_ids"][0])
    session.select_sample(sid)
    with qtbot.waitSignal(runner.finished, timeout=SLOW):
        pane.compare_check.setChecked(True)
    assert pane.model_ids() == [mid, second]  # default: the original and the latest aligned model
    a, b = pane.views
    assert a.attribution.stored and not b.attribution.stored
    assert not np.allclose(a.overlay.image, b.overlay.image)
    assert f"model #{second}" in b.title.text
    qtbot.waitUntil(lambda: np.allclose(a.vb.viewRange(), b.vb.viewRange()), timeout=5000)
    assert a.vb.viewRange()[1][0] < 0.5 and a.vb.viewRange()[1][1] > t["maps"].shape[1] - 0.5  # fits
    a.vb.scaleBy((0.5, 0.5))
    qtbot.waitUntil(lambda: np.allclose(a.vb.viewRange(), b.vb.viewRange()), timeout=5000)
    zoomed = np.diff(a.vb.viewRange()[0])[0]
    b.vb.translateBy(x=3, y=2)
    qtbot.waitUntil(lambda: np.allclose(a.vb.viewRange(), b.vb.viewRange()), timeout=5000)
    assert np.diff(b.vb.viewRange()[0])[0] == pytest.approx(zoomed)
    # the same model on both sides shows the same map
    pane.model_combos[1].setCurrentIndex(pane.model_combos[1].findData(mid))
    pane.model_combos[1].activated.emit(pane.model_combos[1].currentIndex())
    np.testing.assert_array_equal(a.overlay.image, b.overlay.image)
    pane.compare_check.setChecked(False)
    assert not pane.columns[1].isVisible()
    assert errors == []


def test_a_failed_attribution_is_told_not_retried(qtbot, env, explained_project):
    session, runner, pane, errors = env
    second = _second_model(session)
    path = session.project.abs(session.project.model_row(second)["path"])
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    sid = int(_explanation(session)[2]["sample_ids"][0])
    session.select_sample(sid)
    with qtbot.waitSignal(runner.failed, timeout=SLOW):
        pane.compare_check.setChecked(True)
    assert "modified on disk" in pane.views[1].title.text
    assert pane.views[0].attribution is not None  # the other view is unaffected
    pane.refresh()
    assert not runner.is_busy()  # not retried until the models or settings change
    assert any("modified on disk" in e.message for e in errors)


@pytest.mark.parametrize("size", [(600, 450), (700, 600), (1400, 1000)])
def test_screenshots(qtbot, env, artifacts_dir, size):
    session, runner, pane, _ = env
    eid, _, t = _explanation(session)
    masked = {r["id"] for r in session.project.samples() if r["mask_path"]}
    ids = t["sample_ids"].tolist()
    sid = next((s for s in ids if s in masked), ids[0])
    _second_model(session)
    pane.resize(*size)
    session.select_sample(sid)
    pane.table.select_segment(0)
    qtbot.wait(200)
    pane.grab().save(str(artifacts_dir / f"heatmap-single-{size[0]}x{size[1]}.png"))
    with qtbot.waitSignal(runner.finished, timeout=SLOW):
        pane.compare_check.setChecked(True)
    qtbot.wait(200)
    pane.grab().save(str(artifacts_dir / f"heatmap-compare-{size[0]}x{size[1]}.png"))
    assert all(v.attribution is not None for v in pane.views)
    pane.compare_check.setChecked(False)
    test_id = session.project.samples("test")[1]["id"]
    pane.sign_combo.setCurrentIndex(1)
    pane.sign_combo.activated.emit(1)
    with qtbot.waitSignal(runner.finished, timeout=SLOW):
        session.select_sample(test_id)
    qtbot.wait(200)
    pane.grab().save(str(artifacts_dir / f"heatmap-test-image-positive-{size[0]}x{size[1]}.png"))


def test_maps_of_an_explanation_from_before_the_new_defaults_keep_its_references_and_evidence(qtbot, env):
    """An explanation recorded before `explain.background` and `segment.evidence` existed was made against
    random training images with segments of the positive part: the viewer computes other images' maps the
    same way and numbers the segments at their positive evidence, whatever the project's settings say."""
    import json

    from lvlmva_desktop.core.method.segment import evidence_map
    from lvlmva_desktop.core.method.settings import ExplainSettings, SegmentSettings
    from lvlmva_desktop.lvlm.render import centres

    session, runner, pane, errors = env
    eid, mid, t = _explanation(session)
    p = session.project
    recorded = json.loads(p.db.execute("SELECT settings FROM explanations WHERE id=?", (eid,)).fetchone()[0])
    recorded["explain"].pop("background")
    recorded["segment"].pop("evidence")
    with p.transaction() as db:
        db.execute("UPDATE explanations SET settings=? WHERE id=?", (json.dumps(recorded), eid))
    session.notify("explanation")
    # the stored map: its numbers sit at the centre of its positive evidence
    sid = int(t["sample_ids"][3])
    session.select_sample(sid)
    a = pane.views[0].attribution
    assert a.stored and a.evidence_kind == "positive"
    seg = torch.from_numpy(a.segments)
    assert a.centres == centres(seg, evidence_map(torch.from_numpy(a.map), "positive"))
    # another image's map: against random training images, segmented on the positive part
    test_id = p.samples("test")[2]["id"]
    with qtbot.waitSignal(runner.finished, timeout=SLOW):
        session.select_sample(test_id)
    old = ExplainSettings(**{**recorded["explain"], "background": "train"})
    want = explain_samples(
        p, mid, [test_id], old, torch.device("cpu"), segment=SegmentSettings(evidence="positive")
    )
    np.testing.assert_allclose(pane.views[0].overlay.image, want.maps[0].numpy(), rtol=1e-4, atol=1e-7)
    assert pane.views[0].attribution.evidence_kind == "positive"
    now = PipelineSettings()
    differs = explain_samples(p, mid, [test_id], now.explain, torch.device("cpu"), segment=now.segment)
    assert not np.allclose(differs.maps[0].numpy(), want.maps[0].numpy())
    assert errors == []
