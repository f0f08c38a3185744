"""The engine on CUDA: ERM, attribution, PPEPS-WGM and RRR (skipped without a CUDA device)."""

import pytest
import torch

from lvlmva_desktop.core.method.explain import ExplainSettings, attribute
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.method.segment import ppeps_wgm
from lvlmva_desktop.core.method.train import (
    AlignSettings,
    TrainSettings,
    fine_tune_rrr,
    predict_proba,
    train_erm,
)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _toy(n=256, size=16):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g) * 0.2
    y = torch.randint(0, 2, (n,), generator=g)
    x[y == 1, :, 4:12, 4:12] += 0.6  # the real feature
    x[y == 0, :, :3, :3] = 1.0  # a shortcut in the corner
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, :3, :3] = True
    return x, y, masks


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_erm_attribution_segments_and_rrr_on_cuda(arch):
    dev = torch.device("cuda")
    x, y, masks = _toy(size=32 if arch == "resnet18" else 16)
    spec = ModelSpec(arch, 2, 3, tuple(x.shape[-2:]))
    torch.manual_seed(0)
    model = build_model(spec)
    train_erm(model, x, y, TrainSettings(epochs=3, batch_size=32), dev)
    assert next(model.parameters()).device.type == "cuda"
    acc = (predict_proba(model, x, dev).argmax(1) == y).float().mean()
    assert acc > 0.9
    a = attribute(model, x[:8], y[:8], x[8:16], ExplainSettings(), dev)
    a_cpu = attribute(model.cpu(), x[:8], y[:8], x[8:16], ExplainSettings(), torch.device("cpu"))
    assert torch.allclose(a.maps, a_cpu.maps, atol=1e-3, rtol=1e-2)
    # summation-to-delta holds on CUDA as on the CPU (TF32 convolutions broke it: deltas ~5e-4 of the gap)
    assert (a.deltas <= 1e-4 * a.target_gap + 1e-5).all(), (a.deltas, a.target_gap)
    seg = ppeps_wgm(a.maps.to(dev))
    assert seg.labels.device.type == "cuda" and torch.isfinite(seg.weights).all()
    tuned, hist = fine_tune_rrr(
        model, x, y, x[:32], y[:32], masks[:32], AlignSettings(epochs=1, batch_size=32), dev
    )
    assert hist[0].penalty > 0 and next(tuned.parameters()).device.type == "cuda"
