"""What the dataset browser shows, without Qt: the sample table, model predictions, verdict status, and
the filters and sorts over them as numpy operations.

Everything here is vectorised so a 50,000-image project filters and sorts in milliseconds: the table is
read by one SQL query, predictions are cached on disk (keyed by the model's sha256 and the data hash),
and a filter is a boolean mask, never a Python loop over the images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import load_file, save_file

from lvlmva_desktop.core.method.critic import RELEVANT, SPURIOUS, UNDECIDED
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SORT_KEYS = ("id", "entropy", "confidence")  # entropy and confidence need predictions
VERDICT_FILTERS = {
    "none": "no critique",
    "spurious": "has a spurious segment",
    "relevant": "all segments relevant",
    "undecided": "has an undecided segment",
    "overruled": "overruled by the expert",
    "needs_review": "needs the expert's review",
}


@dataclass
class SampleTable:
    """Every sample of the project as parallel arrays, ordered by id (row i describes ids[i])."""

    ids: np.ndarray  # int64, ascending
    labels: np.ndarray  # int64 class index
    split: np.ndarray  # str: "train" | "test" | "val"
    group: np.ndarray  # str: the spurious attribute, "" where unknown
    paths: np.ndarray  # object: paths relative to the project folder

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, sample_id: int) -> int | None:
        """Row of a sample id, or None (ids are sorted, so this is a binary search)."""
        i = int(np.searchsorted(self.ids, sample_id))
        return i if i < len(self.ids) and self.ids[i] == sample_id else None

    def groups(self) -> list[str]:
        return sorted(set(np.unique(self.group).tolist()) - {""})

    def splits(self) -> list[str]:
        return [s for s in ("train", "test", "val") if bool(np.any(self.split == s))]


def sample_table(project) -> SampleTable:
    """Read the samples with one query (fast at 50,000 rows: no per-row lookups, no Row objects)."""
    rows = project.sample_columns()
    if not rows:
        return SampleTable(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, "<U5"),
            np.zeros(0, "<U1"),
            np.zeros(0, object),
        )
    ids, labels, split, group, paths = zip(*rows)
    return SampleTable(
        np.asarray(ids, dtype=np.int64),
        np.asarray(labels, dtype=np.int64),
        np.asarray(split, dtype=str),
        np.asarray(group, dtype=str),
        np.asarray(paths, dtype=object),
    )


# ---------------------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------------------
def predictions_cache_path(project, model_id: int) -> Path:
    """Where the predictions of a model version on the current data are kept (sha256 + data hash)."""
    sha = project.model_row(model_id)["sha256"]
    return project.root / "cache" / f"preds-{sha[:16]}-{project.data_hash()[:16]}.safetensors"


def model_predictions(
    project, model_id: int, device: torch.device, state: TaskState | None = None
) -> np.ndarray:
    """Softmax probabilities (N, C) of a model version for every sample, rows in sample-id order.

    Computed once per (model sha256, data hash) over every split and cached as safetensors under
    ``cache/``, so reopening the project shows them at once.
    """
    from lvlmva_desktop.core.method.train import predict_proba

    state = ensure_state(state)
    cache = predictions_cache_path(project, model_id)
    ids = np.asarray(project.sample_ids(), dtype=np.int64)
    if cache.is_file():
        try:
            t = load_file(str(cache))
            if np.array_equal(t["sample_ids"], ids):
                state.progress(1.0, None, "predictions read from the cache")
                return t["probs"]
            log.warning("cached predictions %s do not match the samples; recomputing", cache.name)
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, not fatal
            log.warning("cached predictions %s are unreadable; recomputing", cache.name, exc_info=True)
    model, _ = project.load_model(model_id)
    probs = np.full((len(ids), len(project.classes)), np.nan, dtype=np.float32)
    splits = project.sample_splits()
    for k, split in enumerate(splits):
        part = state.child(k / len(splits), (k + 0.5) / len(splits))
        data = project.load_split(split, part)
        rows = np.searchsorted(ids, np.asarray(data.sample_ids, dtype=np.int64))
        # Batched with progress and cancel per batch; halved on GPU out-of-memory (core/runtime/memory.py).
        part = state.child((k + 0.5) / len(splits), (k + 1) / len(splits))
        p = predict_proba(model, data.x, device, state=part, what=f"predicting the {split} images")
        if len(rows):
            probs[rows] = p.numpy()
        del data
    tmp = cache.with_suffix(".tmp")
    cache.parent.mkdir(exist_ok=True)  # cache/ may have been deleted whole
    save_file({"sample_ids": ids, "probs": probs}, str(tmp))
    os.replace(tmp, cache)
    state.progress(1.0, None, f"predictions of model {model_id} ready")
    return probs


def entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy per row, in nats (0 for a certain prediction)."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(probs * np.log(p)).sum(axis=1)


def confidence(probs: np.ndarray) -> np.ndarray:
    return probs.max(axis=1)


# ---------------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerdictStatus:
    """The verdicts in force for one image of an explanation (expert's word over the critic's)."""

    n_spurious: int
    n_relevant: int
    n_undecided: int
    n_expert: int  # segments the expert decided
    overruled: bool  # the expert changed at least one of the critic's verdicts

    @property
    def n_segments(self) -> int:
        return self.n_spurious + self.n_relevant + self.n_undecided

    @property
    def reviewed(self) -> bool:
        """The expert has given (or confirmed) the verdict of every segment the critic judged."""
        return self.n_segments > 0 and self.n_expert >= self.n_segments

    def summary(self) -> str:
        parts = [
            f"{n} {name}"
            for n, name in (
                (self.n_spurious, "spurious"),
                (self.n_relevant, "relevant"),
                (self.n_undecided, "undecided"),
            )
            if n
        ]
        n = self.n_spurious + self.n_relevant + self.n_undecided
        text = f"{n} segment{'s' * (n != 1)}: " + ", ".join(parts)
        if self.overruled:
            text += "; the expert overruled the critic"
        elif self.n_expert:
            text += "; checked by the expert"
        return text


def verdict_status(project, expl_id: int) -> dict[int, VerdictStatus]:
    """sample id -> VerdictStatus for every image of the explanation that has verdicts."""
    effective = project.effective_verdicts(expl_id)
    critic: dict[tuple[int, int], str] = {}
    for sid, seg, verdict in project.critic_verdicts(expl_id):
        critic[(sid, seg)] = verdict
    out: dict[int, VerdictStatus] = {}
    for sid, segments in effective.items():
        verdicts = [v["verdict"] for v in segments.values()]
        experts = [(seg, v["verdict"]) for seg, v in segments.items() if v["source"] == "expert"]
        out[int(sid)] = VerdictStatus(
            n_spurious=verdicts.count(SPURIOUS),
            n_relevant=verdicts.count(RELEVANT),
            n_undecided=verdicts.count(UNDECIDED),
            n_expert=len(experts),
            overruled=any(critic.get((sid, seg), v) != v for seg, v in experts),
        )
    return out


@dataclass
class VerdictFlags:
    """Verdict status as boolean arrays aligned to a SampleTable (one per VERDICT_FILTERS key)."""

    none: np.ndarray
    spurious: np.ndarray
    relevant: np.ndarray
    undecided: np.ndarray
    overruled: np.ndarray
    needs_review: np.ndarray  # judged by the critic, not yet every segment by the expert

    @classmethod
    def build(cls, table: SampleTable, status: dict[int, VerdictStatus]) -> VerdictFlags:
        n = len(table)
        flags = {f.name: np.zeros(n, bool) for f in fields(cls)}
        flags["none"][:] = True
        for sid, st in status.items():
            i = table.position(sid)
            if i is None:
                continue
            flags["none"][i] = False
            flags["spurious"][i] = st.n_spurious > 0
            flags["relevant"][i] = st.n_relevant > 0 and st.n_spurious == 0 and st.n_undecided == 0
            flags["undecided"][i] = st.n_undecided > 0
            flags["overruled"][i] = st.overruled
            flags["needs_review"][i] = not st.reviewed
        return cls(**flags)


# ---------------------------------------------------------------------------------------------------------
# Filters and sorts
# ---------------------------------------------------------------------------------------------------------
@dataclass
class BrowseFilter:
    """What to show; None means "any". ``group`` "" selects images without a known group."""

    label: int | None = None
    split: str | None = None
    group: str | None = None
    predicted: int | None = None  # needs predictions
    correct: bool | None = None  # needs predictions
    in_alignment_set: bool | None = None  # needs an alignment set
    verdict: str | None = None  # a VERDICT_FILTERS key; needs an explanation

    def needs_predictions(self) -> bool:
        return self.predicted is not None or self.correct is not None


def select_rows(
    table: SampleTable,
    flt: BrowseFilter,
    probs: np.ndarray | None = None,
    members: np.ndarray | None = None,
    verdicts: VerdictFlags | None = None,
) -> np.ndarray:
    """Table rows passing the filter (ascending). A criterion whose data is missing is ignored."""
    keep = np.ones(len(table), bool)
    if flt.label is not None:
        keep &= table.labels == flt.label
    if flt.split is not None:
        keep &= table.split == flt.split
    if flt.group is not None:
        keep &= table.group == flt.group
    if probs is not None and len(probs) == len(table):
        pred = probs.argmax(axis=1)
        known = ~np.isnan(probs).any(axis=1)
        if flt.predicted is not None:
            keep &= known & (pred == flt.predicted)
        if flt.correct is not None:
            keep &= known & ((pred == table.labels) == flt.correct)
    if flt.in_alignment_set is not None and members is not None:
        keep &= members if flt.in_alignment_set else ~members
    if flt.verdict is not None and verdicts is not None:
        keep &= getattr(verdicts, flt.verdict)
    return np.flatnonzero(keep)


def sort_rows(
    rows: np.ndarray,
    table: SampleTable,
    key: str = "id",
    descending: bool = False,
    probs: np.ndarray | None = None,
) -> np.ndarray:
    """Rows reordered by id, entropy or confidence (ties by id; without predictions: by id)."""
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r}; use one of {', '.join(SORT_KEYS)}")
    if key == "id" or probs is None:
        out = rows  # table rows are in id order already
        return out[::-1].copy() if descending else out
    values = (entropy(probs) if key == "entropy" else confidence(probs))[rows]
    values = -values if descending else values
    values = np.where(np.isnan(values), np.inf, values)  # images without a prediction go last
    order = np.lexsort((table.ids[rows], values))
    return rows[order]


def alignment_membership(project, table: SampleTable, set_id: int | None) -> np.ndarray:
    """Boolean array: is each table row in the alignment set (all False without one)."""
    members = np.zeros(len(table), bool)
    if set_id is None:
        return members
    ids = np.asarray(project.alignment_sample_ids(set_id), dtype=np.int64)
    if len(ids):
        members[np.isin(table.ids, ids)] = True
    return members
