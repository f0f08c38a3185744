"""The verdict consistency check (core/method/consistency.py): stray "spurious" verdicts on segments that look like
segments judged relevant elsewhere are held back from the masks; consistent artefact verdicts are kept."""

import pytest
import torch

from lvlmva_desktop.core.method.consistency import (
    masks_from_flags,
    segment_descriptors,
    verdict_consistency,
    verdict_masks,
)
from lvlmva_desktop.core.method.critic import SegmentVerdict, segment_mask
from lvlmva_desktop.core.method.settings import AlignSettings

N, H, W = 40, 16, 16
WRONG = (3, 17, 30)  # lesion segments the critic wrongly judges spurious


def synthetic_set(seed: int = 0):
    """Segment 0: a brown lesion on the left half; segment 1: the right half, which holds a vivid patch
    (green or blue, several shades) in the first 24 images and plain skin otherwise. The critic judges the
    patches spurious and everything else relevant, except three lesion segments it wrongly calls spurious."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(N, 3, H, W)
    skin = torch.tensor([0.9, 0.75, 0.65])
    x[:] = skin[None, :, None, None] + 0.03 * torch.randn(N, 3, H, W, generator=g)
    lesion = torch.tensor([0.45, 0.3, 0.2])[None, :] + 0.05 * torch.randn(N, 3, generator=g)
    x[:, :, 4:12, 1:7] = lesion[:, :, None, None] + 0.03 * torch.randn(N, 3, 8, 6, generator=g)
    colours = torch.tensor([[0.1, 0.8, 0.2], [0.1, 0.3, 0.9]])
    patched = torch.arange(N) < 24
    for n in range(24):
        c = colours[n % 2] + 0.05 * torch.randn(3, generator=g)
        x[n, :, 5:10, 10:15] = c[:, None, None]
    x = x.clamp(0, 1)
    seg = torch.zeros(N, H, W, dtype=torch.long)
    seg[:, :, 8:] = 1
    attr = torch.zeros(N, H, W)
    attr[:, 4:12, 1:7] = 1.0  # the lesion's evidence
    attr[patched, 5:10, 10:15] = 2.0  # the patch's evidence
    attr[~patched, 8:12, 9:13] = 0.2  # some evidence on plain skin
    spurious = torch.zeros(N, 2, dtype=torch.bool)
    spurious[patched, 1] = True
    for n in WRONG:
        spurious[n, 0] = True
    return x, attr, seg, spurious


def _check(x, attr, seg, spurious, protected=None, **kw):
    settings = AlignSettings(**kw)
    protected = torch.zeros_like(spurious) if protected is None else protected
    return verdict_masks(x, attr, seg, spurious, torch.ones_like(spurious), protected, settings)


def test_stray_spurious_verdicts_on_the_lesion_are_held_back_patches_kept():
    x, attr, seg, spurious = synthetic_set()
    masks, check = _check(x, attr, seg, spurious)
    assert check is not None
    held = {tuple(p) for p in torch.nonzero(check.held).tolist()}
    assert held == {(n, 0) for n in WRONG}
    # every patch stays in the mask, no lesion pixel does
    assert bool(masks[:24, 5:10, 10:15].all())
    assert not bool(masks[:, 4:12, 1:7].any())
    assert check.held_list(list(range(100, 100 + N))) == [(100 + n, 0) for n in WRONG]
    # the shares behind it: patches among patches, the wrong ones among lesions
    assert float(check.share[0, 1]) >= 0.9 and all(float(check.share[n, 0]) < 0.5 for n in WRONG)
    assert torch.isnan(check.share[~spurious]).all()  # relevant verdicts are not checked


def test_expert_verdicts_are_never_held_back():
    x, attr, seg, spurious = synthetic_set()
    protected = torch.zeros_like(spurious)
    protected[WRONG[0], 0] = True  # the expert says: this lesion segment is spurious after all
    masks, check = _check(x, attr, seg, spurious, protected)
    held = {tuple(p) for p in torch.nonzero(check.held).tolist()}
    assert held == {(n, 0) for n in WRONG[1:]}
    assert bool(masks[WRONG[0], 4:12, 1:7].all())


def test_switched_off_is_the_union_of_spurious_segments():
    x, attr, seg, spurious = synthetic_set()
    masks, check = _check(x, attr, seg, spurious, consistency_check=False)
    assert check is None
    old = torch.stack(
        [
            segment_mask(
                seg[n], [SegmentVerdict(j, "spurious" if spurious[n, j] else "relevant") for j in range(2)]
            )
            for n in range(N)
        ]
    )
    assert torch.equal(masks, old) and torch.equal(masks_from_flags(seg, spurious), old)


def test_deterministic_and_one_sided():
    x, attr, seg, spurious = synthetic_set()
    m1, c1 = _check(x, attr, seg, spurious)
    m2, c2 = _check(x.clone(), attr.clone(), seg.clone(), spurious.clone())
    assert torch.equal(m1, m2) and torch.equal(c1.held, c2.held)
    assert torch.equal(c1.share.nan_to_num(-1), c2.share.nan_to_num(-1))
    off, _ = _check(x, attr, seg, spurious, consistency_check=False)
    assert not bool((m1 & ~off).any())  # only ever removes pixels from a mask
    assert not bool((c1.held & ~spurious).any())


def test_undecided_segments_are_neither_checked_nor_neighbours():
    desc = torch.tensor([[[0.0], [5.0]], [[0.1], [5.1]], [[0.2], [5.2]]])  # (N=3, J=2, D=1)
    # image 1's segment 0 carries a "spurious" flag but is undecided: it must count for nothing
    spurious = torch.tensor([[True, False], [True, False], [False, True]])
    decided = torch.tensor([[True, True], [False, True], [True, True]])
    res = verdict_consistency(desc, spurious, decided, torch.zeros_like(spurious), k=1, threshold=0.5)
    # nearest decided neighbours of other images: (2, 0) for (0, 0), (1, 1) for (2, 1), both relevant
    assert res.held.tolist() == [[True, False], [False, False], [False, True]]
    assert torch.isnan(res.share[1, 0]) and float(res.share[0, 0]) == 0.0
    # k is capped at half the "spurious" verdicts on other images (here 1): k=10 acts as k=1
    res10 = verdict_consistency(desc, spurious, decided, torch.zeros_like(spurious), k=10, threshold=0.5)
    assert torch.equal(res10.held, res.held)


def test_few_artefact_segments_can_still_agree():
    """Five patches (two colours) among 32 segments: with k=10 no patch could have half its neighbours
    spurious, so k is capped at half the other "spurious" verdicts and the patches are kept."""
    x, attr, seg, spurious = synthetic_set()
    keep = torch.cat([torch.arange(5), torch.arange(24, 35)])  # 5 patched images, 11 plain ones
    x, attr, seg, spurious = x[keep], attr[keep], seg[keep], spurious[keep]
    spurious[:, 0] = False  # no wrong verdicts
    _, check = _check(x, attr, seg, spurious, consistency_min_spurious=1)
    assert not bool(check.held.any())


def test_too_few_spurious_verdicts_to_compare_hold_nothing_back():
    """Under consistency_min_spurious (20) "spurious" verdicts there is no group to agree with."""
    x, attr, seg, spurious = synthetic_set()
    keep = torch.cat([torch.arange(5), torch.arange(24, 35)])
    x, attr, seg, spurious = x[keep], attr[keep], seg[keep], spurious[keep]
    assert int(spurious.sum()) < 20
    masks, check = _check(x, attr, seg, spurious)
    plain, _ = _check(x, attr, seg, spurious, consistency_check=False)
    assert check is None and torch.equal(masks, plain)
    _, lowered = _check(x, attr, seg, spurious, consistency_min_spurious=1)
    assert lowered is not None


def test_default_is_recorded_with_the_align_settings():
    d = AlignSettings().to_dict()
    assert d["consistency_check"] is True and d["consistency_k"] == 10 and d["consistency_threshold"] == 0.5
    assert AlignSettings.from_dict({**d, "consistency_check": False}).consistency_check is False


def test_enrichment_keeps_a_small_consistent_group_among_many_relevant_segments():
    """Where the critic judges few segments spurious (a model that hardly used the artefact), a segment
    whose neighbours are spurious far more often than the set's base rate agrees with them, even below
    half: the threshold falls to ``consistency_enrichment`` times the base rate."""
    g = torch.Generator().manual_seed(1)
    n, j = 60, 4
    desc = torch.randn(n, j, 3, generator=g)
    desc[:8, 3] = torch.tensor([6.0, 6.0, 6.0]) + 0.05 * torch.randn(8, 3, generator=g)  # the artefact
    desc[8:16, 3] = torch.tensor([6.0, 6.0, 6.0]) + 0.05 * torch.randn(8, 3, generator=g)  # look-alikes
    spurious = torch.zeros(n, j, dtype=torch.bool)
    spurious[:8, 3] = True  # 8 of 240 decided segments: base rate 3%; neighbours ~ 7 of 15 spurious
    decided = torch.ones_like(spurious)
    plain = verdict_consistency(desc, spurious, decided, torch.zeros_like(spurious), k=10, threshold=0.5)
    enriched = verdict_consistency(
        desc, spurious, decided, torch.zeros_like(spurious), k=10, threshold=0.5, enrichment=2.0
    )
    assert bool(plain.held[:8, 3].any())  # the plain majority rule holds some back
    assert not bool(enriched.held.any())  # 2 x 3% = 7%: every one of them agrees with its group


def test_segments_the_model_does_not_rely_on_are_not_held_back():
    x, attr, seg, spurious = synthetic_set()
    asked = []

    def reliance(flags):
        asked.append(flags.clone())
        rel = torch.full(flags.shape, float("nan"))
        rel[flags] = 0.5
        rel[WRONG[0], 0] = 0.01  # the model hardly uses this lesion segment: masking it costs nothing
        return rel

    settings = AlignSettings()
    masks, check = verdict_masks(
        x, attr, seg, spurious, torch.ones_like(spurious), torch.zeros_like(spurious), settings, reliance
    )
    held = {tuple(p) for p in torch.nonzero(check.held).tolist()}
    assert held == {(n, 0) for n in WRONG[1:]}
    # only the segments the neighbours would hold back were measured
    assert {tuple(p) for p in torch.nonzero(asked[0]).tolist()} == {(n, 0) for n in WRONG}
    assert float(check.reliance[WRONG[0], 0]) == pytest.approx(0.01)
    assert bool(masks[WRONG[0], 4:12, 1:7].all())
    # with the exemption switched off the reliance is not even asked for
    asked.clear()
    _, check0 = verdict_masks(
        x,
        attr,
        seg,
        spurious,
        torch.ones_like(spurious),
        torch.zeros_like(spurious),
        AlignSettings(consistency_min_reliance=0.0),
        reliance,
    )
    assert not asked and {tuple(p) for p in torch.nonzero(check0.held).tolist()} == {(n, 0) for n in WRONG}


def test_the_descriptor_tells_a_compact_mark_from_a_thin_line_of_the_same_grey():
    """Two dark segments, a 4x4 dot and a 1-pixel line across the image: their colour statistics are
    equal, their spread along the principal axes is not (so a dark dot need not look like a dark scratch)."""
    x = torch.full((1, 1, 32, 32), 0.6)
    x[0, 0, 14:18, 14:18] = 0.1  # the dot
    x[0, 0, 4, :] = 0.1  # the line
    seg = torch.full((1, 32, 32), 2)
    seg[0, 14:18, 14:18] = 0
    seg[0, 4, :] = 1
    attr = torch.zeros(1, 32, 32)
    attr[0, 14:18, 14:18] = 1.0
    attr[0, 4, :] = 1.0
    desc, present = segment_descriptors(x, attr, seg, 3)
    dot, line = desc[0, 0], desc[0, 1]
    assert torch.allclose(dot[:-2], line[:-2])  # mean, std, chroma, histogram: the same
    major_dot, minor_dot = dot[-2:].tolist()
    major_line, minor_line = line[-2:].tolist()
    assert major_line > 0.25 and minor_line < 0.01  # a line: long and thin
    assert abs(major_dot - minor_dot) < 1e-6 and major_dot < 0.05  # a dot: small and round
