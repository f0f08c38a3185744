"""Critics turn a model's evidence into verdicts per segment (METHOD.md steps 5-7).

Every critic implements ``Critic.critique``: given an image, its true label, the class description and
the PPEPS-WGM segments of the model's attribution, it returns free text (what the expert reads) and one
verdict per segment. The LVLM critic (critic + judge) plugs in here; this module holds the critics that
need no LVLM: the expert's own stored verdicts, and the ground-truth critic for benchmarks.

One factory builds every critic: ``critic_from_identity`` takes what a run records as its critic
(``Critic.identity()``) and ``critic_spec`` turns the user's choice (the command line's --critic and its
options, the window's Critique dialog) into that same shape, so a new critique and the resumption of an
old one are built by one code path. An LVLM critic is built by a function the caller hands in
(lvlm/factory.py makes it from a loaded model): the core knows no LVLM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

if TYPE_CHECKING:  # torch is imported where it is used: the browser reads the verdict names before it
    import torch

SPURIOUS, RELEVANT, UNDECIDED = "spurious", "relevant", "undecided"
VERDICTS = (SPURIOUS, RELEVANT, UNDECIDED)


@dataclass
class CritiqueRequest:
    sample_id: int
    image: torch.Tensor  # (C, H, W) in [0, 1]
    label: int
    class_name: str
    class_description: str
    attribution: torch.Tensor  # (H, W), summed over channels
    segments: torch.Tensor  # (H, W) int, segment index 0..J-1
    segment_evidence: list[float]  # share of the segmented evidence per segment
    gt_mask: torch.Tensor | None = None  # (H, W) bool, only known on benchmark data
    # what was segmented: the attribution's "positive" part or its "absolute" value
    evidence_kind: str = "positive"

    def evidence(self) -> torch.Tensor:
        """The non-negative evidence map the segments were fitted to (core.method.segment.evidence_map)."""
        from lvlmva_desktop.core.method.segment import evidence_map

        return evidence_map(self.attribution, self.evidence_kind)


@dataclass
class SegmentVerdict:
    segment: int  # 0-based index
    verdict: str  # one of VERDICTS
    rationale: str = ""
    # the critic's own probability of the verdict it gave, in (0, 1] (an LVLM judge's token probability,
    # lvlm/critic.py); None where the critic has none (the simulated critic, the expert, a server without
    # log-probabilities). The review queue asks about the least sure verdicts first (core/views/review.py).
    confidence: float | None = None


@dataclass
class Critique:
    sample_id: int
    critic: str
    text: str
    verdicts: list[SegmentVerdict]
    raw: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Critic(Protocol):
    """What every critic offers; ``identity`` is recorded in each run so an auditor can reproduce it."""

    name: str

    def identity(self) -> dict: ...

    def critique(
        self, requests: Sequence[CritiqueRequest], state: TaskState | None = None
    ) -> Iterator[Critique]: ...


def critique_each(
    requests: Sequence[CritiqueRequest],
    state: TaskState | None,
    one: Callable[[CritiqueRequest], Critique],
) -> Iterator[Critique]:
    """``one(request)`` for each request in order, for a critic that judges one image at a time: a cancel
    check before each image, progress ("critique") after the caller has taken its critique."""
    state = ensure_state(state)
    for i, r in enumerate(requests):
        state.check()
        yield one(r)
        state.progress(i + 1, len(requests), "critique")


def segment_mask(segments: torch.Tensor, verdicts: Sequence[SegmentVerdict]) -> torch.Tensor:
    """A = union of the segments judged spurious (undecided is not spurious)."""
    import torch

    mask = torch.zeros_like(segments, dtype=torch.bool)
    for v in verdicts:
        if v.verdict == SPURIOUS:
            mask |= segments == v.segment
    return mask


def ground_truth_segment_labels(
    attribution: torch.Tensor,
    segments: torch.Tensor,
    gt_mask: torch.Tensor | None,
    n_segments: int,
    threshold: float = 0.5,
) -> list[bool]:
    """True for a segment whose evidence lies mostly (>= threshold) inside the artefact mask.

    ``attribution``: the map the segments were fitted to; its positive part is the evidence, so pass
    ``CritiqueRequest.evidence()`` for segments of the absolute value. A segment without evidence is judged
    by the share of its pixels inside the mask.
    """
    import torch

    out = []
    pos = attribution.clamp_min(0)
    gt = gt_mask.bool() if gt_mask is not None else torch.zeros_like(segments, dtype=torch.bool)
    for s in range(n_segments):
        sel = segments == s
        if not bool(sel.any()):
            out.append(False)
            continue
        mass = float(pos[sel].sum())
        if mass > 0:
            share = float(pos[sel & gt].sum()) / mass
        else:
            share = float((sel & gt).sum()) / float(sel.sum())
        out.append(share >= threshold)
    return out


class GroundTruthCritic:
    """Benchmark-only stand-in: judges segments from ground-truth artefact masks.

    With ``error_rate`` 0 it is the paper's upper bound ("RRR with ground-truth masks" through segments);
    with an error rate e it flips each verdict with probability e, simulating an LVLM whose verdict
    accuracy is 1 - e. It is never offered as a real critic: its name says "simulated" everywhere.

    ``errors`` says which verdicts may flip: "both" (default: every verdict, independently), "missed"
    (only spurious -> relevant: the critic overlooks artefacts) or "false_spurious" (only relevant ->
    spurious: the critic forbids real evidence). The one-sided kinds exist to measure which error hurts.
    """

    ERROR_KINDS = ("both", "missed", "false_spurious")

    def __init__(
        self, error_rate: float = 0.0, seed: int = 0, threshold: float = 0.5, errors: str = "both"
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be in [0, 1]")
        if errors not in self.ERROR_KINDS:
            raise ValueError(f"errors must be one of {self.ERROR_KINDS}")
        self.error_rate = error_rate
        self.seed = seed
        self.threshold = threshold
        self.errors = errors
        acc = 1.0 - error_rate
        kind = "" if errors == "both" else f", {errors.replace('_', ' ')} errors only"
        self.name = f"simulated-critic(ground truth, verdict accuracy {acc:.2f}{kind}) [benchmark only]"

    def identity(self) -> dict:
        return {
            "kind": "ground_truth_simulated",
            "benchmark_only": True,
            "error_rate": self.error_rate,
            "errors": self.errors,
            "seed": self.seed,
            "threshold": self.threshold,
        }

    def _flip(self, sample_id: int, segment: int) -> bool:
        if self.error_rate <= 0:
            return False
        h = hashlib.sha256(f"{self.seed}:{sample_id}:{segment}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < self.error_rate

    def critique(
        self, requests: Sequence[CritiqueRequest], state: TaskState | None = None
    ) -> Iterator[Critique]:
        yield from critique_each(requests, state, self._critique_one)

    def _critique_one(self, r: CritiqueRequest) -> Critique:
        n_seg = len(r.segment_evidence)
        truth = ground_truth_segment_labels(r.evidence(), r.segments, r.gt_mask, n_seg, self.threshold)
        verdicts, lines = [], []
        for s, t in enumerate(truth):
            allowed = self.errors == "both" or (self.errors == "missed") == t
            flipped = allowed and self._flip(r.sample_id, s)
            spurious = t != flipped
            verdicts.append(SegmentVerdict(s, SPURIOUS if spurious else RELEVANT))
            lines.append(
                f"Segment {s + 1} ({r.segment_evidence[s]:.0%} of the evidence): "
                f"{'inside' if t else 'outside'} the known artefact region"
                f"{' (verdict deliberately flipped)' if flipped else ''} -> {verdicts[-1].verdict}."
            )
        text = "Simulated critic for benchmarks (no LVLM involved).\n" + "\n".join(lines)
        return Critique(r.sample_id, self.name, text, verdicts, raw={"truth": truth})


class ExpertCritic:
    """The expert's own verdicts, entered by hand and stored in the project; missing ones are undecided."""

    name = "expert"

    def __init__(self, verdicts: Mapping[int, Mapping[int, str]]) -> None:
        for per in verdicts.values():
            for v in per.values():
                if v not in VERDICTS:
                    raise ValueError(f"Unknown verdict '{v}'; use one of {VERDICTS}.")
        self.verdicts = verdicts

    def identity(self) -> dict:
        return {"kind": "expert"}

    def critique(
        self, requests: Sequence[CritiqueRequest], state: TaskState | None = None
    ) -> Iterator[Critique]:
        yield from critique_each(requests, state, self._critique_one)

    def _critique_one(self, r: CritiqueRequest) -> Critique:
        given = self.verdicts.get(r.sample_id, {})
        verdicts = [SegmentVerdict(s, given.get(s, UNDECIDED)) for s in range(len(r.segment_evidence))]
        text = "Verdicts entered by the expert." if given else "No expert verdict entered for this image."
        return Critique(r.sample_id, self.name, text, verdicts)


# -- one factory: a critic from its recorded identity ----------------------------------------------------
SIMULATED_KIND, EXPERT_KIND, LVLM_KIND = "ground_truth_simulated", "expert", "lvlm"
# the user's names for the critics (--critic, the Critique dialog) -> the kind their identity records
CHOICES = {"lvlm": LVLM_KIND, "simulated": SIMULATED_KIND, "expert": EXPERT_KIND}

# the recorded LVLM critic settings (lvlm.critic.CriticSettings as a dict) -> the LVLM critic
LVLMCriticBuilder = Callable[[dict], Critic]


class UnknownCritic(ValueError):
    """A recorded or chosen critic kind this program cannot build."""


def critic_spec(
    choice: str,
    *,
    verdict_accuracy: float = 1.0,
    seed: int = 0,
    lvlm_settings: Mapping[str, Any] | None = None,
) -> dict:
    """The user's choice of critic as the identity a run records (``critic_from_identity`` builds it).

    ``verdict_accuracy`` and ``seed``: the simulated critic's (its error rate is 1 - accuracy, rounded to
    6 digits); ``lvlm_settings``: the LVLM critic's settings that differ from the defaults (one_call,
    batch_size, use_cache, critic_max_new_tokens, ...). An LVLM spec holds no model: the caller loads it.
    """
    if choice == "simulated":
        acc = float(verdict_accuracy)
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"The simulated critic's verdict accuracy must be between 0 and 1, got {acc}.")
        return GroundTruthCritic(error_rate=round(1.0 - acc, 6), seed=int(seed)).identity()
    if choice == "expert":
        return {"kind": EXPERT_KIND}
    if choice == "lvlm":
        return {"kind": LVLM_KIND, "settings": dict(lvlm_settings or {})}
    raise UnknownCritic(f"Unknown critic '{choice}'; choose one of {', '.join(CHOICES)}.")


def critic_from_identity(
    identity: Mapping[str, Any],
    project: Any = None,
    expl_id: int | None = None,
    lvlm: LVLMCriticBuilder | None = None,
) -> Critic:
    """The critic an identity describes: one a run recorded (to resume it) or one ``critic_spec`` made.

    The simulated critic is rebuilt from the record alone; the expert critic reads the expert's verdicts on
    explanation ``expl_id`` from ``project``; an LVLM critic is made by ``lvlm`` from the recorded
    settings (a ValueError in words if there is none). An unknown kind raises ``UnknownCritic``.
    """
    kind = identity.get("kind") if isinstance(identity, Mapping) else None
    if kind == SIMULATED_KIND:
        return GroundTruthCritic(
            error_rate=float(identity.get("error_rate", 0.0)),
            seed=int(identity.get("seed", 0)),
            threshold=float(identity.get("threshold", 0.5)),
            errors=str(identity.get("errors", "both")),
        )
    if kind == EXPERT_KIND:
        verdicts = project.expert_verdicts(expl_id) if project is not None and expl_id is not None else {}
        return ExpertCritic(verdicts)
    if kind == LVLM_KIND:
        if lvlm is None:
            raise ValueError(
                "An LVLM critic needs its vision-language model: a model folder or an OpenAI-compatible server."
            )
        return lvlm(dict(identity.get("settings") or {}))
    known = ", ".join(sorted(CHOICES.values()))
    raise UnknownCritic(
        f"The critic kind '{kind}' is not one this program knows ({known})."
        if kind
        else "No critic is recorded."
    )
