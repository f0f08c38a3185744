"""One expert's whole loop in the window, by the clicks and keystrokes a user makes.

Open the demo project, set a small alignment set, train (Ctrl+1), sample (Ctrl+2), explain (Ctrl+3),
configure a local LVLM in its dialog (Ctrl+L) and pass its health check, critique with it (Ctrl+4 and the
critic dialog), pick an image in the browser, overrule one verdict by clicking its segment in the viewer,
retrain (Ctrl+5) and read the new metrics in the results view; then close with no job left running.

The LVLM is a tiny Qwen2.5-VL-shaped model overfit to answer one verdict JSON for this project's prompts
(no real weights exist on the test machine), loaded through the real local back-end.
"""

from __future__ import annotations

import json
import threading

import pytest
from fixtures.qt import when_dialog
from fixtures.tiny_lvlm import overfit_for_project
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from lvlmva_desktop.gui.dialogs import CritiqueDialog
from lvlmva_desktop.gui.jobs import LANES
from lvlmva_desktop.gui.lvlm_dialog import LVLMDialog
from lvlmva_desktop.gui.main_window import MainWindow

pytestmark = pytest.mark.slow

TARGET = json.dumps(
    {
        "segments": [
            {"segment": 1, "verdict": "relevant", "reason": "lesion"},
            {"segment": 2, "verdict": "spurious", "reason": "patch"},
            {"segment": 3, "verdict": "relevant", "reason": "lesion"},
            {"segment": 4, "verdict": "relevant", "reason": "border"},
        ]
    }
)


def _ctrl(qtbot, window, key):
    """A keyboard shortcut, as typed into the window (shortcuts go to the active window only)."""
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    qtbot.keyClick(window, key, Qt.KeyboardModifier.ControlModifier)


def _wait_idle(qtbot, window, timeout=180_000):
    qtbot.waitUntil(
        lambda: not window.runner.is_busy("main") and not window.runner.queued("main"), timeout=timeout
    )


def test_the_whole_loop_by_clicks_and_keys(qtbot, demo_project, tmp_path, artifacts_dir):
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1366, 768)
    win.show()
    qtbot.waitExposed(win)
    errors = []
    win.session.error.connect(errors.append)
    win.runner.failed.connect(lambda job, e: errors.append(e))
    assert win.open_project(demo_project)
    s = win.session

    # settings a user types into the training pane: a small alignment set, short training
    w = win.training.widgets
    w[("sampling", "n")].setValue(12)
    w[("train", "epochs")].setValue(3)
    w[("align", "epochs")].setValue(2)
    assert s.pipeline_settings().sampling.n == 12

    started = []
    win.runner.started.connect(lambda job: started.append(job.kind))
    _ctrl(qtbot, win, Qt.Key.Key_1)  # train
    assert started == ["train"], errors
    _wait_idle(qtbot, win)
    assert s.original_model_id() is not None, errors
    _ctrl(qtbot, win, Qt.Key.Key_2)  # sample
    _wait_idle(qtbot, win)
    assert s.alignment_set_id() is not None, errors
    _ctrl(qtbot, win, Qt.Key.Key_3)  # explain
    _wait_idle(qtbot, win)
    eid = s.explanation_id()
    assert eid is not None, errors

    # the LVLM: point the dialog at the folder, run its health check, keep it
    # the model folder the expert will point the dialog at (test set-up, not a user action)
    model_dir = overfit_for_project(demo_project, tmp_path / "qwen-tiny", TARGET)
    checked = {}

    def configure(dlg: LVLMDialog):
        dlg.local_radio.setChecked(True)
        dlg.folder_edit.setText(str(model_dir))
        qtbot.mouseClick(dlg.check_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dlg.last_report is not None, timeout=120_000)
        checked["ok"] = dlg.last_report.ok
        dlg.grab().save(str(artifacts_dir / "loop_lvlm_dialog.png"))
        qtbot.mouseClick(dlg.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)

    when_dialog(LVLMDialog, configure)
    _ctrl(qtbot, win, Qt.Key.Key_L)
    assert checked == {"ok": True}
    assert s.lvlm_config() is not None and s.lvlm_config().folder == str(model_dir)

    # critique with the LVLM: Ctrl+4, the dialog offers the configured model first
    chosen = []

    def choose(dlg: CritiqueDialog):
        chosen.append(dlg.choice())
        dlg.grab().save(str(artifacts_dir / "loop_critique_dialog.png"))
        dlg.accept()

    when_dialog(CritiqueDialog, choose)
    _ctrl(qtbot, win, Qt.Key.Key_4)
    assert chosen == [("lvlm", 0.87)], errors
    _wait_idle(qtbot, win, timeout=300_000)
    run = s.project.db.execute("SELECT * FROM runs WHERE kind='critique' ORDER BY id DESC").fetchone()
    assert run["status"] == "finished", (run["error"], errors)
    critic = json.loads(run["settings"])["critic"]
    assert critic["kind"] == "lvlm" and critic["model"]["folder"] == str(model_dir), critic
    eff = s.project.effective_verdicts(eid)
    assert len(eff) == 12 and all(v["source"] == "critic" for segs in eff.values() for v in segs.values())
    spurious = sum(v["verdict"] == "spurious" for segs in eff.values() for v in segs.values())
    assert spurious >= 6, "the overfit LVLM calls segment 2 spurious on (nearly) every image"

    # pick an alignment image in the browser, then overrule its segment-2 verdict in the viewer
    members = [r["sample_id"] for r in s.project.alignment_members(s.alignment_set_id())]
    view = win.browser.view
    model = win.browser.model
    row = next(r for r in range(model.rowCount()) if model.sample_id(r) in members)
    index = model.index(row, 0)
    view.scrollTo(index)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(index).center())
    sid = s.current_sample
    assert sid in members
    _, t = s.project.explanation(eid)
    k = t["sample_ids"].tolist().index(sid)
    seg = t["segments"][k].long().numpy()
    target = max(range(int(seg.max()) + 1), key=lambda j: (seg == j).sum())  # the largest segment
    critic_word = eff[sid][target]["verdict"]
    flipped = "relevant" if critic_word == "spurious" else "spurious"
    ys, xs = (seg == target).nonzero()
    hv = win.heatmap.views[0]
    qtbot.waitUntil(lambda: hv.isVisible(), timeout=5000)
    mid = len(ys) // 2
    qtbot.mouseClick(
        hv.viewport(), Qt.MouseButton.LeftButton, pos=hv.pixel_position(int(ys[mid]), int(xs[mid]))
    )
    assert win.heatmap.table.selected_segment() == target
    win.heatmap.verdict_menu.hide()
    (win.heatmap.act_spurious if flipped == "spurious" else win.heatmap.act_relevant).trigger()
    assert s.project.effective_verdicts(eid)[sid][target] == {
        "verdict": flipped,
        "source": "expert",
        "author": s.project.effective_verdicts(eid)[sid][target]["author"],
    }
    win.grab().save(str(artifacts_dir / "loop_main_after_override_1366.png"))

    _ctrl(qtbot, win, Qt.Key.Key_5)  # retrain with the verdicts (then evaluates both models)
    _wait_idle(qtbot, win)
    aligned = s.aligned_model_id()
    assert aligned is not None, errors
    align_run = s.project.db.execute("SELECT * FROM runs WHERE kind='align' ORDER BY id DESC").fetchone()
    assert json.loads(align_run["results"])["mask_stats"]["expert_overrides"] == 1

    # the results view shows both models' metrics, from the project
    win.docks["results"].raise_()
    qtbot.waitUntil(
        lambda: win.results.summary.item(0, 1) is not None and win.results.summary.item(0, 1).text() != "",
        timeout=10_000,
    )
    from lvlmva_desktop.core.method.metrics import comparison

    cmp = comparison(s.project, s.original_model_id(), aligned)
    assert win.results.summary.item(0, 0).text() == f"{cmp['before']['accuracy']:.1%}"
    assert win.results.summary.item(0, 1).text() == f"{cmp['after']['accuracy']:.1%}"
    win.grab().save(str(artifacts_dir / "loop_main_results_1366.png"))
    assert [e for e in errors if e.kind != "cancelled"] == []

    win.close()
    assert not win.runner.is_busy() and not any(win.runner.queued(lane) for lane in LANES)
    assert win.browser.cache._pool.activeThreadCount() == 0
    assert s.project is None
    qtbot.waitUntil(lambda: win.runner.live_threads() == 0, timeout=10_000)
    # no Python thread of ours left behind (daemon helpers of libraries, e.g. tqdm's monitor, aside)
    assert [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()] == []
