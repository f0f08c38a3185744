"""The expert's review queue (issue 13): which image of the alignment set to look at first.

An expert who reviews the critic's verdicts has time for some images, not all, so the queue puts first the
images whose verdicts most likely need the expert's word, in three tiers:

1. images with **undecided** segments (the critic or judge gave no verdict): nothing else can settle them;
   the larger the share of the image's evidence they hold, the sooner;
2. images with a verdict the **consistency check doubts**: the check's held-back verdicts when an align
   run's ``ConsistencyResult`` is given, and, usable before any alignment, every decided segment whose
   nearest look-alikes (``core.method.consistency``'s appearance descriptors, the same standardisation and
   neighbour search as the check, other images only) mostly (``DOUBT_LEVEL``) carry the other verdict;
3. the rest, ordered by the **judge's own probability** of its verdicts where a local LVLM gave one (lowest
   first), else by the continuous doubt below.

The doubt of a decided segment is the share of its k nearest decided look-alikes whose verdict differs
(k capped, as in the check, at half the number of verdicts like its own on other images), weighted by what
the error would cost (docs/benchmarks.md, "Which verdict error hurts"): a false "spurious" verdict forbids
real evidence, so a "spurious" verdict weighs as much as the segment's share of the image's evidence; a
missed artefact costs little, so a "relevant" verdict weighs ``MISSED_COST`` times that. The expert's own
verdicts are never doubted, but they are look-alikes for the others, so every review sharpens the queue.

Within a tier the order is by the tier's signal first (9/10 of the priority's spread) and the other signal
second (1/10): doubt then confidence in tier 2, confidence then doubt in tier 3. Images the expert has
reviewed (every segment that holds evidence or has a verdict carries an expert verdict) come last.

``doubt_scores`` and ``priorities`` are pure tensor functions: ``review_queue`` (the window) and
benchmarks/review_routing.py (the measurement) share them. Qt-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lvlmva_desktop.core.method.consistency import nearest_decided, segment_descriptors, standardised
from lvlmva_desktop.core.method.critic import RELEVANT, SPURIOUS, UNDECIDED

if TYPE_CHECKING:
    from lvlmva_desktop.core.method.consistency import ConsistencyResult
    from lvlmva_desktop.core.store.project import Project

#: the cost of a wrong "relevant" verdict (a missed artefact) relative to a wrong "spurious" one
MISSED_COST = 0.25
#: a verdict is doubted when at least this share of its look-alikes carries the other verdict ...
DOUBT_LEVEL = 0.5
#: ... and its segment holds at least this share of the image's evidence (smaller ones cost nothing)
MIN_EVIDENCE = 0.05
#: look-alikes compared per segment (the consistency check's default k)
DOUBT_K = 10

TIER_REVIEWED, TIER_REST, TIER_DOUBTED, TIER_UNDECIDED = -1.0, 1.0, 2.0, 3.0


@dataclass
class ReviewItem:
    sample_id: int
    reviewed: bool  # every segment that holds evidence has an expert verdict
    priority: float  # higher = review sooner
    reason: str  # plain words: "2 undecided segments", "judge 54% sure", ...


@dataclass
class Doubt:
    """Per segment (N, J): ``disagree``, the share of its look-alikes whose verdict differs (nan where the
    segment was not looked at: undecided, empty, the expert's, or nothing to compare with); ``weighted``,
    that share times the cost of the error (0 where nan); ``compared``, how many look-alikes counted."""

    disagree: torch.Tensor
    weighted: torch.Tensor
    compared: torch.Tensor


def doubt_scores(
    descriptors: torch.Tensor,
    spurious: torch.Tensor,
    decided: torch.Tensor,
    evidence: torch.Tensor,
    protected: torch.Tensor | None = None,
    k: int = DOUBT_K,
    missed_cost: float = MISSED_COST,
) -> Doubt:
    """The continuous doubt of every decided segment (see the module docstring).

    descriptors (N, J, D) from ``consistency.segment_descriptors``; spurious, decided (N, J) bool (a decided
    segment is "spurious" or "relevant"; undecided and empty segments are neither looked at nor look-alikes);
    evidence (N, J): each segment's share of its image's evidence; protected (N, J) bool: the expert's
    verdicts, look-alikes but never doubted."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    n, j = spurious.shape
    spurious, decided = spurious.bool() & decided.bool(), decided.bool()
    protected = torch.zeros_like(decided) if protected is None else protected.bool()
    disagree = torch.full((n, j), float("nan"))
    compared = torch.zeros(n, j, dtype=torch.long)
    look = decided & ~protected
    if n == 0 or not bool(look.any()):
        return Doubt(disagree, torch.zeros(n, j), compared)
    z = standardised(descriptors, decided)
    q = torch.nonzero(look.reshape(-1)).flatten()
    img = q // j
    spur_flat = spurious.reshape(-1)
    mine = spur_flat[q]
    # k per segment: at most half of the verdicts like its own on other images (at least 1), as the check
    # caps it: a neighbourhood larger than the group it should find cannot show agreement
    n_spur = spurious.sum(1)
    n_rel = (decided & ~spurious).sum(1)
    same_other = torch.where(mine, int(n_spur.sum()) - n_spur[img], int(n_rel.sum()) - n_rel[img])
    k_q = ((same_other + 1) // 2).clamp(1, k)
    order, found = nearest_decided(z, q, decided, j, k)
    if order.shape[1] == 0:
        return Doubt(disagree, torch.zeros(n, j), compared)
    valid = found & (torch.arange(order.shape[1])[None, :] < k_q[:, None])
    differ = (spur_flat[order] != mine[:, None]) & valid
    counted = valid.sum(1)
    share = differ.sum(1).double() / counted.clamp_min(1).double()
    share = torch.where(counted > 0, share, torch.full_like(share, float("nan")))
    disagree.view(-1)[q] = share.float()
    compared.view(-1)[q] = counted
    cost = evidence.float().clamp_min(0) * torch.where(spurious, 1.0, float(missed_cost))
    weighted = torch.nan_to_num(disagree, nan=0.0) * cost
    return Doubt(disagree, weighted, compared)


def image_doubts(
    images: torch.Tensor,
    evidence_maps: torch.Tensor,
    segments: torch.Tensor,
    spurious: torch.Tensor,
    decided: torch.Tensor,
    evidence: torch.Tensor,
    protected: torch.Tensor | None = None,
    k: int = DOUBT_K,
) -> Doubt:
    """``doubt_scores`` from an alignment set's images (N, C, H, W), the evidence maps its segments were
    fitted to (``segment.evidence_map``), its segment maps (N, H, W) and its verdict flags (N, J)."""
    desc, present = segment_descriptors(images, evidence_maps, segments, spurious.shape[1])
    return doubt_scores(desc, spurious, decided.bool() & present, evidence, protected, k)


def priorities(
    spurious: torch.Tensor,
    decided: torch.Tensor,
    expert: torch.Tensor,
    considered: torch.Tensor,
    evidence: torch.Tensor,
    doubt: Doubt,
    confidence: torch.Tensor | None = None,
    held: torch.Tensor | None = None,
) -> list[tuple[float, str, bool]]:
    """(priority, reason, reviewed) per image, from (N, J) flags: the effective verdict is "spurious" /
    decided ("spurious" or "relevant") / the expert's; ``considered``: the segments the review covers (those
    holding evidence or carrying a verdict); ``evidence``: each segment's share of the image's evidence;
    ``confidence``: the judge's probability of its verdict (nan where unknown); ``held``: the verdicts an
    align run's consistency check held back. See the module docstring for the tiers."""
    n, j = spurious.shape
    spurious, decided, expert = spurious.bool(), decided.bool(), expert.bool()
    considered = considered.bool()
    conf = torch.full((n, j), float("nan")) if confidence is None else confidence.float()
    ev = evidence.float().clamp_min(0)
    out = []
    for i in range(n):
        cons = considered[i]
        if bool(cons.any()) and bool((expert[i] | ~cons).all()):
            out.append((TIER_REVIEWED, "reviewed by the expert", True))
            continue
        critic = cons & ~expert[i]
        known = critic & conf[i].isfinite()
        c_seg = (
            int(torch.where(known, conf[i], torch.full_like(conf[i], 2.0)).argmin()) if known.any() else None
        )
        c_min = float(conf[i, c_seg]) if c_seg is not None else None
        unsure = 0.0 if c_min is None else 1.0 - c_min
        wd = doubt.weighted[i]
        top = int(wd.argmax())
        undecided = critic & ~decided[i]
        if not bool(cons.any()) or bool(undecided.any()):
            total = float(ev[i][cons].sum()) if cons.any() else 0.0
            share = float(ev[i][undecided].sum()) / total if total > 0 else 1.0
            m = int(undecided.sum()) if cons.any() else 0
            words = f"{m} undecided segment{'s' * (m != 1)}" if m else "no verdict yet"
            out.append((_priority(TIER_UNDECIDED, share, unsure), words, False))
            continue
        if held is not None and bool((held[i].bool() & critic).any()):
            s = int(torch.nonzero(held[i].bool() & critic)[0])
            reason = f"a 'spurious' verdict the consistency check held back (segment {s + 1})"
            out.append((_priority(TIER_DOUBTED, float(wd.max()), unsure), reason, False))
            continue
        dis = torch.nan_to_num(doubt.disagree[i], nan=0.0)
        doubted = critic & decided[i] & (dis >= DOUBT_LEVEL) & (ev[i] >= MIN_EVIDENCE)
        if bool(doubted.any()):
            s = int(torch.where(doubted, wd, torch.full_like(wd, -1.0)).argmax())
            reason = f"a '{_name(spurious[i, s])}' verdict the consistency check doubts ({_lookalikes(doubt, i, s, spurious)})"
            out.append((_priority(TIER_DOUBTED, float(wd[s]), unsure), reason, False))
            continue
        if c_min is not None:
            reason = f"judge {c_min:.0%} sure (segment {c_seg + 1}: '{_name(spurious[i, c_seg], decided[i, c_seg])}')"
            out.append((_priority(TIER_REST, unsure, float(wd.max())), reason, False))
            continue
        if float(wd[top]) > 0:
            reason = f"look-alikes mostly agree ({_lookalikes(doubt, i, top, spurious)})"
        elif bool((doubt.compared[i] > 0).any()):
            reason = "look-alikes agree with every verdict"
        else:
            reason = "no look-alikes to compare with"
        out.append((_priority(TIER_REST, float(wd[top]), 0.0), reason, False))
    return out


def _priority(tier: float, first: float, second: float) -> float:
    """tier + 0.9 * first + 0.09 * second, each signal clipped to [0, 1]: within [tier, tier + 1)."""
    clip = [min(max(0.0 if math.isnan(v) else v, 0.0), 1.0) for v in (first, second)]
    return tier + 0.9 * clip[0] + 0.09 * clip[1]


def _name(spurious: torch.Tensor, decided: torch.Tensor | bool = True) -> str:
    if not bool(decided):
        return UNDECIDED
    return SPURIOUS if bool(spurious) else RELEVANT


def _lookalikes(doubt: Doubt, i: int, s: int, spurious: torch.Tensor) -> str:
    k = int(doubt.compared[i, s])
    m = round(float(doubt.disagree[i, s]) * k)
    return f"segment {s + 1}: {m} of {k} look-alikes judged '{_name(~spurious[i, s])}'"


def order_of(prios: list[tuple[float, str, bool]]) -> list[int]:
    """Row indices, highest priority first; ties keep the alignment set's order."""
    return sorted(range(len(prios)), key=lambda i: -prios[i][0])


def verdict_flags(
    effective: dict[int, dict[int, dict]], sample_ids: list[int], evidence: torch.Tensor
) -> dict[str, torch.Tensor]:
    """(N, J) flags from ``Project.effective_verdicts``: spurious, decided, expert, considered (holds
    evidence or carries a verdict) and confidence (the critic's probability; nan where unknown)."""
    n, j = evidence.shape
    spurious = torch.zeros(n, j, dtype=torch.bool)
    decided, expert, has = torch.zeros_like(spurious), torch.zeros_like(spurious), torch.zeros_like(spurious)
    confidence = torch.full((n, j), float("nan"))
    for r, sid in enumerate(sample_ids):
        for s, d in effective.get(int(sid), {}).items():
            if not 0 <= s < j:
                continue
            has[r, s] = True
            spurious[r, s] = d["verdict"] == SPURIOUS
            decided[r, s] = d["verdict"] in (SPURIOUS, RELEVANT)
            expert[r, s] = d["source"] == "expert"
            c = d.get("confidence")
            if c is not None and d["source"] != "expert":
                confidence[r, s] = float(c)
    considered = has | (evidence.float() > 0)
    return {
        "spurious": spurious,
        "decided": decided,
        "expert": expert,
        "considered": considered,
        "confidence": confidence,
    }


def review_queue(
    project: Project, expl_id: int, check: ConsistencyResult | None = None, k: int = DOUBT_K
) -> list[ReviewItem]:
    """The images of explanation ``expl_id`` in the order the expert should review them (module docstring),
    reviewed ones last. ``check``: an align run's consistency result for this explanation (rows in the
    explanation's image order); its held-back verdicts join the second tier."""
    from lvlmva_desktop.core.method.segment import evidence_map, recorded_evidence
    from lvlmva_desktop.core.views.viewer import load_samples

    row, t = project.explanation(expl_id)
    ids = [int(s) for s in t["sample_ids"].tolist()]
    if not ids:
        return []
    share = t["evidence"].float()
    flags = verdict_flags(project.effective_verdicts(expl_id), ids, share)
    held = None
    if check is not None:
        held = check.held.bool()
        if tuple(held.shape) != tuple(share.shape):
            raise ValueError(
                f"The consistency result has {tuple(held.shape)} verdicts, the explanation {tuple(share.shape)}."
            )
    look = flags["decided"] & ~flags["expert"]
    if bool(look.any()):  # the images are only needed when there is a verdict to doubt
        images = load_samples(project, ids).x
        maps = evidence_map(t["maps"], recorded_evidence(row["settings"]))
        doubt = image_doubts(
            images, maps, t["segments"].long(), flags["spurious"], flags["decided"], share, flags["expert"], k
        )
    else:
        n, j = share.shape
        doubt = Doubt(
            torch.full((n, j), float("nan")), torch.zeros(n, j), torch.zeros(n, j, dtype=torch.long)
        )
    prios = priorities(
        flags["spurious"],
        flags["decided"],
        flags["expert"],
        flags["considered"],
        share,
        doubt,
        flags["confidence"],
        held,
    )
    return [
        ReviewItem(sample_id=ids[i], reviewed=prios[i][2], priority=prios[i][0], reason=prios[i][1])
        for i in order_of(prios)
    ]
