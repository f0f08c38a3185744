"""Defect of issue 13: the retraining curve's axis read "epoch (x0.001)" with ticks 40-120 (pyqtgraph's
automatic SI prefix, for a retraining shown within its first epoch). The axes are in plain epochs now."""

from __future__ import annotations

import pytest

from lvlmva_desktop.gui.training_widgets import Curves

SHOTS = "/tmp/shots"


def _ticks(axis) -> list[float]:
    lo, hi = axis.range
    values = [v for _, vs in axis.tickValues(lo, hi, axis.width()) for v in vs]
    spacing = (hi - lo) / 4
    return [float(t.replace("−", "-")) for t in axis.tickStrings(values, axis.autoSIPrefixScale, spacing)]


@pytest.mark.parametrize("steps_per_epoch", [1000, 10])
def test_curve_axes_are_in_plain_epochs(qtbot, steps_per_epoch):
    curves = Curves()
    qtbot.addWidget(curves)
    curves.resize(700, 300)
    curves.show()
    qtbot.waitExposed(curves)
    curves.clear(1.0)
    steps = range(40, 121, 4) if steps_per_epoch == 1000 else range(1, 31)
    for k in steps:  # 0.04 to 0.12 epochs (a retraining's first batches), or 0.1 to 3 epochs
        curves.add(
            {
                "kind": "step",
                "step": k,
                "steps_per_epoch": steps_per_epoch,
                "loss": 0.002 / k,
                "penalty": 0.0001,
                "train_accuracy": 0.9,
            }
        )
    qtbot.wait(100)
    curves.grab().save(f"{SHOTS}/curves-{steps_per_epoch}.png")
    xmax = max(steps) / steps_per_epoch
    for plot in (curves.loss_plot, curves.acc_plot):
        bottom = plot.getAxis("bottom")
        assert "x0.001" not in bottom.labelString() and "(x" not in bottom.labelString()
        assert "epoch" in bottom.labelString()
        assert bottom.autoSIPrefixScale == 1.0
        ticks = _ticks(bottom)
        assert ticks and all(-0.01 <= t <= 1.2 * xmax + 0.01 for t in ticks), ticks  # epochs, not 40-120
        left = plot.getAxis("left")
        assert left.autoSIPrefixScale == 1.0 and "(x" not in left.labelString()
