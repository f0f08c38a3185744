"""Qualification: does the method work on this site's own data, before anyone trusts it? (docs/method.md)

On a data set whose manifest gives artefact masks and groups, the whole method is run with the program's
settings and compared with its own upper bound, without an LVLM:

- ERM: the original model (the project's, or one trained with the project's settings);
- RRR-GT (set): alignment with the ground-truth artefact masks of the low-entropy alignment set;
- LVLM-VA sim@a: explanations, segments, verdicts of the *simulated* critic at verdict accuracy a (ground
  truth with deliberate errors, a stand-in for an LVLM of that accuracy), the consistency check, masks,
  alignment; for a = 1.0, 0.87 (the paper's GPT-4o) and 0.42 (GPT-4o-mini).

Each row gives test accuracy, worst-group accuracy (WGA), the strength alignment chose and the reliance on
the true artefact (how much the prediction moves when the artefact regions of the masked alignment images
are exchanged with other training images). The headline: the share of the ERM -> RRR-GT (set) WGA gap that
the 0.87 critic recovers. Nothing is stored as a model version; the table is stored as a "qualify" run.
The benchmark script (benchmarks/alignment.py) runs the same function on generated sets and manifests.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import torch

from lvlmva_desktop.core.method.consistency import verdict_masks
from lvlmva_desktop.core.method.critic import SPURIOUS, CritiqueRequest, GroundTruthCritic
from lvlmva_desktop.core.method.explain import attribute, reference_images
from lvlmva_desktop.core.method.metrics import evaluate_predictions
from lvlmva_desktop.core.method.models import build_model, spec_for
from lvlmva_desktop.core.method.reliance import masked_reliance, segment_reliance
from lvlmva_desktop.core.method.sampling import select_alignment_set
from lvlmva_desktop.core.method.segment import evidence_map, ppeps_wgm
from lvlmva_desktop.core.method.settings import PipelineSettings
from lvlmva_desktop.core.method.strength import align_with_strength
from lvlmva_desktop.core.method.train import predict_proba, train_erm
from lvlmva_desktop.core.runtime.costs import estimate_training, warn_if_slow
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.store.project import Project, ProjectError, SplitData

CRITIC_ACCURACIES = (1.0, 0.87, 0.42)
HEADLINE = 0.87
ERM, GT = "ERM", "RRR-GT (set)"


def sim_row(acc: float) -> str:
    return f"LVLM-VA sim@{acc:.2f} +check"


def seeded(settings: PipelineSettings, seed: int) -> PipelineSettings:
    """The same settings with every step's seed set to ``seed`` (as `--seed` does on the command line)."""
    s = copy.deepcopy(settings)
    for part in (s.train, s.sampling, s.explain, s.segment, s.align):
        part.seed = seed
    return s


def qualify(
    project: Project,
    settings: PipelineSettings,
    device: torch.device,
    state: TaskState | None = None,
    model_id: int | None = None,
    accuracies: tuple[float, ...] = CRITIC_ACCURACIES,
    critic_seed: int = 0,
    store: bool = True,
) -> dict:
    """Run the qualification table on ``project`` (see the module docstring) and return it as a dict;
    with ``store`` it is kept in the project as a "qualify" run (the report shows the latest)."""
    state = ensure_state(state)
    settings.explain.validate()
    settings.segment.validate()
    settings.align.validate()
    if not project.has_masks():
        raise ProjectError(
            "Qualification needs ground-truth artefact masks: import a manifest whose 'mask' column names a "
            "mask image for the images that carry the artefact (docs/data.md)."
        )
    recorded = {
        **settings.to_dict(),
        "model_id": model_id,
        "accuracies": list(accuracies),
        "critic_seed": critic_seed,
    }
    if not store:
        return _qualify(project, settings, device, state, model_id, accuracies, critic_seed)
    with project.run("qualify", recorded) as run:
        result = _qualify(project, settings, device, state, model_id, accuracies, critic_seed)
        run.results = result
    return result


@dataclass
class Setup:
    """What every alignment of one qualification shares (the data, the original model, the low-entropy
    alignment set and, after ``explain``, its explanation and segments), with the steps that use it:
    evaluate a model, measure its reliance on the true artefacts, build masks from verdict flags through
    the consistency check, align against masks. ``qualify`` runs its table with it;
    benchmarks/review_routing.py aligns the same set after an expert's review with it."""

    settings: PipelineSettings
    device: torch.device
    train: SplitData
    test: SplitData
    classes: list[str]
    erm: torch.nn.Module
    origin: str
    shares: dict
    aidx: torch.Tensor
    times: dict
    maps: torch.Tensor | None = None  # (N, H, W) attributions of the alignment set
    labels: torch.Tensor | None = None  # (N, H, W) segment maps
    segment_evidence: torch.Tensor | None = None  # (N, J) each segment's share of the evidence
    evidence: torch.Tensor | None = None  # (N, H, W) the evidence maps the segments were fitted to
    requests: list[CritiqueRequest] | None = None

    # the alignment set's images, labels and true artefact masks (set from ``aidx``)
    ax: torch.Tensor = field(init=False)
    ay: torch.Tensor = field(init=False)
    agt: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.ax, self.ay = self.train.x[self.aidx], self.train.y[self.aidx]
        self.agt = self.train.masks[self.aidx]

    def evaluate(self, model) -> dict:
        probs = predict_proba(model, self.test.x, self.device)
        min_group = self.settings.evaluate.min_group_size
        ev = evaluate_predictions(probs.argmax(1), self.test.y, self.test.groups, self.classes, min_group)
        return {"accuracy": ev.accuracy, "wga": ev.worst_group_accuracy, "worst_group": ev.worst_group}

    def true_reliance(self, model) -> float | None:
        has_gt = self.agt.flatten(1).any(1)
        r = masked_reliance(
            model,
            self.ax[has_gt][:128],
            self.agt[has_gt][:128],
            self.train.x,
            self.device,
            seed=self.settings.align.seed,
        )
        return None if r is None else r.mean

    def align(self, masks: torch.Tensor, state: TaskState | None = None, settings=None) -> dict:
        """Align the original model against ``masks`` (N, H, W) with the automatic strength; the row of
        the table (test accuracy, WGA, true reliance, strength). ``settings``: AlignSettings other than the
        run's."""
        t = time.perf_counter()
        tuned, _, choice = align_with_strength(
            self.erm,
            self.train.x,
            self.train.y,
            self.ax,
            self.ay,
            masks,
            settings or self.settings.align,
            self.device,
            ensure_state(state),
        )
        return {
            **self.evaluate(tuned),
            "reliance": self.true_reliance(tuned),
            "strength": choice.strength,
            "strength_reason": choice.reason,
            "seconds": time.perf_counter() - t,
        }

    def explain(self, state: TaskState | None = None) -> None:
        """Attributions and PPEPS-WGM segments of the alignment set, and the critique requests."""
        state = ensure_state(state)
        t0 = time.perf_counter()
        s = self.settings
        state.progress(0.27, None, "explaining the alignment set")
        ax, ay, agt = self.ax, self.ay, self.agt
        expl = attribute(self.erm, ax, ay, reference_images(self.train.x, s.explain), s.explain, self.device)
        seg = ppeps_wgm(expl.maps.to(self.device), s.segment)
        self.maps, self.labels = expl.maps, seg.labels.cpu()
        self.segment_evidence = seg.evidence.cpu()
        self.times["explain_segment"] = time.perf_counter() - t0
        self.requests = [
            CritiqueRequest(
                int(i),
                ax[k],
                int(ay[k]),
                self.classes[int(ay[k])],
                "",
                expl.maps[k],
                self.labels[k],
                seg.evidence[k].tolist(),
                agt[k] if bool(self.train.has_mask[i]) else None,
                s.segment.evidence,
            )
            for k, i in enumerate(self.aidx.tolist())
        ]
        self.evidence = evidence_map(expl.maps, s.segment.evidence)

    def reliance(self, flags: torch.Tensor) -> torch.Tensor:
        """The original model's reliance on the flagged segments (N, J) of the alignment set."""
        return segment_reliance(
            self.erm, self.ax, self.labels, flags, self.train.x, self.device, seed=self.settings.align.seed
        )

    def simulated_verdicts(self, accuracy: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The simulated critic's "spurious" flags (N, J) at verdict accuracy ``accuracy`` and the ground
        truth it flipped them from."""
        critic = GroundTruthCritic(error_rate=round(1.0 - accuracy, 6), seed=seed)
        crits = list(critic.critique(self.requests))
        truth = torch.tensor([c.raw["truth"] for c in crits], dtype=torch.bool)
        spurious = torch.tensor(
            [[v.verdict == SPURIOUS for v in c.verdicts] for c in crits], dtype=torch.bool
        )
        return spurious, truth

    def masks(self, spurious: torch.Tensor, protected: torch.Tensor | None = None, settings=None):
        """Masks (N, H, W) and the consistency result (None when the check did not run) from "spurious"
        flags of decided verdicts (N, J); ``protected``: the expert's verdicts, never held back."""
        protected = torch.zeros_like(spurious) if protected is None else protected
        return verdict_masks(
            self.ax,
            self.evidence,
            self.labels,
            spurious,
            torch.ones_like(spurious),
            protected,
            settings or self.settings.align,
            self.reliance,
        )


def prepare(project: Project, settings: PipelineSettings, device: torch.device, state=None, model_id=None):
    """The data, the original model (the project's, or one trained with the settings, not stored) and the
    low-entropy alignment set of a qualification (``Setup``)."""
    state = ensure_state(state)
    train = project.load_split("train", state.child(0.0, 0.03))
    test = project.load_split("test", state.child(0.03, 0.05))
    if len(test.y) == 0 or len(train.y) == 0:
        raise ProjectError(
            "Qualification needs training and test images; import a manifest with both splits."
        )
    if not any(g for g in test.groups):
        raise ProjectError(
            "Qualification needs groups (the manifest's 'group' column: the artefact attribute) to measure "
            "worst-group accuracy."
        )
    classes = project.classes
    times: dict[str, float] = {}

    # the original model: the project's, or one trained with the project's settings (not stored)
    t0 = time.perf_counter()
    if model_id is not None:
        erm, spec = project.load_model(model_id)
        origin = f"model {model_id} of the project"
    else:
        spec = spec_for(settings.arch, len(classes), project.channels, project.image_size)
        torch.manual_seed(settings.train.seed)
        erm = build_model(spec)
        cost = estimate_training(erm, train.x, settings.train.batch_size, settings.train.epochs, device)
        warn_if_slow(state, device, cost, "training the original model for the qualification")
        train_erm(erm, train.x, train.y, settings.train, device, state.child(0.05, 0.25))
        origin = f"{settings.arch} trained with cross-entropy (train settings of the run)"
    times["erm"] = time.perf_counter() - t0

    probs = predict_proba(erm, train.x, device)
    shares = {}
    for strategy in ("low_entropy", "random", "high_entropy"):
        idx = select_alignment_set(probs, train.y, replace(settings.sampling, strategy=strategy))
        shares[strategy] = float(train.has_mask[idx].float().mean()) if len(idx) else None
    aidx = select_alignment_set(probs, train.y, settings.sampling)
    if len(aidx) == 0:
        raise ProjectError("The alignment set is empty; check sampling.n.")
    return Setup(settings, device, train, test, classes, erm, origin, shares, aidx, times)


def _qualify(project, settings, device, state, model_id, accuracies, critic_seed) -> dict:
    t_start = time.perf_counter()
    setup = prepare(project, settings, device, state, model_id)
    train, times = setup.train, setup.times
    erm = setup.erm
    rows: dict[str, dict] = {
        ERM: {**setup.evaluate(erm), "reliance": setup.true_reliance(erm), "strength": None}
    }

    n_steps = 1 + len(accuracies)
    span = (0.3, 1.0)

    def part(i: int) -> TaskState:
        w = (span[1] - span[0]) / n_steps
        return state.child(span[0] + i * w, span[0] + (i + 1) * w)

    al = settings.align
    cost = estimate_training(erm, train.x, al.batch_size, al.epochs, device, factor=2.0) * n_steps
    warn_if_slow(state, device, cost, f"{n_steps} fine-tunings with the alignment penalty")
    rows[GT] = setup.align(setup.agt, part(0))

    # the LVLM-VA path with the simulated critic: attributions, segments, verdicts, check, masks
    setup.explain(state)
    checks, verdict_acc = {}, {}
    for i, acc in enumerate(accuracies, start=1):
        spurious, truth = setup.simulated_verdicts(acc, critic_seed)
        verdict_acc[f"{acc:.2f}"] = float((spurious == truth).float().mean())
        masks, check = setup.masks(spurious)
        held = check.held if check is not None else torch.zeros_like(spurious)
        checks[f"{acc:.2f}"] = {
            "judged_spurious": int(spurious.sum()),
            "true_spurious": int((spurious & truth).sum()),
            "false_spurious": int((spurious & ~truth).sum()),
            "held_back": int(held.sum()),
            "held_back_true_spurious": int((held & truth).sum()),
            "held_back_false_spurious": int((held & ~truth).sum()),
        }
        rows[sim_row(acc)] = setup.align(masks, part(i))
    times["total"] = time.perf_counter() - t_start
    result = {
        "rows": rows,
        "origin": setup.origin,
        "n_train": len(train.y),
        "n_test": len(setup.test.y),
        "n_align": len(setup.aidx),
        "artefact_share_train": float(train.has_mask.float().mean()),
        "sampling_artefact_share": setup.shares,
        "verdict_accuracy": verdict_acc,
        "consistency": checks,
        "times_s": times,
    }
    result.update(summary_figures(rows))
    return result


def summary_figures(rows: dict[str, dict]) -> dict:
    """The WGA gap ERM -> RRR-GT (set) and, per simulated critic, the share of it recovered and the change
    in accuracy against ERM."""
    erm, gt = rows.get(ERM, {}), rows.get(GT, {})
    w0, w1 = erm.get("wga"), gt.get("wga")
    gap = None if w0 is None or w1 is None else w1 - w0
    recovered, d_acc = {}, {}
    for name, r in rows.items():
        if not name.startswith("LVLM-VA"):
            continue
        w = r.get("wga")
        recovered[name] = None if gap is None or gap <= 0 or w is None else (w - w0) / gap
        d_acc[name] = r["accuracy"] - erm["accuracy"] if erm else None
    return {"gap": gap, "recovered": recovered, "accuracy_change": d_acc}


def table(result: dict) -> str:
    """The qualification table as text, ending with the ``qualify:`` headline."""

    def f(v, fmt="{:.3f}"):
        return "  n/a" if v is None else fmt.format(v)

    lines = [f"{'method':26s} {'accuracy':>9s} {'WGA':>7s} {'reliance':>9s} {'strength':>9s}   worst group"]
    for name, r in result["rows"].items():
        lines.append(
            f"{name:26s} {f(r['accuracy']):>9s} {f(r['wga']):>7s} {f(r.get('reliance')):>9s} "
            f"{f(r.get('strength'), '{:g}'):>9s}   {r.get('worst_group') or '-'}"
        )
    lines.append(
        "reliance: how much the prediction moves when the true artefact regions of the masked alignment "
        "images are exchanged with other training images (0 = not used)"
    )
    for acc, c in result.get("consistency", {}).items():
        lines.append(
            f"check at sim@{acc}: {c['judged_spurious']} 'spurious' verdicts ({c['false_spurious']} false); held "
            f"back {c['held_back_false_spurious']} false and {c['held_back_true_spurious']} of "
            f"{c['true_spurious']} true ones"
        )
    sh = result.get("sampling_artefact_share", {})
    if sh:
        lines.append(
            "artefact share in the alignment set: "
            + ", ".join(f"{k.replace('_', '-')} {v:.2f}" for k, v in sh.items() if v is not None)
            + f" (training set {result['artefact_share_train']:.2f})"
        )
    lines.append(headline(result))
    return "\n".join(lines)


def headline(result: dict) -> str:
    """``qualify: sim@0.87 recovers P% of the WGA gap (ERM W0 -> RRR-GT W1), accuracy change D``."""
    rows = result["rows"]
    name = sim_row(HEADLINE)
    w0, w1 = rows[ERM]["wga"], rows.get(GT, {}).get("wga")
    rec = result["recovered"].get(name)
    d = result["accuracy_change"].get(name)
    if name not in rows:
        return "qualify: the 0.87 critic was not run"
    if rec is None:
        gap = result.get("gap")
        why = "no WGA" if gap is None else f"no gap to recover ({gap:+.3f})"
        return (
            f"qualify: sim@0.87 recovers n/a of the WGA gap ({why}: ERM {_f(w0)} -> RRR-GT {_f(w1)}), accuracy "
            f"change {d:+.3f}"
        )
    return (
        f"qualify: sim@0.87 recovers {rec:.0%} of the WGA gap (ERM {_f(w0)} -> RRR-GT {_f(w1)}), accuracy "
        f"change {d:+.3f}"
    )


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
