"""Evaluation (METHOD.md step 9): accuracy, per-group accuracy, worst-group accuracy, alignment, verdicts.

Groups are (class, spurious attribute) pairs; WGA is the lowest accuracy over groups with at least
``min_group_size`` images (tiny groups would make the minimum pure noise; the threshold is recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class GroupAccuracy:
    label: str
    group: str
    n: int
    accuracy: float


@dataclass
class Evaluation:
    accuracy: float
    worst_group_accuracy: float | None
    worst_group: str | None
    groups: list[GroupAccuracy] = field(default_factory=list)
    n: int = 0
    alignment: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_predictions(
    preds: torch.Tensor,
    labels: torch.Tensor,
    groups: Sequence[str | None] | None,
    class_names: Sequence[str],
    min_group_size: int = 1,
) -> Evaluation:
    preds, labels = preds.cpu(), labels.cpu()
    n = len(labels)
    correct = preds == labels
    acc = int(correct.sum()) / n if n else float("nan")
    result: list[GroupAccuracy] = []
    if groups is not None:
        keys: dict[tuple[int, str], list[int]] = {}
        for i, (lab, g) in enumerate(zip(labels.tolist(), groups)):
            keys.setdefault((lab, g if g is not None else ""), []).append(i)
        for (lab, g), idx in sorted(keys.items()):
            c = correct[idx]
            result.append(GroupAccuracy(class_names[lab], g, len(idx), int(c.sum()) / len(idx)))
    eligible = [g for g in result if g.n >= min_group_size]
    if eligible:
        worst = min(eligible, key=lambda g: g.accuracy)
        wga, wname = worst.accuracy, f"{worst.label} / {worst.group}"
    else:
        wga, wname = None, None
    return Evaluation(accuracy=acc, worst_group_accuracy=wga, worst_group=wname, groups=result, n=n)


def alignment_score(attributions: torch.Tensor, gt_masks: torch.Tensor) -> float:
    """Mean over images of the share of absolute attribution OUTSIDE the true spurious region (1 = best).

    Only images whose ground-truth mask is non-empty count; NaN when there are none.
    """
    a = attributions.abs().flatten(1)
    m = gt_masks.flatten(1).bool()
    has = m.any(1)
    if not bool(has.any()):
        return float("nan")
    a, m = a[has], m[has]
    total = a.sum(1).clamp_min(1e-12)
    outside = (a * (~m)).sum(1)
    return float((outside / total).mean())


def verdict_accuracy(predicted: Sequence[bool | None], truth: Sequence[bool]) -> float:
    """Share of verdicts equal to the ground truth; an undecided verdict (None) counts as wrong."""
    if not truth:
        return float("nan")
    return sum(p is not None and p == t for p, t in zip(predicted, truth)) / len(truth)


def deltas(before: Evaluation, after: Evaluation) -> dict:
    """dAGA and dWGA of a new model version against the original."""
    d = {"dAGA": after.accuracy - before.accuracy}
    if before.worst_group_accuracy is not None and after.worst_group_accuracy is not None:
        d["dWGA"] = after.worst_group_accuracy - before.worst_group_accuracy
    if before.alignment is not None and after.alignment is not None:
        d["dAlignment"] = after.alignment - before.alignment
    return d
