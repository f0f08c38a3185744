"""Verdict consistency check before masks are built (METHOD.md step 7, a choice of ours).

A shortcut is a *consistent* visual thing: the same kind of patch or tag recurs across many images, and
the critic judges its segments "spurious" again and again. A critic's stray false "spurious" verdict on
real evidence lands on a segment that looks like the ones it judged relevant elsewhere. Forbidding real
evidence is the costly error (docs/benchmarks.md, "Which verdict error hurts"), missing an artefact is
cheap; so before the mask A is built, every segment judged "spurious" is compared with the other decided
segments of the alignment set:

1. Descriptor per segment: the image's pixels inside the segment, weighted by the evidence the segments
   were fitted to (the attribution's positive part, or its absolute value with
   ``SegmentSettings.evidence = "absolute"``; uniform over the segment where it holds none): per channel the
   weighted mean and standard deviation, the weighted mean chroma (spread across channels), a coarse
   weighted histogram of the intensity, and the evidence's larger and smaller spatial spread (a compact
   mark apart from a thin line of the same grey). Each feature is standardised over the segments of the set.
2. Its k nearest neighbours (Euclidean distance between standardised descriptors) among the decided
   ("spurious" or "relevant") segments of *other* images; k is capped at half the number of "spurious"
   verdicts on other images (at least 1), since a neighbourhood larger than the group it should find
   cannot show agreement (a 16-image set with 7 artefact segments needs k = 3, not 10).
3. If fewer than ``threshold`` of those neighbours are judged "spurious", the segment is held back: it is
   left out of the mask and listed so the expert can review it ("looks like segments judged relevant").
   Where the critic judges few segments spurious at all (a model that hardly used the artefact), the
   threshold falls to ``AlignSettings.consistency_enrichment`` times the set's share of "spurious"
   verdicts: a neighbourhood that holds them twice as often as the set does already agrees (without this,
   the patches of a set where ERM ignored them were held back by the dozen: docs/benchmarks.md).
4. A segment the model hardly relies on (its prediction moves by less than
   ``AlignSettings.consistency_min_reliance`` when the segment's content is exchanged with other training
   images, core/method/reliance.py) is not held back: masking it cannot cost accuracy.

The check is one-sided (it only removes segments from masks) and never holds back an expert's verdict.
It needs a group to compare with: with fewer than ``AlignSettings.consistency_min_spurious`` (20) "spurious"
verdicts in the set it holds nothing back (a 16-image set with 7 patches of 7 colours would otherwise lose
them all).
Torch only, vectorised; no Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lvlmva_desktop.core.method.settings import AlignSettings

#: Intensity histogram bins of the descriptor.
HIST_BINS = 4


@dataclass
class ConsistencyResult:
    held: torch.Tensor  # (N, J) bool: judged spurious, but left out of the mask
    share: torch.Tensor  # (N, J) float: share of "spurious" among the neighbours (nan where not checked)
    # (N, J) float: the model's reliance on the segments the neighbours would hold back (nan elsewhere);
    # those under AlignSettings.consistency_min_reliance are not held back
    reliance: torch.Tensor | None = None

    def held_list(self, sample_ids: list[int]) -> list[tuple[int, int]]:
        """(sample_id, segment) of every held-back segment, in image then segment order."""
        return [(int(sample_ids[n]), int(j)) for n, j in torch.nonzero(self.held).tolist()]


def _spread(w: torch.Tensor) -> torch.Tensor:
    """(B, J, 2): the larger and the smaller spread (standard deviation along the principal axes, in image
    sides) of each segment's evidence weights ``w`` (B, J, H, W; summing to 1): a compact mark (a dot, a tag,
    a patch) apart from a thin line or a large lesion of the same grey (orientation does not count)."""
    h, wd = w.shape[-2:]
    yy = torch.linspace(0, 1, h, device=w.device)[:, None].expand(h, wd)
    xx = torch.linspace(0, 1, wd, device=w.device)[None, :].expand(h, wd)
    my, mx = (w * yy).sum((2, 3)), (w * xx).sum((2, 3))
    vy = (w * yy * yy).sum((2, 3)) - my * my
    vx = (w * xx * xx).sum((2, 3)) - mx * mx
    cov = (w * yy * xx).sum((2, 3)) - my * mx
    half, disc = (vx + vy) / 2, (((vx - vy) / 2) ** 2 + cov**2).clamp_min(0).sqrt()
    return torch.stack([(half + disc).clamp_min(0).sqrt(), (half - disc).clamp_min(0).sqrt()], -1)


def segment_descriptors(
    images: torch.Tensor,
    attributions: torch.Tensor,
    segments: torch.Tensor,
    n_segments: int,
    batch_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Appearance descriptors (N, J, D) of every segment and whether the segment has pixels (N, J).

    images (N, C, H, W) in [0, 1]; attributions (N, H, W), the map the segments were fitted to (its positive
    part weights the pixels: pass ``segment.evidence_map(maps, kind)``); segments (N, H, W), values 0..J-1.
    """
    n, c = images.shape[:2]
    feats, present = [], []
    js = torch.arange(n_segments, device=segments.device)
    for s in range(0, n, batch_size):
        x = images[s : s + batch_size].float()
        seg = segments[s : s + batch_size].long()
        pos = attributions[s : s + batch_size].float().clamp_min(0)
        onehot = (seg.unsqueeze(1) == js[None, :, None, None]).float()  # (B, J, H, W)
        w = onehot * pos.unsqueeze(1)
        mass = w.sum((2, 3))
        # a segment without positive evidence: every pixel of it counts the same
        w = torch.where((mass > 0)[..., None, None], w, onehot)
        wsum = w.sum((2, 3)).clamp_min(1e-12)  # (B, J)
        w = w / wsum[..., None, None]
        mean = torch.einsum("bjhw,bchw->bjc", w, x)
        sq = torch.einsum("bjhw,bchw->bjc", w, x * x)
        std = (sq - mean * mean).clamp_min(0).sqrt()
        chroma = torch.einsum("bjhw,bhw->bj", w, x.std(1, unbiased=False) if c > 1 else torch.zeros_like(pos))
        grey = x.mean(1)
        bins = (grey * HIST_BINS).long().clamp(0, HIST_BINS - 1)
        hist = torch.einsum(
            "bjhw,bkhw->bjk", w, torch.nn.functional.one_hot(bins, HIST_BINS).permute(0, 3, 1, 2).float()
        )
        feats.append(torch.cat([mean, std, chroma.unsqueeze(-1), hist, _spread(w)], -1))
        present.append(onehot.sum((2, 3)) > 0)
    if not feats:
        return torch.zeros(0, n_segments, 2 * c + 3 + HIST_BINS), torch.zeros(0, n_segments, dtype=torch.bool)
    return torch.cat(feats), torch.cat(present)


def standardised(descriptors: torch.Tensor, decided: torch.Tensor) -> torch.Tensor:
    """(N*J, D) float64: every segment's descriptor standardised with the mean and standard deviation of the
    decided segments' (a feature that does not vary among them counts as 0)."""
    n, j, d = descriptors.shape
    f = descriptors.reshape(n * j, d).double()
    dec = decided.reshape(-1).bool()
    mu = f[dec].mean(0)
    sd = f[dec].std(0, unbiased=False)
    return torch.where(sd > 1e-9, (f - mu) / sd.clamp_min(1e-9), torch.zeros_like(f))


def nearest_decided(
    z: torch.Tensor, query: torch.Tensor, decided: torch.Tensor, n_segments: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The up to ``k`` nearest decided segments of *other* images for each query segment.

    ``z``: standardised descriptors (N*J, D) (``standardised``); ``query``: flat indices (Q,) of the segments
    to look around; ``decided``: (N*J,) or (N, J) bool, the segments that may be neighbours; ``n_segments``:
    J. Returns ``order`` (Q, K) flat indices of the neighbours, nearest first (Euclidean distance, ties
    broken by index so the result is deterministic), and ``found`` (Q, K) bool, False where a query has
    fewer than K candidates; K = min(k, the most candidates any query has)."""
    dec = decided.reshape(-1).bool()
    q = query.long()
    if len(q) == 0:
        empty = torch.zeros(0, 0, dtype=torch.long)
        return empty, empty.bool()
    dist = torch.cdist(z[q], z)  # (Q, N*J)
    img = torch.arange(z.shape[0]) // n_segments
    bad = (img[q][:, None] == img[None, :]) | ~dec[None, :]
    dist = dist.masked_fill(bad, float("inf"))
    kk = min(k, int((~bad).sum(1).max()))
    order = torch.sort(dist, dim=1, stable=True).indices[:, :kk]
    return order, torch.gather(dist, 1, order).isfinite()


def verdict_consistency(
    descriptors: torch.Tensor,
    spurious: torch.Tensor,
    decided: torch.Tensor,
    protected: torch.Tensor,
    k: int = 10,
    threshold: float = 0.5,
    enrichment: float = 0.0,
) -> ConsistencyResult:
    """Which "spurious" segments to hold back, from descriptors (N, J, D) and verdict flags (N, J) bool.

    ``decided``: the segment has a "spurious" or "relevant" verdict (undecided and empty segments are
    neither checked nor neighbours). ``protected``: verdicts that are never held back (the expert's).
    ``enrichment`` > 0 lowers the threshold to that multiple of the share of "spurious" among all decided
    segments when that is smaller: where few segments are judged spurious (a model that hardly uses the
    artefact), a neighbourhood that holds them several times more often than the set does already agrees.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    if enrichment < 0:
        raise ValueError(f"enrichment must not be negative, got {enrichment}.")
    n, j, _ = descriptors.shape
    spurious, decided = spurious.bool() & decided.bool(), decided.bool()
    if enrichment > 0 and bool(decided.any()):
        base = float(spurious.sum()) / float(decided.sum())
        threshold = min(threshold, enrichment * base)
    held = torch.zeros(n, j, dtype=torch.bool)
    share = torch.full((n, j), float("nan"))
    check = spurious & ~protected.bool()
    if n == 0 or not bool(check.any()):
        return ConsistencyResult(held, share)
    dec = decided.reshape(-1)
    z = standardised(descriptors, decided)
    q = torch.nonzero(check.reshape(-1)).flatten()  # the segments to check
    img = torch.arange(n).repeat_interleave(j)
    # k per checked segment: at most half of the "spurious" verdicts on other images (at least 1), so that
    # a set with few of them can still show that they agree; the nearest decided segments count
    spur_flat = spurious.reshape(-1)
    n_other = int(spur_flat.sum()) - spurious.sum(1)[img[q]]
    k_q = ((n_other + 1) // 2).clamp(1, k)
    order, found = nearest_decided(z, q, dec, j, k)
    if order.shape[1] == 0:
        return ConsistencyResult(held, share)
    valid = found & (torch.arange(order.shape[1])[None, :] < k_q[:, None])
    spur = spur_flat[order] & valid
    s = spur.sum(1).double() / valid.sum(1).clamp_min(1).double()
    s = torch.where(valid.any(1), s, torch.ones_like(s))  # no neighbour at all: nothing to compare, keep it
    share.view(-1)[q] = s.float()
    held.view(-1)[q] = s < threshold
    return ConsistencyResult(held, share)


def check_segments(
    images: torch.Tensor,
    attributions: torch.Tensor,
    segments: torch.Tensor,
    spurious: torch.Tensor,
    decided: torch.Tensor,
    protected: torch.Tensor,
    k: int = 10,
    threshold: float = 0.5,
    enrichment: float = 0.0,
) -> ConsistencyResult:
    """Descriptors then the neighbour check, for one alignment set (see the module docstring)."""
    desc, present = segment_descriptors(images, attributions, segments, spurious.shape[1])
    return verdict_consistency(desc, spurious, decided & present, protected, k, threshold, enrichment)


def masks_from_flags(segments: torch.Tensor, spurious: torch.Tensor) -> torch.Tensor:
    """A = union of the flagged segments, per image: segments (N, H, W), spurious (N, J) -> (N, H, W) bool."""
    seg = segments.long()
    j = spurious.shape[1]
    onehot = seg.unsqueeze(1) == torch.arange(j, device=seg.device)[None, :, None, None]
    return (onehot & spurious.bool().to(seg.device)[..., None, None]).any(1)


def check_applies(
    spurious: torch.Tensor, decided: torch.Tensor, protected: torch.Tensor, settings: AlignSettings
) -> bool:
    """Whether the check runs: switched on, enough "spurious" verdicts to compare, and at least one that is
    not the expert's (callers use it to skip loading the images when it will not run)."""
    spurious, decided, protected = spurious.bool(), decided.bool(), protected.bool()
    return (
        settings.consistency_check
        and int((spurious & decided).sum()) >= settings.consistency_min_spurious
        and bool((spurious & ~protected).any())
    )


def verdict_masks(
    images: torch.Tensor,
    attributions: torch.Tensor,
    segments: torch.Tensor,
    spurious: torch.Tensor,
    decided: torch.Tensor,
    protected: torch.Tensor,
    settings: AlignSettings,
    reliance: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, ConsistencyResult | None]:
    """The masks A of an alignment set (N, H, W) from per-segment verdict flags (N, J), with the check
    applied when ``settings.consistency_check`` is on (else the result is None): the one place where both
    the pipeline (``pipeline.alignment_masks``) and the alignment benchmark turn verdicts into masks.
    ``attributions``: the evidence maps the segments were fitted to (``segment.evidence_map``).
    ``reliance``: given the (N, J) flags of the segments to check, the model's reliance on each
    (``reliance.segment_reliance``); without it no segment is exempted for low reliance."""
    check = None
    if check_applies(spurious, decided, protected, settings):
        check = check_segments(
            images,
            attributions,
            segments,
            spurious,
            decided,
            protected,
            settings.consistency_k,
            settings.consistency_threshold,
            settings.consistency_enrichment,
        )
        if reliance is not None and settings.consistency_min_reliance > 0 and bool(check.held.any()):
            # only the segments the neighbours would hold back need their reliance measured
            rel = reliance(check.held)
            check.reliance = rel
            check.held &= ~(rel.to(check.held.device) < settings.consistency_min_reliance)
        spurious = spurious.bool() & ~check.held
    return masks_from_flags(segments, spurious), check
