"""Every step of the method as a Job, built from what the session holds now: train and align (the
Training pane's buttons, Method > Train and Retrain), sample, explain, critique, evaluate, importing a
classifier or images, the demo project, the audit report and the resumption of an interrupted step (the
window's menu and toolbar).

Each builder checks that the step can run (a model exists before sampling, ...) and raises ValueError in
plain words otherwise, so the window can say what to do first (train_job and align_job are given what they
run on by the Training pane, which says itself what is missing). The work itself is the core's functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvlmva_desktop.gui.jobs import Job
from lvlmva_desktop.gui.session import Session

if TYPE_CHECKING:
    from lvlmva_desktop.core.method.settings import PipelineSettings

CRITICS = ("lvlm", "simulated", "expert")


def _need(value: int | None, what: str) -> int:
    if value is None:
        raise ValueError(what)
    return value


def _told(session: Session, topics: str | tuple[str, ...], told: tuple[str, str]) -> None:
    """A finished step: the views redraw, and Messages keeps what it did (title, text)."""
    session.notify(*((topics,) if isinstance(topics, str) else topics))
    session.tell(*told)


def sampled_text(session: Session, set_id: int, settings: Any) -> tuple[str, str]:
    n = len(session.project.alignment_members(set_id)) if session.project is not None else 0
    n_train = 0
    if session.project is not None:
        n_train = session.project.count_samples("train")
    text = (
        f"Alignment set #{set_id}: {n} training images chosen by the '{settings.strategy}' strategy "
        f"(of {n_train}). Next: Method > Explain."
    )
    if n < settings.n:
        text += f" The project has fewer training images than the {settings.n} asked for."
    return "Sample: the alignment set is chosen", text


def explained_text(session: Session, expl_id: int) -> tuple[str, str]:
    import json

    p = session.project
    n, note = 0, ""
    if p is not None:
        row, t = p.explanation(expl_id)
        n = int(t["sample_ids"].numel()) if "sample_ids" in t else 0
        note = json.loads(row["settings"]).get("attribution", {}).get("note", "")
    return (
        "Explain: attributions and segments are ready",
        f"Explanation #{expl_id}: {n} images with their attribution maps and segments (see the viewer). "
        + (f"{note} " if note else "")
        + "Next: Method > Critique.",
    )


def critiqued_text(results: dict) -> tuple[str, str]:
    counts = results.get("verdicts", {}) if isinstance(results, dict) else {}
    n = results.get("n_images", 0) if isinstance(results, dict) else 0
    parts = ", ".join(f"{counts[k]} {k}" for k in ("spurious", "relevant", "undecided") if counts.get(k))
    return (
        "Critique: the critic's verdicts are in",
        f"{n} images judged ({parts or 'no verdicts'}). Review them in the Review pane: N goes to the next "
        "image to review, least certain first; A confirms the critic's verdicts on an image.",
    )


def train_job(session: Session, settings: PipelineSettings | None = None) -> Job:
    """Train the original model, then evaluate it on the test images (one job, lane main).

    ``settings``: the method's settings to train with (the Training pane's, as shown); None: the session's.
    A bad device choice raises here, before anything runs."""
    s = settings if settings is not None else session.pipeline_settings()
    device = session.device()

    def fn(project: Any, state: Any) -> dict:
        from lvlmva_desktop.core.method.pipeline import train_original

        mid = train_original(project, s.arch, s.train, device, state.child(0.0, 0.8))
        return {"model_id": mid, "evaluations": _evaluate(project, [mid], s, device, state, 0.8)}

    return Job("train", "Training the original model", fn)


def align_job(session: Session, model_id: int, expl_id: int, settings: PipelineSettings | None = None) -> Job:
    """Retrain ``model_id`` with the verdicts on explanation ``expl_id`` (RRR), then evaluate the new model
    with ``model_id`` on the test images (one job, lane main).

    ``settings``: as for train_job. A bad device choice raises here, before anything runs."""
    s = settings if settings is not None else session.pipeline_settings()
    device = session.device()

    def fn(project: Any, state: Any) -> dict:
        from lvlmva_desktop.core.method.pipeline import align_model

        new = align_model(project, model_id, expl_id, s.align, device, state.child(0.0, 0.75))
        evaluations = _evaluate(project, [model_id, new], s, device, state, 0.75)
        return {"model_id": new, "evaluations": evaluations}

    return Job("align", "Retraining with the verdicts", fn)


def _evaluate(
    project: Any, model_ids: list[int], s: PipelineSettings, device: Any, state: Any, start: float
) -> dict:
    """Measure freshly trained models on the test images so the results view fills (skipped without any)."""
    from lvlmva_desktop.core.method.pipeline import evaluate_models

    if not project.has_samples("test"):
        return {}
    state.info("measuring on the test images")
    return evaluate_models(project, model_ids, s.evaluate, device, state.child(start, 1.0))


def sample_job(session: Session) -> Job:
    from lvlmva_desktop.core.method.pipeline import sample_alignment_set

    model_id = _need(
        session.original_model_id(), "Train or import the original model first (Method > Train)."
    )
    settings = session.pipeline_settings().sampling
    device = session.device()
    return Job(
        "sample",
        "Choosing the alignment set",
        lambda p, s: sample_alignment_set(p, model_id, settings, device, s),
        on_done=lambda set_id: _told(session, "alignment", sampled_text(session, set_id, settings)),
    )


def explain_job(session: Session) -> Job:
    from lvlmva_desktop.core.method.pipeline import explain_alignment_set

    model_id = _need(
        session.original_model_id(), "Train or import the original model first (Method > Train)."
    )
    set_id = _need(session.alignment_set_id(), "Choose the alignment set first (Method > Sample).")
    ps = session.pipeline_settings()
    device = session.device()
    return Job(
        "explain",
        "Explaining the alignment set",
        lambda p, s: explain_alignment_set(p, model_id, set_id, ps.explain, ps.segment, device, s),
        on_done=lambda expl_id: _told(session, "explanation", explained_text(session, expl_id)),
    )


def critic_choice(kind: str, verdict_accuracy: float = 0.87, lvlm_options: dict | None = None) -> dict:
    """The Critique dialog's choice as the identity a critique run records (core.method.critic.critic_spec);
    the window's simulated critic always uses seed 0."""
    from lvlmva_desktop.core.method.critic import critic_spec

    return critic_spec(kind, verdict_accuracy=verdict_accuracy, seed=0, lvlm_settings=lvlm_options)


def make_critic(project: Any, spec: dict, expl_id: int | None, backend: Any = None) -> Any:
    """The critic of a critique job, built in the job's thread by the one critic factory (lvlm/factory.py);
    an LVLM critic runs on ``backend``, the model the session loaded (session.use_lvlm)."""
    from lvlmva_desktop.lvlm.factory import build_critic

    return build_critic(spec, project, expl_id, backend=backend)


def critique_job(
    session: Session, kind: str, verdict_accuracy: float = 0.87, lvlm_options: dict | None = None
) -> Job:
    from lvlmva_desktop.core.method.pipeline import run_critique

    expl_id = _need(session.explanation_id(), "Explain the alignment set first (Method > Explain).")
    spec = critic_choice(kind, verdict_accuracy, lvlm_options)  # an unknown kind is refused here, in words
    if kind == "lvlm" and session.lvlm_config() is None:
        raise ValueError("Configure the vision-language model first (LVLM > Settings).")

    def fn(p, s):
        if kind != "lvlm":
            critic = make_critic(p, spec, expl_id)
            return run_critique(p, expl_id, critic, s.child(0.05, 1.0))
        with session.use_lvlm(s.child(0.0, 0.05)) as backend:  # stays loaded, is not closed under us
            critic = make_critic(p, spec, expl_id, backend)
            return run_critique(p, expl_id, critic, s.child(0.05, 1.0))

    return Job(
        "critique",
        "Critiquing the explanations",
        fn,
        on_done=lambda results: _told(session, ("critique", "verdicts"), critiqued_text(results)),
        on_partial=lambda r: (
            session.notify("verdicts") if isinstance(r, dict) and r.get("kind") == "critique" else None
        ),
    )


def evaluate_job(session: Session, model_ids: list[int] | None = None) -> Job:
    from lvlmva_desktop.core.method.pipeline import evaluate_models

    ids = model_ids or [m for m in (session.original_model_id(), session.aligned_model_id()) if m is not None]
    if not ids:
        raise ValueError("Train or import a model first (Method > Train).")
    settings = session.pipeline_settings().evaluate
    device = session.device()
    return Job(
        "evaluate",
        "Evaluating on the test images",
        lambda p, s: evaluate_models(p, ids, settings, device, s),
        on_done=lambda _: _told(
            session,
            "metrics",
            ("Evaluate: the test images are measured", f"Model(s) {', '.join(map(str, ids))}: see Results."),
        ),
    )


def import_model_job(session: Session, path: Path, arch: str, preprocess: dict | None = None) -> Job:
    """Register the user's own trained classifier (safetensors, or a weights-only .pth) as the original,
    with the preprocessing it was trained with (None: the defaults for imported weights)."""
    from lvlmva_desktop.core.method.pipeline import describe_preprocessing, import_model

    def run(p, s):
        mid = import_model(p, str(path), arch, preprocess)
        return mid, describe_preprocessing(p.load_model(mid)[1])

    return Job(
        "import_model",
        "Importing the classifier",
        run,
        on_done=lambda r: _told(
            session,
            "models",
            (
                f"Import: model version {r[0]} ({arch}) is the original",
                f"Preprocessing: {r[1]}. Next: Method > Sample chooses the images to critique.",
            ),
        ),
    )


def demo_job(folder: Path, on_done) -> Job:
    from lvlmva_desktop.core.data.demo import create_demo_project

    return Job(
        "demo",
        "Building the demo project",
        lambda p, s: create_demo_project(folder, s),
        needs_project=False,
        on_done=on_done,
    )


def import_job(
    folder: Path,
    name: str,
    source: Path,
    source_kind: str,
    image_size: int,
    channels: int,
    on_done,
) -> Job:
    """Create a project in ``folder`` from a class-folder tree or a CSV manifest; returns the report."""

    def fn(_p, state):
        from lvlmva_desktop.core.data.importing import import_class_folders, import_csv_manifest
        from lvlmva_desktop.core.store.project import Project

        sub = state.child(0.0, 0.9)
        if source_kind == "csv":
            report = import_csv_manifest(source, state=sub)
        else:
            report = import_class_folders(source, state=sub)
        state.check()
        if not report.samples:
            raise ValueError(f"No usable images were found in {source} ({len(report.skipped)} skipped).")
        project = Project.create(folder, name, report.classes, (image_size, image_size), channels)
        with project:
            project.add_samples(report)
        return report

    return Job("import", "Importing the images", fn, needs_project=False, on_done=on_done)


def report_job(session: Session, folder: Path, on_done: Callable[[list[Path]], None] | None = None) -> Job:
    """Write the audit report (report.html and report.pdf) into ``folder`` (File > Audit report…)."""
    from lvlmva_desktop.report.document import write_report

    if session.project is None:
        raise ValueError("Open a project first.")
    device = session.device()
    return Job(
        "report",
        "Writing the audit report",
        lambda p, s: write_report(p, folder, device, state=s),
        on_done=on_done,
    )


# what each resumed step changes, for the panes to redraw
_TOPICS = {
    "critique": ("critique", "verdicts"),
    "train": ("models",),
    "align": ("models",),
    "import_model": ("models",),
    "sample": ("alignment",),
    "explain": ("explanation",),
    "evaluate": ("metrics",),
    "pipeline": ("models", "alignment", "explanation", "critique", "verdicts", "metrics"),
}


def resume_job(session: Session, tell: Callable[[str, str, str], None] | None = None) -> Job:
    """The latest interrupted step, continued (a critique) or run again (any other step) as a Job."""
    from lvlmva_desktop.core.store import recovery

    project = session.project
    if project is None:
        raise ValueError("Open a project first.")
    if project.read_only:
        raise ValueError("This project is open read-only; open it for writing to resume a step.")
    row = recovery.pick(project)  # "No interrupted step to resume" in words when there is none
    rid, kind = int(row["id"]), row["kind"]
    uses_lvlm = (recovery.recorded_critic(project, row) or {}).get("kind") == "lvlm"
    if uses_lvlm and session.lvlm_config() is None:
        raise ValueError(
            f"Run {rid} used an LVLM critic: configure the vision-language model first (LVLM > Settings)."
        )
    description = recovery.describe(project, row)
    device = session.device()

    def fn(p: Any, s: Any) -> Any:
        if not uses_lvlm:
            return recovery.resume(p, rid, device, s)
        from lvlmva_desktop.lvlm.factory import (
            lvlm_builder,  # the one critic factory, as the CLI's resume uses
        )

        with session.use_lvlm(s.child(0.0, 0.05)) as backend:
            return recovery.resume(p, rid, device, s.child(0.05, 1.0), lvlm_builder(p, backend=backend))

    def done(result: Any) -> None:
        session.notify(*_TOPICS.get(kind, ()))
        if tell is not None:
            tell("info", f"Run {rid} resumed as run {result.new_run}", description)

    return Job(
        "resume",
        f"Resuming the interrupted {kind} (run {rid})",
        fn,
        on_done=done,
        on_partial=lambda r: (
            session.notify("verdicts") if isinstance(r, dict) and r.get("kind") == "critique" else None
        ),
    )
