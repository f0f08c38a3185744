"""Reliance on masked regions (core/method/reliance.py): the exchange of masked content, the counterfactual
images of the penalty, and the measured change of the prediction."""

import torch
from torch import nn

from lvlmva_desktop.core.method.reliance import (
    counterfactual_batch,
    exchange,
    masked_reliance,
    segment_reliance,
)


class PixelReader(nn.Module):
    """Class 1 if pixel (0, 0) is bright, else class 0 (a model that reads one pixel: a shortcut)."""

    def __init__(self, row: int = 0, col: int = 0, scale: float = 20.0) -> None:
        super().__init__()
        self.row, self.col, self.scale = row, col, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, self.row, self.col] - 0.5
        return torch.stack([-self.scale * v, self.scale * v], 1)


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g) * 0.2
    x[::2, 0, 0, 0] = 1.0  # every other image has a bright corner pixel
    return x


def test_exchange_swaps_only_the_masked_content():
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[0, :2, :2] = True
    a2, b2 = exchange(a, b, m)
    assert a2[0, :, :2, :2].eq(1).all() and a2[0, :, 2:, :].eq(0).all() and a2[1].eq(0).all()
    assert b2[0, :, :2, :2].eq(0).all() and b2[0, :, 2:, :].eq(1).all() and b2[1].eq(1).all()


def test_counterfactual_batch_keeps_the_labels_of_the_unmasked_content():
    xa, xd = torch.zeros(3, 1, 4, 4), torch.ones(3, 1, 4, 4)
    ya, yd = torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1])
    ma = torch.zeros(3, 4, 4, dtype=torch.bool)
    ma[0, 0, 0] = ma[2, 1, 1] = True  # image 1 has no mask: no counterfactual from it
    x, y = counterfactual_batch(xa, ya, ma, xd, yd)
    assert x.shape == (4, 1, 4, 4) and y.tolist() == [0, 0, 1, 1]
    assert x[0, 0, 0, 0] == 1 and x[0].sum() == 1  # the masked image with the donor's pixel
    assert x[2, 0, 0, 0] == 0 and x[2].sum() == 15  # the donor with the masked image's pixel
    none_x, none_y = counterfactual_batch(xa, ya, torch.zeros_like(ma), xd, yd)
    assert len(none_x) == 0 and len(none_y) == 0


def test_reliance_is_high_for_a_model_that_reads_the_masked_pixel_and_zero_for_one_that_does_not():
    x = _images()
    masks = torch.zeros(8, 6, 6, dtype=torch.bool)
    masks[:, 0, 0] = True
    pool = _images(32, seed=1)
    reads = masked_reliance(PixelReader(0, 0), x, masks, pool, torch.device("cpu"), seed=0)
    ignores = masked_reliance(PixelReader(3, 3), x, masks, pool, torch.device("cpu"), seed=0)
    assert reads is not None and ignores is not None
    assert reads.mean > 0.3 and reads.flipped > 0.3
    assert ignores.mean == 0.0 and ignores.flipped == 0.0
    assert reads.n_images == 8 and reads.n_donors == 4
    # the same pairs each time (a fixed seed): before and after alignment compare like with like
    again = masked_reliance(PixelReader(0, 0), x, masks, pool, torch.device("cpu"), seed=0)
    assert again.mean == reads.mean


def test_reliance_leaves_out_images_without_a_mask():
    x = _images()
    masks = torch.zeros(8, 6, 6, dtype=torch.bool)
    assert masked_reliance(PixelReader(), x, masks, x, torch.device("cpu")) is None
    masks[3, 0, 0] = True
    r = masked_reliance(PixelReader(), x, masks, x, torch.device("cpu"))
    assert r is not None and r.n_images == 1


def test_segment_reliance_measures_each_flagged_segment_alone():
    x = _images()
    seg = torch.ones(8, 6, 6, dtype=torch.long)
    seg[:, :3, :3] = 0  # segment 0 holds the pixel the model reads
    flags = torch.zeros(8, 2, dtype=torch.bool)
    flags[:, 0] = True
    flags[0, 1] = True
    rel = segment_reliance(PixelReader(0, 0), x, seg, flags, _images(32, 1), torch.device("cpu"))
    assert rel.shape == (8, 2)
    assert float(rel[:, 0].mean()) > 0.2
    assert rel[0, 1] == 0.0  # the other segment does not matter to the model
    assert torch.isnan(rel[1:, 1]).all()  # not flagged: not measured
