"""The method's steps as jobs on a project (METHOD.md steps 1-9), each recorded as a run.

Each step is a plain function (project, settings, device, state) -> id of what it produced; the GUI runs
the same functions in a worker, the CLI with a progress bar. ``run_pipeline`` chains them and writes one
results JSON per run under ``runs/``.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path

import torch

from lvlmva_desktop.core.method.consistency import check_applies, verdict_masks
from lvlmva_desktop.core.method.critic import (
    UNDECIDED,
    Critic,
    CritiqueRequest,
    ground_truth_segment_labels,
)
from lvlmva_desktop.core.method.explain import (
    ExplainSettings,
    attribute,
    background_set,
    reference_images,
)
from lvlmva_desktop.core.method.metrics import (
    Evaluation,
    alignment_score,
    deltas,
    evaluate_predictions,
    verdict_accuracy,
)
from lvlmva_desktop.core.method.models import ModelSpec, build_model, load_pretrained_weights, spec_for
from lvlmva_desktop.core.method.reliance import segment_reliance
from lvlmva_desktop.core.method.sampling import SamplingSettings, predictive_entropy, select_alignment_set
from lvlmva_desktop.core.method.segment import SegmentSettings, evidence_map, ppeps_wgm, recorded_evidence
from lvlmva_desktop.core.method.settings import EvalSettings, PipelineSettings
from lvlmva_desktop.core.method.strength import align_with_strength
from lvlmva_desktop.core.method.train import AlignSettings, TrainSettings, predict_proba, train_erm
from lvlmva_desktop.core.runtime.costs import estimate_training, warn_if_slow
from lvlmva_desktop.core.runtime.devices import describe_device
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.project import Project, ProjectError, SplitData
from lvlmva_desktop.core.views.viewer import load_samples

log = logging.getLogger(__name__)


def environment(device: torch.device) -> dict:
    """Library versions and device, recorded in every run for reproducibility."""
    import captum
    import torchvision

    from lvlmva_desktop import __version__

    return {
        "lvlmva_desktop": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "captum": captum.__version__,
        "platform": platform.platform(),
        "device": describe_device(device),
    }


# -- step 1: the original model -----------------------------------------------------------------------
def train_original(
    project: Project,
    arch: str,
    settings: TrainSettings,
    device: torch.device,
    state: TaskState | None = None,
    weights: str | None = None,
    preprocess: dict | None = None,
) -> int:
    """Train f with cross-entropy on the training split; store it as a new model version.

    ``weights``: a local file to start from (e.g. ImageNet weights of a torchvision network; never a
    download); ``preprocess``: the user's input size, resize, mean or std (else ``spec_for``'s defaults).
    """
    state = ensure_state(state)
    spec = _new_spec(project, arch, "finetune" if weights else "scratch", preprocess)
    run_settings = {
        "arch": spec.arch,
        "train": settings.to_dict(),
        "weights": weights,
        "device": str(device),
        "preprocess": spec.preprocess,
    }
    with project.run("train", run_settings) as run:
        data = project.load_split("train", state.child(0.0, 0.1))
        if len(data.y) == 0:
            raise ProjectError("The project has no training images; import data first.")
        torch.manual_seed(settings.seed)
        model = build_model(spec)
        skipped = load_pretrained_weights(model, spec, weights) if weights else []
        cost = estimate_training(model, data.x, settings.batch_size, settings.epochs, device)
        warn_if_slow(state, device, cost, "training")
        hist = train_erm(model, data.x, data.y, settings, device, state.child(0.1, 1.0))
        info = {
            "history": [asdict(h) for h in hist],
            "weights": weights,
            "skipped_keys": skipped,
            "data_hash": project.data_hash(),
        }
        model_id = project.save_model(model, spec, f"{arch} (ERM)", "erm", None, run.id, info)
        run.results = {
            "model_id": model_id,
            "final_train_accuracy": hist[-1].train_accuracy if hist else None,
        }
    return model_id


def _new_spec(project: Project, arch: str, pretrained: bool, preprocess: dict | None) -> ModelSpec:
    try:
        return spec_for(
            arch, len(project.classes), project.channels, project.image_size, pretrained, preprocess
        )
    except ValueError as e:
        raise ProjectError(str(e)) from None


def import_model(project: Project, path: str, arch: str, preprocess: dict | None = None) -> int:
    """Register an existing classifier (a weights file of any architecture ``build_model`` builds) as the
    original model, with the preprocessing it was trained with (``preprocess``; else the defaults of
    weights from elsewhere: ImageNet's mean and std at the network's usual input size)."""
    spec = _new_spec(project, arch, "imported", preprocess)
    with project.run("import_model", {"path": path, "arch": spec.arch, "preprocess": spec.preprocess}) as run:
        model = build_model(spec)
        load_pretrained_weights(model, spec, path, complete=True)
        model_id = project.save_model(
            model, spec, f"{spec.arch} (imported)", "imported", None, run.id, {"source": path}
        )
        run.results = {"model_id": model_id, "preprocessing": describe_preprocessing(spec)}
    return model_id


def describe_preprocessing(spec: ModelSpec) -> str:
    """The preprocessing of a model version in words (shown by the CLI, the window and the report)."""
    return spec.preprocessing().describe(tuple(spec.image_size))


# -- step 2: alignment set --------------------------------------------------------------------------
def sample_alignment_set(
    project: Project,
    model_id: int,
    settings: SamplingSettings,
    device: torch.device,
    state: TaskState | None = None,
) -> int:
    state = ensure_state(state)
    with project.run("sample", {"model_id": model_id, "sampling": settings.to_dict()}) as run:
        model, _ = project.load_model(model_id)
        data = project.load_split("train", state.child(0.0, 0.3))
        probs = predict_proba(model, data.x, device, state=state.child(0.3, 0.9), what="predicting")
        idx = select_alignment_set(probs, data.y, settings)
        ent = predictive_entropy(probs)
        ids = [data.sample_ids[i] for i in idx.tolist()]
        set_id = project.save_alignment_set(run.id, model_id, settings.to_dict(), ids, ent[idx].tolist())
        share = float(data.has_mask[idx].float().mean()) if len(idx) else float("nan")
        run.results = {
            "set_id": set_id,
            "n": len(ids),
            "artefact_share": share,
            "artefact_share_train": float(data.has_mask.float().mean()),
        }
        state.progress(1.0)
    return set_id


def _rows(data: SplitData, sample_ids: list[int]) -> torch.Tensor:
    pos = {s: i for i, s in enumerate(data.sample_ids)}
    return torch.tensor([pos[s] for s in sample_ids], dtype=torch.long)


# -- steps 3-4: attributions and segments -------------------------------------------------------------
def explain_alignment_set(
    project: Project,
    model_id: int,
    set_id: int,
    explain: ExplainSettings,
    segment: SegmentSettings,
    device: torch.device,
    state: TaskState | None = None,
) -> int:
    state = ensure_state(state)
    explain.validate()  # told before the attributions are computed, not after
    segment.validate()
    settings = {
        "model_id": model_id,
        "set_id": set_id,
        "explain": explain.to_dict(),
        "segment": segment.to_dict(),
    }
    with project.run("explain", settings) as run:
        model, _ = project.load_model(model_id)
        data = project.load_split("train", state.child(0.0, 0.1))
        ids = [r["sample_id"] for r in project.alignment_members(set_id)]
        rows = _rows(data, ids)
        bg = reference_images(data.x, explain)
        attr = attribute(model, data.x[rows], data.y[rows], bg, explain, device, state.child(0.1, 0.8))
        seg = ppeps_wgm(attr.maps.to(device), segment, state.child(0.8, 1.0))
        tensors = {
            "sample_ids": torch.tensor(ids, dtype=torch.int64),
            "maps": attr.maps,
            "deltas": attr.deltas,
            "target_gap": attr.target_gap,
            "segments": seg.labels.cpu().to(torch.int8),
            "evidence": seg.evidence.cpu(),
            "weights": seg.weights.cpu(),
            "means": seg.means.cpu(),
        }
        settings["attribution"] = {"method": attr.method, "note": attr.note}  # what was used, and why
        expl_id = project.save_explanation(run.id, model_id, set_id, settings, tensors)
        rel_delta = (attr.deltas / attr.target_gap.clamp_min(1e-6)).median().item() if len(ids) else 0.0
        run.results = {
            "explanation_id": expl_id,
            "n": len(ids),
            "median_relative_delta": rel_delta,
            "method": attr.method,
            "method_note": attr.note,
        }
    return expl_id


# -- steps 5-7: critique, verdicts, masks ---------------------------------------------------------------
def critique_requests(
    project: Project, expl_id: int, state: TaskState | None = None
) -> list[CritiqueRequest]:
    row, t = project.explanation(expl_id)
    evidence_kind = recorded_evidence(row["settings"])
    data = project.load_split("train", state)
    ids = t["sample_ids"].tolist()
    rows = _rows(data, ids)
    _, descriptions = project.class_descriptions()
    reqs = []
    for k, (sid, r) in enumerate(zip(ids, rows.tolist())):
        label = int(data.y[r])
        name = project.classes[label]
        reqs.append(
            CritiqueRequest(
                sample_id=sid,
                image=data.x[r],
                label=label,
                class_name=name,
                class_description=descriptions.get(name, ""),
                attribution=t["maps"][k],
                segments=t["segments"][k].long(),
                segment_evidence=t["evidence"][k].tolist(),
                gt_mask=data.masks[r] if bool(data.has_mask[r]) else None,
                evidence_kind=evidence_kind,
            )
        )
    return reqs


def run_critique(
    project: Project,
    expl_id: int,
    critic: Critic,
    state: TaskState | None = None,
    skip_samples: Collection[int] = (),
) -> dict:
    """Ask the critic about every image of the explanation; verdicts are stored as they arrive.

    ``skip_samples``: images an interrupted run already critiqued (resuming it, core/store/recovery.py).
    """
    state = ensure_state(state)
    skip = set(skip_samples)
    version, _ = project.class_descriptions()
    settings = {
        "explanation_id": expl_id,
        "critic": critic.identity(),
        "critic_name": critic.name,
        "class_descriptions_version": version,
    }
    with project.run("critique", settings) as run:
        reqs = critique_requests(project, expl_id, state.child(0.0, 0.05))
        counts = {"spurious": 0, "relevant": 0, "undecided": 0}
        n_done = 0
        usage: dict[str, int] = {}
        todo = [r for r in reqs if r.sample_id not in skip]
        if skip:
            run.results = {"n_images": 0, "skipped_already_critiqued": len(reqs) - len(todo)}
        for c in critic.critique(todo, state.child(0.05, 1.0)):
            project.save_critique(run.id, expl_id, c)
            for v in c.verdicts:
                counts[v.verdict] = counts.get(v.verdict, 0) + 1
            n_done += 1
            _count_usage(usage, c.raw)
            run.results = {"n_images": n_done, "verdicts": counts}
            if skip:
                run.results["skipped_already_critiqued"] = len(reqs) - len(todo)
            if usage:
                run.results["lvlm"] = usage
            state.partial({"kind": "critique", "sample_id": c.sample_id})
        run.results["verdict_accuracy"] = verdict_accuracy_of(project, expl_id, reqs)
        project.audit("critique", *audit.critique_entry(project, run.id, settings, run.results))
    return run.results


def _count_usage(usage: dict[str, int], raw: dict) -> None:
    """LVLM statistics of a critique run: calls, tokens, cache hits, how verdicts were parsed, retries."""
    if "calls" not in raw:
        return  # not an LVLM critique
    for key in ("calls", "prompt_tokens", "generated_tokens"):
        usage[key] = usage.get(key, 0) + int(raw.get(key) or 0)
    usage["cached"] = usage.get("cached", 0) + int(bool(raw.get("cached")))
    usage["retried"] = usage.get("retried", 0) + int(bool(raw.get("retried")))
    parse = f"parsed_{raw.get('parse', 'none')}"
    usage[parse] = usage.get(parse, 0) + 1
    usage["undecided_by_parser"] = usage.get("undecided_by_parser", 0) + len(
        raw.get("undecided_by_parser") or []
    )


def verdict_accuracy_of(project: Project, expl_id: int, reqs: list[CritiqueRequest]) -> float | None:
    """Share of effective verdicts equal to the ground truth, over images whose artefact mask is known."""
    if not has_artefact_masks(project):
        return None  # no ground truth in this data: verdict accuracy is unknown
    eff = project.effective_verdicts(expl_id)
    pred, truth = [], []
    for r in reqs:
        t = ground_truth_segment_labels(r.evidence(), r.segments, r.gt_mask, len(r.segment_evidence))
        for s, tv in enumerate(t):
            v = eff.get(r.sample_id, {}).get(s, {}).get("verdict", UNDECIDED)
            pred.append(None if v == UNDECIDED else v == "spurious")
            truth.append(tv)
    return verdict_accuracy(pred, truth) if truth else None


def has_artefact_masks(project: Project) -> bool:
    """Whether the data has ground-truth artefact masks (then verdict accuracy and the simulated critic apply)."""
    return project.has_masks()


def alignment_masks(
    project: Project,
    expl_id: int,
    settings: AlignSettings | None = None,
    data: SplitData | None = None,
    model: torch.nn.Module | None = None,
    device: torch.device | None = None,
) -> tuple[list[int], torch.Tensor, dict]:
    """Masks A per alignment image from the effective verdicts (expert overrides the critic).

    With ``settings.consistency_check`` (default on) a critic's "spurious" verdict on a segment that looks
    like segments judged relevant elsewhere is held back from the mask (core/method/consistency.py), unless the
    explained model hardly relies on that segment (``model``: loaded from the project when not given); the
    stats count and list them (``held_back``, ``held_back_segments`` as [sample_id, segment]) for the
    expert's review. ``data``: the training split, when the caller has it loaded already.
    """
    settings = settings or AlignSettings()
    row, t = project.explanation(expl_id)
    from lvlmva_desktop.core.store.integrity import verdict_problems

    changed = verdict_problems(project, expl_id)
    if changed:
        raise ProjectError(
            f"The verdicts of explanation {expl_id} are not the ones recorded in the audit log ("
            + "; ".join(changed[:5])
            + "). Refusing to build masks from them; `lvlmva audit PROJ --verify` lists every difference."
        )
    evidence_kind = recorded_evidence(row["settings"])
    eff = project.effective_verdicts(expl_id)
    ids = t["sample_ids"].tolist()
    segments = t["segments"].long()
    n_seg = int(t["evidence"].shape[1]) if len(ids) else 0
    stats = {
        "images_with_mask": 0,
        "spurious_segments": 0,
        "expert_overrides": 0,
        "undecided": 0,
        "held_back": 0,
        "held_back_segments": [],
    }
    spurious = torch.zeros(len(ids), n_seg, dtype=torch.bool)
    decided = torch.zeros_like(spurious)
    expert = torch.zeros_like(spurious)
    for k, sid in enumerate(ids):
        per = eff.get(sid, {})
        stats["spurious_segments"] += sum(d["verdict"] == "spurious" for d in per.values())
        stats["undecided"] += sum(d["verdict"] == UNDECIDED for d in per.values())
        stats["expert_overrides"] += sum(d["source"] == "expert" for d in per.values())
        for s, d in per.items():
            if 0 <= s < n_seg:
                spurious[k, s] = d["verdict"] == "spurious"
                decided[k, s] = d["verdict"] != UNDECIDED
                expert[k, s] = d["source"] == "expert"
    if not ids:
        h, w = project.image_size
        return ids, torch.zeros(0, h, w, dtype=torch.bool), stats
    images = t["maps"].new_zeros(0)  # the images are loaded only when the check has something to check
    if check_applies(spurious, decided, expert, settings):
        # the alignment images only (not the whole split), unless the caller has the split loaded
        images = data.x[_rows(data, ids)] if data is not None else load_samples(project, ids).x
    evidence = evidence_map(t["maps"], evidence_kind)

    def reliance(flags: torch.Tensor) -> torch.Tensor:
        """The explained model's reliance on the flagged segments (exchanged with training images)."""
        nonlocal data, model
        if model is None:
            model, _ = project.load_model(int(row["model_id"]))
        if data is None:
            data = project.load_split("train")
        dev = device or torch.device("cpu")
        return segment_reliance(model, images, segments, flags, data.x, dev, seed=settings.seed)

    masks, check = verdict_masks(images, evidence, segments, spurious, decided, expert, settings, reliance)
    if check is not None:
        stats["held_back"] = int(check.held.sum())
        stats["held_back_segments"] = [list(p) for p in check.held_list(ids)]
        if check.reliance is not None:  # inconsistent, but the model hardly uses them: kept in the masks
            low = check.reliance < settings.consistency_min_reliance
            stats["kept_low_reliance"] = int(low.sum())
    stats["images_with_mask"] = int(masks.flatten(1).any(1).sum())
    return ids, masks, stats


# -- step 8: RRR fine-tuning ------------------------------------------------------------------------------
def align_model(
    project: Project,
    model_id: int,
    expl_id: int,
    settings: AlignSettings,
    device: torch.device,
    state: TaskState | None = None,
) -> int:
    """Masks from the verdicts, then RRR fine-tuning of a copy of the model into a new model version; the
    strength is chosen as ``strength.align_with_strength`` says and recorded with the run and the model."""
    state = ensure_state(state)
    settings.validate()  # told before anything is loaded
    with project.run(
        "align", {"model_id": model_id, "explanation_id": expl_id, "align": settings.to_dict()}
    ) as run:
        model, spec = project.load_model(model_id)
        data = project.load_split("train", state.child(0.0, 0.05))
        state.progress(0.05, None, "masks from the verdicts")
        ids, masks, stats = alignment_masks(project, expl_id, settings, data, model, device)
        rows = _rows(data, ids)
        warn_if_slow(
            state,
            device,
            estimate_training(model, data.x, settings.batch_size, settings.epochs, device, factor=2.0),
            "fine-tuning with the alignment penalty",
        )
        tuned, hist, choice = align_with_strength(
            model, data.x, data.y, data.x[rows], data.y[rows], masks, settings, device, state.child(0.1, 1.0)
        )
        info = {
            "history": [asdict(h) for h in hist],
            "explanation_id": expl_id,
            "mask_stats": stats,
            "align": settings.to_dict(),
            "strength": choice.to_dict(),
        }
        if choice.fine_tuned:
            name = f"{spec.arch} (RRR, {settings.penalty}, strength {choice.strength:g}{' auto' * (choice.mode == 'auto')})"
        else:
            name = f"{spec.arch} (RRR not needed: weights kept)"
        new_id = project.save_model(tuned, spec, name, "rrr", model_id, run.id, info)
        run.results = {"model_id": new_id, "mask_stats": stats, "strength": choice.to_dict()}
    return new_id


# -- step 9: evaluation --------------------------------------------------------------------------------
def evaluate_model(
    module: torch.nn.Module,
    data: SplitData,
    classes: list[str],
    settings: EvalSettings,
    background: torch.Tensor,
    device: torch.device,
    state: TaskState | None = None,
) -> Evaluation:
    state = ensure_state(state)
    probs = predict_proba(module, data.x, device, state=state.child(0.0, 0.2), what="predicting")
    ev = evaluate_predictions(probs.argmax(1), data.y, data.groups, classes, settings.min_group_size)
    idx = torch.nonzero(data.has_mask & data.masks.flatten(1).any(1)).flatten()[
        : settings.n_attribution_images
    ]
    if len(idx) and settings.n_attribution_images > 0:
        attr = attribute(
            module,
            data.x[idx],
            data.y[idx],
            background,
            ExplainSettings(n_background=len(background)),
            device,
            state.child(0.2, 1.0),
        )
        ev.alignment = alignment_score(attr.maps, data.masks[idx])
    return ev


def evaluate_models(
    project: Project,
    model_ids: list[int],
    settings: EvalSettings,
    device: torch.device,
    state: TaskState | None = None,
    store: bool = True,
) -> dict:
    """Evaluate models on the test split; with ``store`` (default) as an "evaluate" run with its metrics,
    without it nothing is written (a read-only or archived project)."""
    state = ensure_state(state)
    if not store:
        return _evaluate(project, model_ids, settings, device, state, None)
    with project.run("evaluate", {"model_ids": model_ids, "evaluate": settings.to_dict()}) as run:
        out = _evaluate(project, model_ids, settings, device, state, run)
        run.results = {str(k): v.to_dict() for k, v in out.items()}
    return out


def _evaluate(project, model_ids, settings, device, state, run) -> dict:
    test = project.load_split("test", state.child(0.0, 0.1))
    if len(test.y) == 0:
        raise ProjectError("The project has no test images; import data with a test split first.")
    train = project.load_split("train")
    bg = background_set(train.x, settings.n_background, 0)
    out = {}
    for i, mid in enumerate(model_ids):
        module, _ = project.load_model(mid)
        sub = state.child(0.1 + 0.9 * i / len(model_ids), 0.1 + 0.9 * (i + 1) / len(model_ids))
        ev = evaluate_model(module, test, project.classes, settings, bg, device, sub)
        out[mid] = ev
        if run is not None:
            project.save_metrics(
                run.id,
                mid,
                "test",
                {"accuracy": ev.accuracy, "wga": ev.worst_group_accuracy, "alignment": ev.alignment},
                ev.to_dict(),
            )
    return out


# -- the whole pipeline ---------------------------------------------------------------------------------
def run_pipeline(
    project: Project,
    settings: PipelineSettings,
    critic: Critic,
    device: torch.device,
    state: TaskState | None = None,
    model_id: int | None = None,
) -> dict:
    """Steps 1-9 on a project; returns the results dict also written to runs/run-<id>.json."""
    state = ensure_state(state)
    settings.explain.validate()  # before any training: a wrong choice is told at once
    settings.segment.validate()
    t0 = time.perf_counter()
    recorded = {**settings.to_dict(), "critic": critic.identity(), "model_id": model_id}  # to resume it
    with project.run("pipeline", recorded) as run:
        timings = {}

        def timed(name, fn, *a, **k):
            t = time.perf_counter()
            r = fn(*a, **k)
            timings[name] = time.perf_counter() - t
            return r

        if model_id is None:
            model_id = timed(
                "train",
                train_original,
                project,
                settings.arch,
                settings.train,
                device,
                state.child(0.0, 0.25),
            )
        set_id = timed(
            "sample",
            sample_alignment_set,
            project,
            model_id,
            settings.sampling,
            device,
            state.child(0.25, 0.3),
        )
        expl_id = timed(
            "explain",
            explain_alignment_set,
            project,
            model_id,
            set_id,
            settings.explain,
            settings.segment,
            device,
            state.child(0.3, 0.45),
        )
        crit = timed("critique", run_critique, project, expl_id, critic, state.child(0.45, 0.55))
        new_id = timed(
            "align", align_model, project, model_id, expl_id, settings.align, device, state.child(0.55, 0.85)
        )
        evals = timed(
            "evaluate",
            evaluate_models,
            project,
            [model_id, new_id],
            settings.evaluate,
            device,
            state.child(0.85, 1.0),
        )
        set_run = project.alignment_set_run(set_id)
        version, _ = project.class_descriptions()
        results = {
            "run_id": run.id,
            "project": project.manifest["name"],
            "data_hash": project.data_hash(),
            "settings": settings.to_dict(),
            "environment": environment(device),
            "critic": {"name": critic.name, **critic.identity()},
            "class_descriptions_version": version,
            "models": {
                "original": {"id": model_id, "sha256": project.model_row(model_id)["sha256"]},
                "aligned": {"id": new_id, "sha256": project.model_row(new_id)["sha256"]},
            },
            "alignment_set": {"id": set_id, **json.loads(set_run["results"])},
            "explanation_id": expl_id,
            "critique": crit,
            "before": evals[model_id].to_dict(),
            "after": evals[new_id].to_dict(),
            "deltas": deltas(evals[model_id], evals[new_id]),
            "timings_s": timings,
            "total_s": time.perf_counter() - t0,
        }
        path = project.root / "runs" / f"run-{run.id:04d}.json"
        path.write_text(json.dumps(results, indent=2), encoding="utf-8")
        results["results_file"] = str(path)
        run.results = {"results_file": project.rel(path), "deltas": results["deltas"]}
    return results


def results_table(results: dict) -> str:
    """A plain-text before/after table of a pipeline run's results."""
    b, a = results["before"], results["after"]

    def f(v):
        return "  n/a" if v is None else f"{v:5.3f}"

    lines = [
        f"{'':28s} {'original':>9s} {'aligned':>9s} {'change':>8s}",
        f"{'average accuracy':28s} {f(b['accuracy']):>9s} {f(a['accuracy']):>9s} {results['deltas']['dAGA']:+8.3f}",
    ]
    if "dWGA" in results["deltas"]:
        lines.append(
            f"{'worst-group accuracy':28s} {f(b['worst_group_accuracy']):>9s} "
            f"{f(a['worst_group_accuracy']):>9s} {results['deltas']['dWGA']:+8.3f}"
        )
    if b.get("alignment") is not None and a.get("alignment") is not None:
        lines.append(
            f"{'alignment (outside artefact)':28s} {f(b['alignment']):>9s} {f(a['alignment']):>9s} "
            f"{a['alignment'] - b['alignment']:+8.3f}"
        )
    lines.append("per group (class / attribute, n):")
    after_groups = {(g["label"], g["group"]): g for g in a["groups"]}
    for g in b["groups"]:
        ag = after_groups.get((g["label"], g["group"]), {})
        lines.append(
            f"  {g['label'] + ' / ' + (g['group'] or '-'):26s} {f(g['accuracy']):>9s} "
            f"{f(ag.get('accuracy')):>9s}   n={g['n']}"
        )
    va = results.get("critique", {}).get("verdict_accuracy")
    if va is not None:
        lines.append(f"verdict accuracy of the critic: {va:.3f}")
    share = results.get("alignment_set", {}).get("artefact_share")
    if share is not None:
        lines.append(f"alignment set: {results['alignment_set']['n']} images, {share:.0%} with an artefact")
    return "\n".join(lines)


def write_results(path: Path, results: dict) -> None:
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
