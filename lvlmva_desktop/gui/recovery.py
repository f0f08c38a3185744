"""The window's side of crash safety and of the one-writer rule (the work is core/store/recovery.py, core/store/lock.py).

On opening a project with a step a killed or crashed program left unfinished, the window says which one
and that Method > Resume interrupted step continues it; the Resume job rebuilds the step's critic (an LVLM
critique uses the LVLM configured here) or runs the step again. A project another program is writing is
refused in the Messages pane, and the user may open it read-only instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QMessageBox, QWidget

from lvlmva_desktop.gui.jobs import Job
from lvlmva_desktop.gui.session import Session

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


def interrupted_notice(project: Any) -> str | None:
    """The Messages pane's words about interrupted steps of a just-opened project (None if there are none)."""
    from lvlmva_desktop.core.store import recovery

    rows = recovery.resumable_runs(project)
    if not rows:
        return None
    text = recovery.describe(project, rows[-1])
    if len(rows) > 1:
        others = ", ".join(str(r["id"]) for r in rows[:-1])
        text += f" Earlier interrupted runs: {others}."
    return text + " Method > Resume interrupted step continues it."


def ask_read_only(parent: QWidget, error: Exception) -> bool:
    """Another program writes the project: ask whether to open it read-only."""
    answer = QMessageBox.question(
        parent,
        "Project in use",
        f"{error}\n\nOpen it read-only? You can look at everything, but not change anything.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


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
