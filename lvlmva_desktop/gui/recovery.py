"""The window's side of crash safety and of the one-writer rule (the work is core/store/recovery.py, core/store/lock.py).

On opening a project with a step a killed or crashed program left unfinished, the window says which one
and that Method > Resume interrupted step continues it; the Resume job rebuilds the step's critic (an LVLM
critique uses the LVLM configured here: gui/workflow.py resume_job) or runs the step again. A project another program is writing is
refused in the Messages pane, and the user may open it read-only instead.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QMessageBox, QWidget


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
