"""Crash safety: a run whose process died is marked interrupted, half-written files are cleared away, and
an interrupted step can be resumed.

Every change is a SQLite transaction, and a model version or explanation file is renamed into place
inside the transaction that records it; so a process killed at any moment leaves either the row and its
file, or (after ``remove_leftovers``) neither. What a kill does leave is a run row that still says
'running': the first writer to open the project again (it holds the one-writer lock, core/store/lock.py, so no
other process can be writing) marks it 'interrupted'.

Resuming: a critique continues with the images the interrupted run (and the runs it resumed) had not
finished; every other step is run again with its recorded settings. Either way the new run records
``resumes: <old id>`` in its settings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.store.project import Project, ProjectError, add_missing_columns

if TYPE_CHECKING:
    import torch

    from lvlmva_desktop.core.method.critic import Critic

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"
RUN_COLUMNS = (("pid", "INTEGER"), ("host", "TEXT"), ("process", "TEXT"))
RESUMABLE = ("critique", "train", "align", "sample", "explain", "evaluate", "import_model", "pipeline")
_OURS = {  # files this program names; anything else in these folders is left alone
    "models": re.compile(r"model-(\d+)-[A-Za-z0-9_]+\.safetensors"),
    "artifacts": re.compile(r"explanation-(\d+)\.safetensors"),
}
_TABLE = {"models": "models", "artifacts": "explanations"}
_ROOT_TMP = re.compile(r"(project\.json|gui-settings)(\.[\w.-]*)?\.tmp")  # atomic writes of the manifest etc.
# the temporary file safetensors writes beside its target before renaming it (".tmp" and random letters)
_WRITER_TMP = re.compile(r"\.tmp[A-Za-z0-9_]{6,}")

# recorded LVLM CriticSettings dict -> critic (lvlm/factory.py's lvlm_builder makes one from a loaded model)
LVLMCriticFactory = Callable[[dict], "Critic"]


# -- on open ---------------------------------------------------------------------------------------------
def prepare(project: Project, first: bool, locked: bool) -> None:
    """Called by every writable Project: add the run columns old projects lack; on the process's first
    open (no other Project of this process is using the folder), recover from a crash."""
    migrate(project.db)
    if first:
        mark_interrupted(project, locked)
        if locked:  # without a file lock another process may be writing these files right now
            remove_leftovers(project)


def migrate(db: sqlite3.Connection) -> None:
    """Schema migration of the runs table (works on projects made before these columns existed)."""
    add_missing_columns(db, "runs", RUN_COLUMNS)


def _alive(pid: int | None) -> bool:
    if not pid or os.name == "nt":
        return True  # cannot tell: assume it is alive and leave its run alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def mark_interrupted(project: Project, locked: bool = True) -> list[int]:
    """Mark 'running' runs of dead processes as interrupted; returns their ids.

    Holding the lock, every running run of another process is dead (a live writer would hold the lock).
    Without locks (a file system that offers none) only runs of this host whose pid is gone are marked.
    """
    from lvlmva_desktop.core.store.lock import PROCESS_TOKEN, host_name

    rows = project.db.execute(
        "SELECT id, kind, pid, host, process FROM runs WHERE status='running' ORDER BY id"
    ).fetchall()
    dead = [
        r
        for r in rows
        if r["process"] != PROCESS_TOKEN and (locked or (r["host"] == host_name() and not _alive(r["pid"])))
    ]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    for r in dead:
        error = (
            f"interrupted: the program stopped (killed, crashed or lost power) while this step ran "
            f"(pid {r['pid'] or '?'} on {r['host'] or '?'}); found when the project was opened on {when}"
        )
        with project.transaction() as db:
            db.execute(
                "UPDATE runs SET status=?, error=? WHERE id=? AND status='running'",
                (INTERRUPTED, error, r["id"]),
            )
            project.audit(
                "run_end",
                {
                    "run_id": int(r["id"]),
                    "kind": r["kind"],
                    "status": INTERRUPTED,
                    "error": error,
                    "results": {},
                },
            )
        log.warning("run %d (%s) was interrupted; marked so", r["id"], r["kind"])
    return [int(r["id"]) for r in dead]


def remove_leftovers(project: Project) -> list[str]:
    """Delete what a killed write left behind: temporary files, and model / explanation files whose
    database row was rolled back (they are not versions; a later version may reuse the name)."""
    removed = []
    for sub in ("models", "artifacts", "cache"):
        folder = project.root / sub
        if not folder.is_dir():
            continue
        known = set()
        if sub in _TABLE:
            known = {r[0] for r in project.db.execute(f"SELECT path FROM {_TABLE[sub]}")}  # noqa: S608
        for f in folder.iterdir():
            orphan = sub in _OURS and _OURS[sub].fullmatch(f.name) and f"{sub}/{f.name}" not in known
            if f.is_file() and (f.suffix == ".tmp" or _WRITER_TMP.fullmatch(f.name) or orphan):
                try:
                    os.chmod(f, 0o600)  # model files are read-only; Windows will not delete those
                    f.unlink()
                    removed.append(f"{sub}/{f.name}")
                except OSError as e:
                    log.warning("could not remove the leftover %s: %s", f, e)
    ledger = project.root / "ledger"
    if ledger.is_dir():  # the row ledger of an import whose transaction was rolled back
        imports = {int(r[0]) for r in project.db.execute("SELECT id FROM imports")}
        for f in ledger.iterdir():
            m = re.fullmatch(r"import-(\d+)\.json(\.tmp)?", f.name)
            if f.is_file() and m and (m.group(2) or int(m.group(1)) not in imports):
                try:
                    f.unlink()
                    removed.append(f"ledger/{f.name}")
                except OSError as e:
                    log.warning("could not remove the leftover %s: %s", f, e)
    for f in project.root.iterdir():
        if f.is_file() and _ROOT_TMP.fullmatch(f.name):
            try:
                f.unlink()
                removed.append(f.name)
            except OSError as e:
                log.warning("could not remove the leftover %s: %s", f, e)
    if removed:
        log.warning("removed files left by an interrupted write: %s", ", ".join(removed))
    return removed


# -- what can be resumed ---------------------------------------------------------------------------------
def _settings(row: sqlite3.Row) -> dict:
    try:
        return json.loads(row["settings"] or "{}")
    except ValueError:
        return {}


def interrupted_runs(project: Project) -> list[sqlite3.Row]:
    return project.db.execute("SELECT * FROM runs WHERE status=? ORDER BY id", (INTERRUPTED,)).fetchall()


def _taken_over(project: Project) -> set[int]:
    out = set()
    for r in project.db.execute("SELECT settings FROM runs WHERE settings LIKE '%\"resumes\"%'"):
        got = _settings(r).get("resumes")
        if isinstance(got, int):
            out.add(got)
    return out


def _pipeline_steps(rows: list[sqlite3.Row], pipeline: sqlite3.Row) -> list[sqlite3.Row]:
    """The interrupted steps of an interrupted pipeline run: later runs of the same (dead) process."""
    return [
        r
        for r in rows
        if r["kind"] != "pipeline" and r["id"] > pipeline["id"] and r["process"] == pipeline["process"]
    ]


def resumable_runs(project: Project) -> list[sqlite3.Row]:
    """Interrupted runs no later run has taken over (resumed), oldest first. The step a pipeline run was
    in is part of that pipeline: resuming the pipeline covers it (``pick`` still takes it by its id)."""
    taken = _taken_over(project)
    rows = interrupted_runs(project)
    inside = {
        int(r["id"])
        for p in rows
        if p["kind"] == "pipeline" and p["process"] is not None
        for r in _pipeline_steps(rows, p)
    }
    return [r for r in rows if r["id"] not in taken | inside and r["kind"] in RESUMABLE]


def resume_chain(project: Project, run_id: int) -> list[int]:
    """``run_id`` and the runs it resumed, newest first."""
    chain, seen = [], set()
    current: int | None = run_id
    while current is not None and current not in seen:
        seen.add(current)
        chain.append(current)
        row = project.db.execute("SELECT settings FROM runs WHERE id=?", (current,)).fetchone()
        nxt = _settings(row).get("resumes") if row is not None else None
        current = nxt if isinstance(nxt, int) else None
    return chain


def critiqued_samples(project: Project, run_id: int) -> set[int]:
    """Images already critiqued by an interrupted critique run and the runs it resumed."""
    expl_id = _settings(project.get_run(run_id)).get("explanation_id")
    chain = resume_chain(project, run_id)
    q = f"SELECT DISTINCT sample_id FROM critiques WHERE explanation_id=? AND run_id IN ({','.join('?' * len(chain))})"
    return {int(r[0]) for r in project.db.execute(q, (expl_id, *chain))}


def describe(project: Project, row: sqlite3.Row) -> str:
    """One line for the user: which run was interrupted and what resuming it does."""
    kind, rid = row["kind"], int(row["id"])
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["started"] or 0))
    if kind == "critique":
        s = _settings(row)
        total = _explanation_size(project, s.get("explanation_id"))
        done = len(critiqued_samples(project, rid))
        return (
            f"Run {rid} (critique, started {started}) was interrupted after {done} of {total} images; "
            f"resuming critiques the remaining {max(total - done, 0)} with the same critic."
        )
    what = {"train": "training", "align": "retraining (alignment)", "pipeline": "the whole method"}.get(
        kind, kind
    )
    during = ""
    if kind == "pipeline" and row["process"] is not None:
        steps = [r["kind"] for r in _pipeline_steps(interrupted_runs(project), row)]
        during = f" in its {steps[-1]} step" if steps else ""
    return (
        f"Run {rid} ({what}, started {started}) was interrupted{during}; resuming runs it again from the start "
        f"with the same settings, as a new run that records it resumes run {rid}."
    )


def _explanation_size(project: Project, expl_id: int | None) -> int:
    if expl_id is None:
        return 0
    row = project.db.execute("SELECT set_id FROM explanations WHERE id=?", (expl_id,)).fetchone()
    if row is None:
        return 0
    return int(
        project.db.execute(
            "SELECT count(*) FROM alignment_members WHERE set_id=?", (row["set_id"],)
        ).fetchone()[0]
    )


# -- resuming --------------------------------------------------------------------------------------------
@dataclass
class Resumed:
    old_run: int
    new_run: int | None
    kind: str
    result: Any
    message: str


def pick(project: Project, run_id: int | None = None) -> sqlite3.Row:
    """The run to resume: ``run_id`` (it must be interrupted) or the latest interrupted one not yet resumed."""
    if run_id is None:
        rows = resumable_runs(project)
        if not rows:
            raise ProjectError("No interrupted step to resume in this project.")
        return rows[-1]
    row = project.get_run(run_id)
    if row["status"] != INTERRUPTED:
        raise ProjectError(f"Run {run_id} ({row['kind']}) was not interrupted (it is {row['status']}).")
    if row["kind"] not in RESUMABLE:
        raise ProjectError(f"Run {run_id} is a {row['kind']} run, which cannot be resumed; start it again.")
    if int(run_id) in _taken_over(project):  # resuming it twice would critique finished images again
        raise ProjectError(
            f"Run {run_id} was already resumed by a later run; resume that one if it stopped too."
        )
    return row


def critic_for(
    project: Project, identity: dict, expl_id: int | None, lvlm_critic: LVLMCriticFactory | None
) -> Critic:
    """Rebuild the critic a run recorded (core.method.critic.critic_from_identity, the one critic factory):
    simulated and expert from the record; an LVLM needs the model, which ``lvlm_critic`` brings."""
    from lvlmva_desktop.core.method.critic import LVLM_KIND, UnknownCritic, critic_from_identity

    kind = identity.get("kind") if isinstance(identity, dict) else None
    if kind == LVLM_KIND and lvlm_critic is None:
        raise ProjectError(
            "This step used an LVLM critic: say which LVLM to use (--model-dir FOLDER, or --endpoint URL "
            "--lvlm-model NAME; in the window, LVLM > Settings) to resume it."
        )
    try:
        return critic_from_identity(identity, project, expl_id, lvlm_critic)
    except UnknownCritic as e:
        raise ProjectError(
            f"The critic of this step ({kind or 'not recorded'}) cannot be rebuilt: {e} Start it again."
        ) from None


def _new_run_for(project: Project, old: int) -> int | None:
    """The latest run that records it resumes ``old``."""
    rows = project.db.execute(
        "SELECT id, settings FROM runs WHERE id>? AND settings LIKE '%\"resumes\"%' ORDER BY id DESC", (old,)
    ).fetchall()
    return next((int(r["id"]) for r in rows if _settings(r).get("resumes") == old), None)


def resume(
    project: Project,
    run_id: int | None,
    device: torch.device,
    state: TaskState | None = None,
    lvlm_critic: LVLMCriticFactory | None = None,
) -> Resumed:
    """Resume an interrupted run (the latest if ``run_id`` is None); see the module docstring."""
    from lvlmva_desktop.core.method import pipeline as pl

    state = ensure_state(state)
    row = pick(project, run_id)
    rid, kind, s = int(row["id"]), row["kind"], _settings(row)
    message = describe(project, row)
    ps = pl.PipelineSettings.from_record(s)  # the sections a step recorded; defaults for the others
    with project.resuming(rid):
        if kind == "critique":
            expl_id = int(s["explanation_id"])
            critic = critic_for(project, s.get("critic") or {}, expl_id, lvlm_critic)
            result: Any = pl.run_critique(
                project, expl_id, critic, state, skip_samples=critiqued_samples(project, rid)
            )
        elif kind == "train":
            result = pl.train_original(
                project,
                s["arch"],
                ps.train,
                device,
                state,
                weights=s.get("weights"),
                preprocess=s.get("preprocess"),
            )
        elif kind == "align":
            # as recorded; a run from before the penalty could choose its strength keeps the paper's penalty
            al = ps.align
            result = pl.align_model(project, int(s["model_id"]), int(s["explanation_id"]), al, device, state)
        elif kind == "sample":
            result = pl.sample_alignment_set(project, int(s["model_id"]), ps.sampling, device, state)
        elif kind == "explain":
            result = pl.explain_alignment_set(
                project, int(s["model_id"]), int(s["set_id"]), ps.explain, ps.segment, device, state
            )
        elif kind == "evaluate":
            result = pl.evaluate_models(project, [int(m) for m in s["model_ids"]], ps.evaluate, device, state)
        elif kind == "import_model":
            result = pl.import_model(project, s["path"], s["arch"], s.get("preprocess"))
        else:  # pipeline
            critic = critic_for(project, recorded_critic(project, row) or {}, None, lvlm_critic)
            result = pl.run_pipeline(project, ps, critic, device, state, model_id=s.get("model_id"))
    return Resumed(rid, _new_run_for(project, rid), kind, result, message)


def recorded_critic(project: Project, row: sqlite3.Row) -> dict | None:
    """The identity of the critic a critique or pipeline run used (None for other steps)."""
    s = _settings(row)
    if row["kind"] == "critique" or s.get("critic"):
        return s.get("critic") or {}
    if row["kind"] != "pipeline":
        return None
    # an older pipeline run did not record its critic; its own critique step (same process) did
    got = project.db.execute(
        "SELECT settings FROM runs WHERE kind='critique' AND id>? AND process IS ? ORDER BY id LIMIT 1",
        (row["id"], row["process"]),
    ).fetchone()
    if got is None:
        raise ProjectError(
            f"Run {row['id']} (the whole method) stopped before its critique step and did not record its "
            "critic; start it again with the critic you want (lvlmva run, or the window's Method menu)."
        )
    return _settings(got).get("critic") or {}
