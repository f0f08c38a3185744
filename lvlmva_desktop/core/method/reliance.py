"""Reliance on masked regions: does the prediction change when their content is exchanged?

An input-gradient penalty can be met by flattening the local gradient over a region while the model
still reads it (a tag that switches a saturated unit gives no gradient, yet moving it flips the class).
So the alignment is judged by what the model does, not by its gradient: every masked alignment image is
paired with other training images ("donors") and the content under its mask is exchanged between the two
(the masked image gets the donor's content there, the donor gets the masked content at the same place).
The reliance is the mean total-variation distance between the predicted class distributions before and
after the exchange (0 = the masked regions do not matter, 1 = they decide the class), over both images of
every pair. It needs no test labels and no group labels: only the training images and the masks.

The same exchange is the counterfactual term of the RRR loss (``train.fit``): the exchanged images keep
the labels of the image whose unmasked content they show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

#: donors per masked image when the reliance on whole masks is measured (averaged over many images)
N_DONORS = 4
#: donors per segment when the reliance on one segment is measured (one segment's estimate needs more:
#: with 4 donors two estimates of the same segment correlated only 0.68, with 16 donors 0.90)
N_SEGMENT_DONORS = 16


def exchange(x: torch.Tensor, donors: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap the content under ``masks`` (N, H, W) between ``x`` and ``donors`` (both (N, C, H, W)).

    Returns (x with the donors' content under the mask, donors with x's content under the mask).
    """
    m = masks.to(x.dtype).unsqueeze(1)
    return x * (1 - m) + donors * m, donors * (1 - m) + x * m


def counterfactual_batch(
    xa: torch.Tensor, ya: torch.Tensor, ma: torch.Tensor, xd: torch.Tensor, yd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Counterfactual training images from masked images ``xa`` (labels ``ya``, masks ``ma``) and donors
    ``xd`` (labels ``yd``; one per masked image, ordinary training images): the masked image with the
    donor's content under its mask (label ``ya``), and the donor with the masked content at the same place
    (label ``yd``). Images with an empty mask give none. (Tried and left out: a third kind that moves one
    artefact onto another masked image; it did not help, docs/benchmarks.md.)"""
    has = ma.flatten(1).any(1)
    if not bool(has.any()):
        return xa[:0], ya[:0]
    removed, inserted = exchange(xa[has], xd[has], ma[has])
    return torch.cat([removed, inserted]), torch.cat([ya[has], yd[has]])


@dataclass
class Reliance:
    """Mean change of the prediction (total-variation distance of the class distributions) when masked
    content is exchanged with donors: ``removed`` for the masked images, ``inserted`` for the donors,
    ``mean`` over both; over ``n_images`` masked images with ``n_donors`` donors each."""

    mean: float
    removed: float
    inserted: float
    flipped: float  # share of exchanged images whose predicted class changed
    n_images: int
    n_donors: int

    def to_dict(self) -> dict:
        return asdict(self)


def donor_indices(n_masked: int, n_pool: int, n_donors: int, seed: int) -> torch.Tensor:
    """(n_masked, n_donors) indices into the donor pool, fixed by ``seed`` (the same before and after)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randint(n_pool, (n_masked, n_donors), generator=gen)


def _exchanged_changes(
    model: nn.Module, xa: torch.Tensor, xd: torch.Tensor, masks: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For pairs (xa[i], xd[i]) whose content under masks[i] is exchanged: the total-variation change of
    the prediction of the masked image, of the donor, and whether either predicted class changed."""
    xa2, xd2 = exchange(xa, xd, masks)
    pa, pd, pa2, pd2 = (torch.softmax(model(t.to(device)), dim=1).cpu() for t in (xa, xd, xa2, xd2))
    removed = 0.5 * (pa - pa2).abs().sum(1)
    inserted = 0.5 * (pd - pd2).abs().sum(1)
    flipped = torch.cat([pa.argmax(1) != pa2.argmax(1), pd.argmax(1) != pd2.argmax(1)])
    return removed, inserted, flipped


@torch.no_grad()
def masked_reliance(
    model: nn.Module,
    x: torch.Tensor,
    masks: torch.Tensor,
    pool: torch.Tensor,
    device: torch.device,
    n_donors: int = N_DONORS,
    seed: int = 0,
    batch_size: int = 128,
) -> Reliance | None:
    """Reliance of ``model`` on the masked regions of ``x`` (N, C, H, W) with ``masks`` (N, H, W).

    ``pool``: the images donors are drawn from (the training split). Images with an empty mask are left
    out; None when no image has a mask.
    """
    keep = masks.flatten(1).any(1)
    if not bool(keep.any()) or len(pool) == 0:
        return None
    x, masks = x[keep], masks[keep]
    idx = donor_indices(len(x), len(pool), n_donors, seed)
    was_training = model.training
    model.eval().to(device)
    tv_rem, tv_ins, flips = [], [], []
    rows = torch.arange(len(x)).repeat_interleave(n_donors)
    donors_flat = idx.flatten()
    for s in range(0, len(rows), batch_size):
        r, d = rows[s : s + batch_size], donors_flat[s : s + batch_size]
        removed, inserted, flipped = _exchanged_changes(model, x[r], pool[d], masks[r], device)
        tv_rem.append(removed)
        tv_ins.append(inserted)
        flips.append(flipped)
    model.train(was_training)
    rem, ins = torch.cat(tv_rem), torch.cat(tv_ins)
    return Reliance(
        mean=float(torch.cat([rem, ins]).mean()),
        removed=float(rem.mean()),
        inserted=float(ins.mean()),
        flipped=float(torch.cat(flips).float().mean()),
        n_images=int(len(x)),
        n_donors=int(n_donors),
    )


@torch.no_grad()
def segment_reliance(
    model: nn.Module,
    x: torch.Tensor,
    segments: torch.Tensor,
    flags: torch.Tensor,
    pool: torch.Tensor,
    device: torch.device,
    n_donors: int = N_SEGMENT_DONORS,
    seed: int = 0,
    batch_size: int = 128,
) -> torch.Tensor:
    """(N, J) reliance of ``model`` on each flagged segment of ``x`` alone (``flags`` (N, J) bool; NaN where
    not flagged): the mean total-variation change of the prediction when that segment's content is
    exchanged with ``n_donors`` training images, over both images of each pair."""
    n, j = flags.shape
    out = torch.full((n, j), float("nan"))
    pairs = torch.nonzero(flags.cpu()).tolist()
    if not pairs or len(pool) == 0:
        return out
    idx = donor_indices(len(pairs), len(pool), n_donors, seed)
    was_training = model.training
    model.eval().to(device)
    img = torch.tensor([p[0] for p in pairs]).repeat_interleave(n_donors)
    seg = torch.tensor([p[1] for p in pairs]).repeat_interleave(n_donors)
    don = idx.flatten()
    tv = []
    for s in range(0, len(img), batch_size):
        i, k, d = img[s : s + batch_size], seg[s : s + batch_size], don[s : s + batch_size]
        removed, inserted, _ = _exchanged_changes(
            model, x[i], pool[d], segments[i].long() == k[:, None, None], device
        )
        tv.append(0.5 * (removed + inserted))
    model.train(was_training)
    per_pair = torch.cat(tv).view(len(pairs), n_donors).mean(1)
    for (a, b), v in zip(pairs, per_pair.tolist()):
        out[a, b] = v
    return out
