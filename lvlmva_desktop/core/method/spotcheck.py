"""Qualifying the critic: a blind spot-check of its verdicts by the expert (docs/method.md).

A stratified random sample of the critic's verdicts is drawn (strata: the critic's verdict, spurious /
relevant / undecided; proportional allocation with at least ``MIN_PER_STRATUM`` per non-empty stratum; only
segments that hold evidence and that the expert has not decided yet). Each segment is shown to the expert
without the critic's answer, so the expert's judgement is not anchored on it. ``score`` compares the
answers with the critic's verdicts:

- an expert's "undecided" is not counted (the expert could not tell, so there is nothing to compare with);
  the critic's own "undecided" counts as wrong where the expert decided (as in the method's verdict
  accuracy, docs/method.md), so the spot-check measures the quantity the benchmarks measured;
- the accuracy over all strata weights each stratum by its share of the critic's verdicts (the sample's
  small strata are oversampled), with a 95% Wilson interval on Kish's effective sample size for those
  weights (with a proportional sample this is the plain Wilson interval of k agreements in n);
- the accuracy on the critic's "spurious" and on its "relevant" verdicts are plain Wilson intervals within
  the stratum. The "spurious" one matters most: a false "spurious" verdict forbids real evidence, and in
  the benchmark 13% of those undid the alignment, while missing artefacts cost little (docs/benchmarks.md,
  "Which verdict error hurts").

``gap_share`` says what an accuracy means: the share of the worst-group-accuracy gap (the original model ->
alignment with the true artefact masks) that the method recovered at that verdict accuracy, interpolated
linearly between measured points: the project's own ``lvlmva qualify`` run where there is one, else the
built-in benchmark figures (resources/benchmarks/verdict_accuracy_gap.json, from docs/benchmarks.md).

``save_spot_check`` stores the sample, the answers and the result as a "spot_check" run, writes the
expert's decided answers as the expert's verdicts (they count like any other), and logs the hashes of the
sample and the answers in the audit log, so the report's figures can be recomputed and proven from the
data (``latest_spot_check``).
"""

from __future__ import annotations

import json
import math
import random
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lvlmva_desktop.core.method.critic import RELEVANT, SPURIOUS, UNDECIDED, VERDICTS
from lvlmva_desktop.core.runtime.timefmt import when
from lvlmva_desktop.core.store import audit as audit_log
from lvlmva_desktop.core.store.project import Project, ProjectError

if TYPE_CHECKING:  # torch and Pillow are imported where pictures are made
    import torch
    from PIL import Image

SPOT_CHECK = "spot_check"  # the run kind and the audit action
STRATA = (SPURIOUS, RELEVANT, UNDECIDED)
DECIDED = (SPURIOUS, RELEVANT)
MIN_PER_STRATUM = 5
MIN_EVIDENCE = 0.01  # a segment with less of the image's evidence holds nothing to judge
DEFAULT_N = 40
Z95 = 1.959963984540054
BENCHMARK_FILE = ("benchmarks", "verdict_accuracy_gap.json")  # under resources/
NO_MASKS = (
    "The simulated expert answers from the ground-truth artefact masks, and this project has none (its "
    "manifest names no mask images). Answer the spot-check yourself (leave out --expert simulated)."
)


@dataclass(frozen=True)
class SpotItem:
    """One segment to check: which image and segment (0-based), and what the critic said (hidden from the
    expert until the end)."""

    sample_id: int
    segment: int
    critic_verdict: str
    evidence: float  # share of the image's evidence in the segment
    critic: str = ""  # the critic's name (the verdict's author)

    def key(self) -> list:
        """What the audit log's sample hash covers, per item."""
        return [self.sample_id, self.segment, self.critic_verdict]

    def to_dict(self) -> dict:
        return asdict(self)


class SpotSample(list):
    """The drawn items (a list of SpotItem, in the order shown) with how they were drawn."""

    def __init__(
        self,
        items: Sequence[SpotItem] = (),
        seed: int | None = None,
        explanation_id: int | None = None,
        population: dict[str, int] | None = None,
        min_evidence: float = MIN_EVIDENCE,
        min_per_stratum: int = MIN_PER_STRATUM,
    ) -> None:
        super().__init__(items)
        self.seed = seed
        self.explanation_id = explanation_id
        self.population = dict(population or {})
        self.min_evidence = min_evidence
        self.min_per_stratum = min_per_stratum


# -- drawing ------------------------------------------------------------------------------------------------
def critic_population(
    project: Project, expl_id: int, min_evidence: float = MIN_EVIDENCE
) -> dict[str, list[SpotItem]]:
    """The critic's verdicts that can be checked, per stratum: its latest verdict per segment, on segments
    with at least ``min_evidence`` of their image's evidence and without an expert verdict."""
    _, t = project.explanation(expl_id)
    ids = [int(s) for s in t["sample_ids"].tolist()]
    row_of = {sid: k for k, sid in enumerate(ids)}
    evidence = t["evidence"]
    # the effective verdicts: an expert's word where given (not checked), else the critic's latest
    latest = {
        (int(sid), int(seg)): (v["verdict"], v["author"] or "")
        for sid, per in project.effective_verdicts(expl_id).items()
        for seg, v in per.items()
        if v["source"] != "expert"
    }
    out: dict[str, list[SpotItem]] = {s: [] for s in STRATA}
    for (sid, seg), (verdict, author) in sorted(latest.items()):
        if sid not in row_of or verdict not in out:
            continue
        k = row_of[sid]
        if not 0 <= seg < evidence.shape[1]:
            continue
        share = float(evidence[k, seg])
        if share >= min_evidence:
            out[verdict].append(SpotItem(sid, seg, verdict, share, author))
    return out


def allocate(counts: dict[str, int], n: int, min_per_stratum: int = MIN_PER_STRATUM) -> dict[str, int]:
    """How many of ``n`` to draw from each stratum: proportional to its size, at least ``min_per_stratum``
    from every non-empty stratum (fewer where the stratum or ``n`` is smaller), never more than it holds."""
    total = sum(counts.values())
    n = max(0, min(int(n), total))
    alloc = {s: 0 for s in counts}
    if n == 0:
        return alloc
    nonempty = [s for s, c in counts.items() if c > 0]
    floor_each = min(min_per_stratum, n // len(nonempty)) if nonempty else 0
    base = {s: min(counts[s], floor_each) for s in counts}
    target = {s: n * counts[s] / total for s in counts}
    alloc = {s: min(counts[s], max(base[s], int(math.floor(target[s])))) for s in counts}
    while sum(alloc.values()) > n:  # the floors took more than the proportional share
        s = max((s for s in counts if alloc[s] > base[s]), key=lambda s: (alloc[s] - target[s], s))
        alloc[s] -= 1
    while sum(alloc.values()) < n:  # largest remainders first
        s = max((s for s in counts if alloc[s] < counts[s]), key=lambda s: (target[s] - alloc[s], s))
        alloc[s] += 1
    return alloc


def draw_sample(
    project: Project,
    expl_id: int,
    n: int = DEFAULT_N,
    seed: int | None = None,
    min_evidence: float = MIN_EVIDENCE,
    min_per_stratum: int = MIN_PER_STRATUM,
) -> SpotSample:
    """A stratified random sample of ``n`` of the critic's verdicts on explanation ``expl_id`` (all of them
    when there are fewer), in random order so that the order tells nothing about the verdict. ``seed``: None
    draws one, which is kept with the sample (``.seed``) and stored with the spot-check."""
    if n < 1:
        raise ValueError("A spot-check needs at least one segment (--n 1 or more).")
    strata = critic_population(project, expl_id, min_evidence)
    counts = {s: len(v) for s, v in strata.items()}
    if sum(counts.values()) == 0:
        if not project.has_verdicts(expl_id, "critic"):
            raise ProjectError(
                f"Explanation {expl_id} has no critique yet: there is no critic verdict to check. Run the "
                "critique first (`lvlmva critique PROJ`, or Method > Critique… in the window)."
            )
        raise ProjectError(
            f"Every critic verdict of explanation {expl_id} on a segment with evidence has been decided by the "
            "expert already: there is nothing left to check blind."
        )
    if seed is None:
        seed = secrets.randbelow(2**31)
    rng = random.Random(int(seed))
    alloc = allocate(counts, n, min_per_stratum)
    items: list[SpotItem] = []
    for s in STRATA:
        items += rng.sample(strata[s], alloc[s])
    rng.shuffle(items)
    return SpotSample(items, int(seed), expl_id, counts, min_evidence, min_per_stratum)


# -- scoring ------------------------------------------------------------------------------------------------
def wilson_interval(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n (k and n may be effective, non-integer counts); with
    no observation, the whole range (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(k / n, 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class StratumScore:
    """The expert's answers on the segments the critic gave one verdict."""

    verdict: str  # the critic's verdict
    population: int  # how many such verdicts could be checked
    drawn: int
    answered: int
    counted: int  # answered spurious or relevant by the expert
    agreed: int
    expert_undecided: int
    accuracy: float | None
    interval: tuple[float, float] | None


@dataclass
class SpotCheckResult:
    n_drawn: int
    n_answered: int
    n_counted: int  # the expert decided (spurious or relevant): these are compared
    n_agreed: int
    n_expert_undecided: int
    accuracy: float | None  # stratum-weighted share of the critic's verdicts the expert agreed with
    interval: tuple[float, float] | None  # 95% Wilson interval
    n_effective: float  # Kish's effective sample size of the weighted accuracy
    strata: dict[str, StratumScore] = field(default_factory=dict)

    def stratum(self, verdict: str) -> StratumScore | None:
        return self.strata.get(verdict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        for s in d["strata"].values():
            s["interval"] = list(s["interval"]) if s["interval"] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SpotCheckResult:
        def iv(v):
            return tuple(v) if v is not None else None

        strata = {k: StratumScore(**{**v, "interval": iv(v.get("interval"))}) for k, v in d["strata"].items()}
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k not in ("strata", "interval")}
        return cls(**fields, interval=iv(d.get("interval")), strata=strata)


def score(
    items: Sequence[SpotItem], answers: Sequence[str | None], population: dict[str, int] | None = None
) -> SpotCheckResult:
    """Compare the expert's ``answers`` (aligned with ``items``; None or missing: not answered) with the
    critic's verdicts; see the module docstring for what is counted and how the strata are weighted.
    ``population``: the critic's verdicts per stratum (a SpotSample's own by default)."""
    answers = list(answers)
    if len(answers) > len(items):
        raise ValueError(f"{len(answers)} answers for {len(items)} segments.")
    for a in answers:
        if a is not None and a not in VERDICTS:
            raise ValueError(f"Unknown answer '{a}'; use one of {', '.join(VERDICTS)}.")
    if population is None:
        population = getattr(items, "population", None) or {}
    drawn = {s: sum(i.critic_verdict == s for i in items) for s in STRATA}
    pop = {s: int(population.get(s, drawn[s])) for s in STRATA}
    strata: dict[str, StratumScore] = {}
    for s in STRATA:
        given = [(i, a) for i, a in zip(items, answers) if i.critic_verdict == s and a is not None]
        counted = [(i, a) for i, a in given if a in DECIDED]
        agreed = sum(a == i.critic_verdict for i, a in counted)
        if not drawn[s] and not pop[s]:
            continue
        strata[s] = StratumScore(
            verdict=s,
            population=pop[s],
            drawn=drawn[s],
            answered=len(given),
            counted=len(counted),
            agreed=agreed,
            expert_undecided=len(given) - len(counted),
            accuracy=agreed / len(counted) if counted else None,
            interval=wilson_interval(agreed, len(counted)) if counted else None,
        )
    used = [st for st in strata.values() if st.counted > 0]
    n_counted = sum(st.counted for st in used)
    accuracy = interval = None
    n_eff = 0.0
    if used:
        weight_total = sum(max(st.population, st.counted) for st in used)
        weights = {st.verdict: max(st.population, st.counted) / weight_total for st in used}
        accuracy = sum(weights[st.verdict] * st.accuracy for st in used)
        # Kish: n_eff = (sum of unit weights)^2 / sum of squared unit weights, unit weight W_h / m_h
        n_eff = 1.0 / sum(weights[st.verdict] ** 2 / st.counted for st in used)
        interval = wilson_interval(accuracy * n_eff, n_eff)
    return SpotCheckResult(
        n_drawn=len(items),
        n_answered=sum(a is not None for a in answers),
        n_counted=n_counted,
        n_agreed=sum(st.agreed for st in used),
        n_expert_undecided=sum(st.expert_undecided for st in strata.values()),
        accuracy=accuracy,
        interval=interval,
        n_effective=n_eff,
        strata=strata,
    )


# -- what an accuracy means ---------------------------------------------------------------------------------
@dataclass
class MeasuredPoints:
    """Verdict accuracy -> share of the WGA gap recovered, per data set, and where the figures come from."""

    source: str  # "project" (its own qualify run) or "benchmark" (the built-in figures)
    description: str
    sets: dict[str, list[tuple[float, float]]]
    note: str = ""


def benchmark_points() -> MeasuredPoints:
    """The built-in benchmark figures (resources/benchmarks/verdict_accuracy_gap.json)."""
    from lvlmva_desktop.core.runtime.resources import resources_dir

    path = resources_dir().joinpath(*BENCHMARK_FILE)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    sets = {name: sorted((float(a), float(r)) for a, r in s["points"]) for name, s in data["sets"].items()}
    seeds = {s.get("seeds") for s in data["sets"].values()}
    per = f", {seeds.pop()} seeds each" if len(seeds) == 1 else ""
    description = (
        f"built-in benchmark figures ({len(sets)} sets{per}: {', '.join(sets)}; {data['source']}; "
        f"{data['measured_with']})"
    )
    return MeasuredPoints("benchmark", description, sets)


def project_points(project: Project) -> MeasuredPoints | None:
    """The project's own latest finished qualification (``lvlmva qualify``), if it measured a gap: its
    simulated critics' measured verdict accuracy against the share of the gap each recovered."""
    from lvlmva_desktop.core.method.qualify import sim_row

    row = project.latest_finished_run("qualify")
    if row is None:
        return None
    res = json.loads(row["results"] or "{}")
    points = []
    for acc, measured in (res.get("verdict_accuracy") or {}).items():
        share = (res.get("recovered") or {}).get(sim_row(float(acc)))
        if measured is not None and share is not None:
            points.append((float(measured), float(share)))
    if len(points) < 2:
        return None
    import time

    when = time.strftime("%Y-%m-%d", time.localtime(row["started"])) if row["started"] else ""
    return MeasuredPoints(
        "project",
        f"this project's own qualification (`lvlmva qualify`, run {row['id']}{', ' + when if when else ''})",
        {"this project": sorted(points)},
    )


def measured_points(project: Project | None = None) -> MeasuredPoints:
    """The project's own qualification where it has one with a gap to recover, else the benchmark's."""
    own = project_points(project) if project is not None else None
    if own is not None:
        return own
    points = benchmark_points()
    if project is not None and project.latest_finished_run("qualify") is not None:
        points.note = (
            "The project's qualification measured no gap to recover, so the benchmark's figures apply."
        )
    return points


def interpolate(points: Sequence[tuple[float, float]], x: float) -> tuple[float, str]:
    """The value at ``x`` on the straight lines between ``points`` (sorted by x); outside them, the nearest
    end's value and "below" or "above" (not extrapolated), else ""."""
    pts = sorted(points)
    if x <= pts[0][0]:
        return pts[0][1], "below" if x < pts[0][0] else ""
    if x >= pts[-1][0]:
        return pts[-1][1], "above" if x > pts[-1][0] else ""
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return (y0 if x1 == x0 else y0 + (x - x0) * (y1 - y0) / (x1 - x0)), ""
    return pts[-1][1], ""  # not reached


@dataclass
class GapShare:
    """What a verdict accuracy means: the share of the WGA gap recovered at it, per measured set."""

    accuracy: float
    interval: tuple[float, float] | None
    source: str
    description: str
    per_set: dict[str, dict]  # name -> {"share", "outside", "low", "high"}
    share_range: tuple[float, float]  # over the sets, at the accuracy
    interval_range: tuple[float, float] | None  # over the sets and the interval
    lowest_measured: float = 0.0  # the lowest verdict accuracy with a measured share
    note: str = ""

    def sentence(self) -> str:
        def pc(v: float) -> str:
            return f"{100 * v:.0f}%"

        def span(r: tuple[float, float]) -> str:
            return pc(r[0]) if round(100 * r[0]) == round(100 * r[1]) else f"{pc(r[0])} to {pc(r[1])}"

        low = f"the lowest accuracy measured, {self.lowest_measured:.2f}"
        below = self.accuracy < self.lowest_measured
        who = "in this project's qualification" if self.source == "project" else "on the benchmark sets"
        sets = ", ".join(f"{k} {pc(d['share'])}" for k, d in self.per_set.items())
        at = (
            f"At verdict accuracy {self.accuracy:.2f}"
            + (f" (95% interval {self.interval[0]:.2f} to {self.interval[1]:.2f})" if self.interval else "")
            + (f", below {low}: there, {who}," if below else f", {who}")
            + f" LVLM-VA recovered {span(self.share_range)} of the worst-group-accuracy gap between the original "
            "model and alignment with the true artefact masks"
            + (f" ({sets})" if len(self.per_set) > 1 else "")
            + ("; a critic this poor may do even worse" if below else "")
        )
        if self.interval_range is not None:
            at += f"; over the interval, {span(self.interval_range)}"
            if self.interval[0] < self.lowest_measured and not below:
                at += f" (the interval reaches below {low}, where the share may be lower still)"
        return at + f". Source: {self.description}." + (f" {self.note}" if self.note else "")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sentence"] = self.sentence()
        return d


def gap_share(
    accuracy: float,
    project: Project | None = None,
    interval: tuple[float, float] | None = None,
    points: MeasuredPoints | None = None,
) -> GapShare:
    """The share of the ERM -> RRR-GT worst-group-accuracy gap measured at verdict accuracy ``accuracy``,
    interpolated linearly between the measured points of each set (``points``, else ``measured_points``:
    the project's own qualification or the built-in benchmark), with the range over the sets, and over
    ``interval`` (the accuracy's confidence interval) too."""
    points = points or measured_points(project)
    per_set: dict[str, dict] = {}
    for name, pts in points.sets.items():
        share, outside = interpolate(pts, accuracy)
        d = {"share": share, "outside": outside}
        if interval is not None:
            lo, hi = interpolate(pts, interval[0])[0], interpolate(pts, interval[1])[0]
            # the share between the interval's ends, including any measured point inside it
            inside = [y for x, y in pts if interval[0] <= x <= interval[1]]
            d["low"], d["high"] = min([lo, hi, *inside]), max([lo, hi, *inside])
        per_set[name] = d
    shares = [d["share"] for d in per_set.values()]
    irange = None
    if interval is not None:
        irange = (min(d["low"] for d in per_set.values()), max(d["high"] for d in per_set.values()))
    return GapShare(
        accuracy=accuracy,
        interval=interval,
        source=points.source,
        description=points.description,
        per_set=per_set,
        share_range=(min(shares), max(shares)),
        interval_range=irange,
        lowest_measured=min(min(x for x, _ in pts) for pts in points.sets.values()),
        note=points.note,
    )


# -- pictures: one segment outlined, nothing of the critic's ------------------------------------------------
def segment_picture(
    image: torch.Tensor,
    segments: torch.Tensor,
    segment: int,
    min_side: int = 240,
    gap: int = 12,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Two panels side by side: the image as it is, and the same image with the one segment outlined and the
    rest dimmed, enlarged with nearest neighbours (the pixels the classifier saw). No number, no verdict."""
    import numpy as np
    from PIL import Image

    from lvlmva_desktop.core.data.pictures import MASK_COLOUR, outline, scale_for, to_pil

    base = np.asarray(to_pil(image), dtype=np.uint8)
    h, w = base.shape[:2]
    mask = (segments.long().cpu() == int(segment)).numpy()
    if mask.shape != (h, w):
        raise ValueError(f"The segment map is {mask.shape}, the image {(h, w)}.")
    k = scale_for(h, w, min_side)
    plain = base.repeat(k, 0).repeat(k, 1)
    big_mask = mask.repeat(k, 0).repeat(k, 1)
    marked = plain.astype(np.float64)
    marked[~big_mask] = marked[~big_mask] * 0.35 + 20  # the rest dimmed, the segment as it is
    marked = marked.round().clip(0, 255).astype(np.uint8)
    marked = outline(marked, mask, k, MASK_COLOUR)
    if k >= 4:  # a second line inside the first, so that the outline reads at any size
        inner = np.zeros_like(big_mask)
        inner[1:-1, 1:-1] = big_mask[1:-1, 1:-1] & big_mask[:-2, 1:-1] & big_mask[2:, 1:-1]
        inner[1:-1, 1:-1] &= big_mask[1:-1, :-2] & big_mask[1:-1, 2:]
        edge = big_mask & ~inner
        marked[edge] = MASK_COLOUR
    canvas = np.empty((h * k, 2 * w * k + gap, 3), dtype=np.uint8)
    canvas[:] = background
    canvas[:, : w * k] = plain
    canvas[:, w * k + gap :] = marked
    return Image.fromarray(canvas, "RGB")


def item_pictures(
    project: Project,
    expl_id: int,
    items: Sequence[SpotItem],
    min_side: int = 240,
    background: tuple[int, int, int] = (255, 255, 255),
) -> list[Image.Image]:
    """``segment_picture`` of every item, the images decoded once each."""
    from lvlmva_desktop.core.views.viewer import load_samples

    _, t = project.explanation(expl_id)
    ids = [int(s) for s in t["sample_ids"].tolist()]
    wanted = sorted({i.sample_id for i in items})
    pics = load_samples(project, wanted) if wanted else None
    row = {sid: k for k, sid in enumerate(wanted)}
    return [
        segment_picture(
            pics.x[row[i.sample_id]],
            t["segments"][ids.index(i.sample_id)],
            i.segment,
            min_side,
            12,
            background,
        )
        for i in items
    ]


def ground_truth_answers(project: Project, expl_id: int, items: Sequence[SpotItem]) -> list[str]:
    """A simulated expert for benchmarks: each segment judged from the ground-truth artefact masks exactly as
    the simulated critic's truth is (core.method.critic.ground_truth_segment_labels). Needs masks in the data."""
    from lvlmva_desktop.core.method.critic import ground_truth_segment_labels
    from lvlmva_desktop.core.method.pipeline import critique_requests, has_artefact_masks

    if not has_artefact_masks(project):
        raise ProjectError(NO_MASKS)
    reqs = {r.sample_id: r for r in critique_requests(project, expl_id)}
    truth: dict[int, list[bool]] = {}
    out = []
    for i in items:
        r = reqs[i.sample_id]
        if i.sample_id not in truth:
            truth[i.sample_id] = ground_truth_segment_labels(
                r.evidence(), r.segments, r.gt_mask, len(r.segment_evidence)
            )
        out.append(SPURIOUS if truth[i.sample_id][i.segment] else RELEVANT)
    return out


# -- storing and reading back -------------------------------------------------------------------------------
def sample_hash(items: Sequence[SpotItem]) -> str:
    return audit_log.json_hash([i.key() for i in items])


def answers_hash(answers: Sequence[str | None]) -> str:
    return audit_log.json_hash(list(answers))


def save_spot_check(
    project: Project,
    expl_id: int,
    items: Sequence[SpotItem],
    answers: Sequence[str | None],
    result: SpotCheckResult | None = None,
    expert: str = "",
) -> int:
    """Store a spot-check as a "spot_check" run and return its id: the sample (with its seed and strata),
    the answers, the result and its meaning; the expert's decided answers become the expert's verdicts
    (an "undecided" answer changes nothing: the expert could not tell); an audit entry holds the hashes of
    the sample and the answers. ``result`` is checked against the score of ``answers`` (a result that
    the answers do not give is refused). ``expert``: who answered, as recorded (default: the person)."""
    answers = list(answers)
    computed = score(items, answers)
    if result is not None and result.to_dict() != computed.to_dict():
        raise ValueError("The result given is not the score of these answers; nothing was stored.")
    if computed.n_answered == 0:
        raise ValueError("No segment was answered; nothing was stored.")
    meaning = (
        gap_share(computed.accuracy, project, computed.interval) if computed.accuracy is not None else None
    )
    critics = sorted({i.critic for i in items if i.critic})
    settings = {
        "explanation_id": expl_id,
        "n": len(items),
        "seed": getattr(items, "seed", None),
        "min_evidence": getattr(items, "min_evidence", None),
        "min_per_stratum": getattr(items, "min_per_stratum", None),
        "population": getattr(items, "population", None) or {},
        "expert": expert or "the expert (blind: the critic's verdicts were not shown)",
        "critics": critics,
        "sample": [i.to_dict() for i in items],
    }
    with project.run(SPOT_CHECK, settings) as run:
        written = 0
        for item, answer in zip(items, answers):
            if answer in DECIDED:
                project.set_expert_verdict(expl_id, item.sample_id, item.segment, answer)
                written += 1
        run.results = {
            **computed.to_dict(),
            "answers": answers,
            "meaning": meaning.to_dict() if meaning is not None else None,
            "expert_verdicts_written": written,
        }
        project.audit(
            SPOT_CHECK,
            {
                "run_id": run.id,
                "explanation_id": expl_id,
                "expert": settings["expert"],
                "seed": settings["seed"],
                "n_drawn": computed.n_drawn,
                "n_answered": computed.n_answered,
                "accuracy": computed.accuracy,
                "interval": list(computed.interval) if computed.interval else None,
                "expert_verdicts_written": written,
            },
            {"sample": sample_hash(items), "answers": answers_hash(answers)},
        )
    return run.id


def latest_spot_check(project: Project, expl_id: int | None = None) -> dict | None:
    """The newest finished spot-check (of ``expl_id`` where it has one, else of any explanation) as the
    report shows it, recomputed from its stored sample and answers and checked against the audit log."""

    rows = project.finished_runs(SPOT_CHECK)
    if not rows:
        return None
    chosen = rows[0]
    for r in rows:
        if expl_id is not None and json.loads(r["settings"] or "{}").get("explanation_id") == expl_id:
            chosen = r
            break

    settings = json.loads(chosen["settings"] or "{}")
    results = json.loads(chosen["results"] or "{}")
    items = [SpotItem(**d) for d in settings.get("sample", [])]
    answers = results.get("answers", [])
    recomputed = score(items, answers, settings.get("population") or None)
    stored = SpotCheckResult.from_dict({k: v for k, v in results.items() if k in _RESULT_KEYS})
    # the newest spot-check entry of this run: only those rows are read, not the whole log
    logged = project.logged_entry(SPOT_CHECK, "run_id", chosen["id"])
    proven = (
        logged is not None
        and isinstance(logged["hashes"], dict)
        and logged["hashes"].get("sample") == sample_hash(items)
        and logged["hashes"].get("answers") == answers_hash(answers)
        and recomputed.to_dict() == stored.to_dict()
    )
    meaning = results.get("meaning") or {}
    return {
        "run_id": chosen["id"],
        "explanation_id": settings.get("explanation_id"),
        "same_explanation": expl_id is None or settings.get("explanation_id") == expl_id,
        "started": when(chosen["started"]),
        "user": chosen["user"] or "",
        "expert": settings.get("expert", ""),
        "critics": settings.get("critics", []),
        "seed": settings.get("seed"),
        "population": settings.get("population", {}),
        "result": stored,
        "meaning": meaning.get("sentence", ""),
        "meaning_source": meaning.get("source", ""),
        "written": results.get("expert_verdicts_written", 0),
        "proven": proven,
        "audit_entry": logged["id"] if logged else None,
        "sample_sha256": sample_hash(items),
        "answers_sha256": answers_hash(answers),
    }


_RESULT_KEYS = set(SpotCheckResult.__dataclass_fields__)


def summary_lines(result: SpotCheckResult) -> list[str]:
    """The result in words, one line each: the accuracy with its interval, then per verdict."""

    def iv(r: tuple[float, float] | None) -> str:
        return "" if r is None else f" (95% Wilson interval {r[0]:.2f} to {r[1]:.2f})"

    if result.accuracy is None:
        lines = ["Verdict accuracy: not measured (the expert decided none of the segments)."]
    else:
        weighted = ""
        if f"{result.accuracy:.3f}" != f"{result.n_agreed / result.n_counted:.3f}":
            weighted = " (the accuracy weights each verdict by its share of the critic's verdicts)"
        lines = [
            f"Verdict accuracy: {result.accuracy:.3f}{iv(result.interval)}; the expert agreed with "
            f"{result.n_agreed} of {result.n_counted} verdicts decided{weighted}."
        ]
    for s in STRATA:
        st = result.strata.get(s)
        if st is None or st.drawn == 0:
            continue
        acc = "n/a" if st.accuracy is None else f"{st.accuracy:.3f}"
        lines.append(
            f'  on the critic\'s "{s}" verdicts: {acc}{iv(st.interval)}, {st.agreed} of {st.counted} '
            f"(of {st.population} such verdicts)"
        )
    if result.n_expert_undecided:
        lines.append(
            f'  the expert answered "undecided" on {result.n_expert_undecided}: not counted, no verdict written'
        )
    if result.n_answered < result.n_drawn:
        lines.append(f"  {result.n_drawn - result.n_answered} of {result.n_drawn} segments were not answered")
    return lines
