"""Evaluation (METHOD.md step 9): accuracy, per-group accuracy, worst-group accuracy, alignment, verdicts.

Groups are (class, spurious attribute) pairs; WGA is the lowest accuracy over groups with at least
``min_group_size`` images (tiny groups would make the minimum pure noise; the threshold is recorded).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lvlmva_desktop.core.store.project import Project


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

    @classmethod
    def from_dict(cls, d: dict) -> Evaluation:
        """Rebuild an evaluation stored with ``to_dict`` (the detail JSON of the metrics table)."""
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "groups"}
        groups = [
            GroupAccuracy(**{k: v for k, v in g.items() if k in GroupAccuracy.__dataclass_fields__})
            for g in d.get("groups", [])
        ]
        return cls(groups=groups, **fields)


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


# -- before / after, read back from the metrics table ---------------------------------------------------
def stored_evaluations(project: Project, model_ids: list[int], split: str = "test") -> dict[int, tuple]:
    """The latest stored evaluation of each model as ``{model_id: (run_id, Evaluation)}``.

    A run that evaluated all the given models together is preferred over newer single evaluations, so
    that a comparison uses one test set and one set of evaluation settings; models never evaluated are
    missing from the result.
    """
    ids = [int(m) for m in model_ids if m is not None]
    if not ids:
        return {}
    rows = project.accuracy_details(split, ids)
    by_run: dict[int, dict[int, str]] = {}
    for r in rows:
        by_run.setdefault(int(r["run_id"]), {})[int(r["model_id"])] = r["detail"]
    together = [run for run, got in by_run.items() if set(ids) <= set(got)]
    if together:
        run = max(together)
        return {m: (run, Evaluation.from_dict(json.loads(by_run[run][m]))) for m in ids}
    out: dict[int, tuple] = {}
    for run in sorted(by_run):
        for m, detail in by_run[run].items():
            out[m] = (run, Evaluation.from_dict(json.loads(detail)))
    return out


def _finite(v: float | None) -> float | None:
    return None if v is None or v != v else float(v)


def aligned_reliance(project: Project, model_id: int) -> tuple[float | None, float | None]:
    """(after, before): the reliance on the masked regions of an aligned model and of the model it came
    from, as measured when it was aligned (core/method/strength.py); None where not recorded."""
    info = json.loads(project.model_row(model_id)["info"] or "{}")
    strength = info.get("strength") or {}

    def mean(key: str) -> float | None:
        r = strength.get(key)
        return _finite(r.get("mean")) if isinstance(r, dict) else None

    return mean("reliance_after"), mean("reliance_before")


def comparison(project: Project, before_model_id: int, after_model_id: int | None = None) -> dict:
    """Accuracy, worst-group accuracy, alignment score and per-group accuracy of a model and (optionally)
    its aligned version, with the changes (dAGA, dWGA, dAlignment), as stored by ``evaluate_models``.

    ``missing`` lists the models that have no stored evaluation yet (evaluate them to fill the table);
    ``after`` is None when no second model is given.
    """
    ids = [before_model_id] + ([after_model_id] if after_model_id is not None else [])
    stored = stored_evaluations(project, ids)

    def side(mid: int) -> dict:
        row = project.model_row(mid)
        run, ev = stored.get(mid, (None, None))
        d = {"model_id": mid, "name": row["name"], "kind": row["kind"], "evaluated": ev is not None}
        d["run_id"] = run
        d["accuracy"] = _finite(ev.accuracy) if ev else None
        d["worst_group_accuracy"] = _finite(ev.worst_group_accuracy) if ev else None
        d["worst_group"] = ev.worst_group if ev else None
        d["alignment"] = _finite(ev.alignment) if ev else None
        d["n"] = ev.n if ev else 0
        return d

    before = side(before_model_id)
    after = side(after_model_id) if after_model_id is not None else None
    groups: dict[tuple[str, str], dict] = {}
    for key, mid in (("before", before_model_id), ("after", after_model_id)):
        if mid is None or mid not in stored:
            continue
        for g in stored[mid][1].groups:
            row = groups.setdefault(
                (g.label, g.group or ""),
                {"label": g.label, "group": g.group or "", "n": g.n, "before": None, "after": None},
            )
            row[key] = _finite(g.accuracy)
    rows = [groups[k] for k in sorted(groups)]
    for r in rows:
        r["change"] = r["after"] - r["before"] if r["after"] is not None and r["before"] is not None else None
    d: dict = {}
    if after is not None and before_model_id in stored and after_model_id in stored:
        ev_b, ev_a = stored[before_model_id][1], stored[after_model_id][1]
        ev_b.alignment, ev_a.alignment = _finite(ev_b.alignment), _finite(ev_a.alignment)
        d = deltas(ev_b, ev_a)
    # the reliance on the masked regions, measured on training images when the model was aligned
    before["reliance"] = None
    if after is not None:
        after["reliance"], reliance_before = aligned_reliance(project, after_model_id)
        if project.model_row(after_model_id)["parent_id"] == before_model_id:
            before["reliance"] = reliance_before
        if before["reliance"] is not None and after["reliance"] is not None:
            d["dReliance"] = after["reliance"] - before["reliance"]
    return {
        "before": before,
        "after": after,
        "groups": rows,
        "deltas": d,
        "missing": [m for m in ids if m not in stored],
        "same_run": len({stored[m][0] for m in ids if m in stored}) <= 1,
    }
