"""The viewer's computations, without Qt: a few images decoded on demand, their attributions (and
segments) computed as step 3 computes them, and what the expert sees about each segment's verdicts.

Used by the heatmap viewer (gui/heatmap.py), the verdicts table (gui/verdicts.py), the chat (lvlm/chat.py),
the audit report's figures (report/) and the review queue; nothing here is stored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from lvlmva_desktop.core.method.explain import ExplainSettings, attribute, reference_draw, references_from
from lvlmva_desktop.core.method.segment import SegmentSettings, ppeps_wgm
from lvlmva_desktop.core.method.train import predict_proba
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.store.project import Project, ProjectError


@dataclass
class SampleImages:
    """A few decoded images with labels and artefact masks; rows follow ``sample_ids``."""

    sample_ids: list[int]
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1], at the project's image size
    y: torch.Tensor  # (N,) int64
    masks: torch.Tensor  # (N, H, W) bool (all False where there is no mask)
    has_mask: torch.Tensor  # (N,) bool
    splits: list[str]


def load_samples(project: Project, sample_ids: list[int]) -> SampleImages:
    """Decode a few images exactly as ``load_split`` does, without decoding (or loading) a whole split."""
    ids = [int(s) for s in sample_ids]
    rows = project.sample_rows(ids)
    missing = [s for s in ids if s not in rows]
    if missing:
        raise ProjectError(f"No image {missing[0]} in this project.")
    h, w = project.image_size
    x = torch.zeros(len(ids), project.channels, h, w)
    masks = torch.zeros(len(ids), h, w, dtype=torch.bool)
    has_mask = torch.zeros(len(ids), dtype=torch.bool)
    for i, s in enumerate(ids):
        x[i], mask = project.decode_sample(rows[s])
        if mask is not None:
            masks[i], has_mask[i] = mask, True
    y = torch.tensor([rows[s]["label"] for s in ids], dtype=torch.int64)
    return SampleImages(ids, x, y, masks, has_mask, [rows[s]["split"] for s in ids])


@dataclass
class SampleExplanations:
    """Attributions (and optionally PPEPS-WGM segments) of a few images; rows follow ``sample_ids``."""

    sample_ids: list[int]
    maps: torch.Tensor  # (N, H, W) toward the true label, summed over channels
    deltas: torch.Tensor  # (N,)
    segments: torch.Tensor | None = None  # (N, H, W) int64, 0-based segment per pixel
    evidence: torch.Tensor | None = None  # (N, J) share of positive evidence per segment
    images: SampleImages | None = None  # the decoded images (load_samples), for callers that need them
    probs: torch.Tensor | None = None  # (N, K) the model's predicted probabilities, with predict=True


def explain_samples(
    project: Project,
    model_id: int,
    sample_ids: list[int],
    explain: ExplainSettings,
    device: torch.device,
    state: TaskState | None = None,
    segment: SegmentSettings | None = None,
    predict: bool = False,
) -> SampleExplanations:
    """Attributions of any images (train or test) for one model, as step 3 computes them, for the viewer.
    With ``predict`` the model's probabilities come along (the chat's note), from the model loaded here.

    The background is drawn from the training split as in ``explain_alignment_set``, so for the same model
    and settings the maps agree with a stored explanation. Nothing is stored; with ``segment`` the maps are
    also segmented (PPEPS-WGM).
    """
    state = ensure_state(state)
    model, _ = project.load_model(model_id)
    images = load_samples(project, sample_ids)
    bg = _references(project, explain, images.x)
    state.progress(0.05, None, "attributions")
    end = 0.8 if segment is not None else 1.0
    attr = attribute(model, images.x, images.y, bg, explain, device, state.child(0.05, end))
    out = SampleExplanations(images.sample_ids, attr.maps, attr.deltas, images=images)
    if predict:
        out.probs = predict_proba(model, images.x, device)
    if segment is not None:
        seg = ppeps_wgm(attr.maps.to(device), segment, state.child(end, 1.0))
        out.segments = seg.labels.cpu()
        out.evidence = seg.evidence.cpu()
    return out


#: references made by explain_samples, newest last: (kind, image shape, drawn images' sha256) -> images
_REFERENCES: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_REFERENCES_LOCK = threading.Lock()  # the viewer's and the report's jobs run in other threads


def _references(project: Project, explain: ExplainSettings, like: torch.Tensor) -> torch.Tensor:
    """The references of ``reference_images(train.x, explain)``, decoding only the drawn training images
    (up to 256 for the median), and kept for the next call: the viewer asks for them at every image."""
    rows = project.samples("train")
    picked = reference_draw(len(rows), explain)
    if picked is None:
        return references_from(None, like, explain)
    if not rows:
        raise ProjectError("The project has no training images to draw the attribution background from.")
    drawn = [rows[i] for i in picked.tolist()]
    key = (explain.background, tuple(like.shape[1:]), tuple(r["sha256"] for r in drawn))
    with _REFERENCES_LOCK:
        if key in _REFERENCES:
            _REFERENCES.move_to_end(key)
            return _REFERENCES[key]
    # from the decoded training split when there is one (read in place), else decoded image by image
    x = project.cached_images("train", picked.tolist())
    if x is None:
        x = load_samples(project, [int(r["id"]) for r in drawn]).x
    refs = references_from(x, like, explain)
    with _REFERENCES_LOCK:
        _REFERENCES[key] = refs
        while len(_REFERENCES) > 4:
            _REFERENCES.popitem(last=False)
    return refs


@dataclass
class SegmentVerdictRow:
    """What the expert sees about one segment: the critic's and the expert's words kept apart."""

    segment: int  # 0-based; shown as segment + 1
    evidence: float  # share of the image's positive evidence
    critic: str | None  # the critic's latest verdict, also after the expert overrode it
    critic_name: str | None
    expert: str | None  # the expert's latest verdict, None if the expert has not spoken
    expert_author: str | None
    effective: str | None  # what alignment uses: the expert's if any, else the critic's
    source: str | None  # "expert", "critic" or None (no verdict yet)


def segment_verdict_rows(
    project: Project, expl_id: int, sample_id: int, tensors: dict[str, torch.Tensor] | None = None
) -> list[SegmentVerdictRow]:
    """One row per segment of an image of an explanation (``tensors``: the loaded explanation, if at hand)."""
    t = tensors if tensors is not None else project.explanation(expl_id)[1]
    ids = t["sample_ids"].tolist()
    if sample_id not in ids:
        raise ProjectError(f"Image {sample_id} is not in the alignment set of explanation {expl_id}.")
    evidence = t["evidence"][ids.index(sample_id)].tolist()
    latest: dict[str, dict] = {"critic": {}, "expert": {}}
    for r in project.sample_verdict_rows(expl_id, sample_id):
        latest.setdefault(r["source"], {})[r["segment"]] = r
    effective = project.effective_verdicts(expl_id).get(sample_id, {})
    out = []
    for s, e in enumerate(evidence):
        c, x, eff = latest["critic"].get(s), latest["expert"].get(s), effective.get(s)
        out.append(
            SegmentVerdictRow(
                segment=s,
                evidence=float(e),
                critic=c["verdict"] if c else None,
                critic_name=c["author"] if c else None,
                expert=x["verdict"] if x else None,
                expert_author=x["author"] if x else None,
                effective=eff["verdict"] if eff else None,
                source=eff["source"] if eff else None,
            )
        )
    return out
