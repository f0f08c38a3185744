"""The open project as the GUI sees it: one thin, evented adapter over the core's Project.

Views never keep their own copy of project data: they read through ``session.project`` (the GUI thread's
database connection) and redraw when ``changed`` names a topic they show. Jobs open their own connection
in their thread (see gui/jobs.py) and the window announces what they changed when they finish.

Topics of ``changed``: "project" (opened/closed), "samples", "models", "alignment", "explanation",
"critique", "verdicts", "descriptions", "templates", "chat", "metrics", "settings", "lvlm".
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, QTimer, Signal

from lvlmva_desktop.core.method.settings_schema import (
    SETTINGS_FILE,  # the method's settings saved in the project folder
)

log = logging.getLogger(__name__)


class Session(QObject):
    changed = Signal(str)  # a topic, see the module docstring
    currentSampleChanged = Signal(int)  # sample id, -1 for none
    error = Signal(object)  # core.runtime.errors.UserError: shown by the window's one message place
    notice = Signal(str, str)  # (title, text): something the expert should read, in the Messages pane

    def __init__(self, device: str = "auto", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.project = None  # core.store.project.Project, GUI-thread connection
        self.root: Path | None = None
        self.device_name = device  # "auto", "cpu", "cuda", "cuda:1"
        self.current_sample: int = -1
        self._pipeline_settings = None
        self._backend = None
        self._backend_key: str | None = None
        self._backend_lock = threading.Lock()
        self._users: dict[int, int] = {}  # id(backend) -> jobs using it now
        self._settings_to_log: dict | None = None
        self._log_timer = QTimer(self)
        self._log_timer.setSingleShot(True)
        self._log_timer.setInterval(1500)
        self._log_timer.timeout.connect(self.flush_settings_log)
        self._release_requested = False

    # -- project ----------------------------------------------------------------------------------------
    def open_project(self, root: str | Path, read_only: bool = False, reason: str = "asked") -> None:
        """Open for writing (core.store.lock.ProjectLocked if another program has it), or ``read_only`` (``reason``:
        why, for the words of a refused change). A folder that cannot be written opens read-only."""
        from lvlmva_desktop.core.store.project import Project

        self.flush_settings_log()
        project = Project.open(root, read_only=read_only, reason=reason)
        read_only = project.read_only
        self.close_project(emit=False)
        self.project = project
        self.root = project.root
        self._pipeline_settings = None
        self.current_sample = -1
        if not read_only:
            self._log_unlogged_settings()
        QSettings().setValue("session/last_project", str(self.root))
        self.changed.emit("project")
        self.currentSampleChanged.emit(-1)

    @property
    def read_only(self) -> bool:
        return self.project is not None and bool(getattr(self.project, "read_only", False))

    def close_project(self, emit: bool = True) -> None:
        self.flush_settings_log()
        if self.project is not None:
            self.project.close()
        self.project = None
        self.root = None
        self.current_sample = -1
        if emit:
            self.changed.emit("project")
            self.currentSampleChanged.emit(-1)

    def notify(self, *topics: str) -> None:
        for t in topics:
            self.changed.emit(t)

    def tell(self, title: str, text: str = "") -> None:
        """Something the expert should read (not a failure): it goes to the Messages pane."""
        self.notice.emit(title, text)

    def report(self, exc: BaseException, during: str = "") -> None:
        """Tell the user about a failure of a GUI-thread action (jobs' failures arrive via the runner)."""
        from lvlmva_desktop.core.runtime.errors import describe_error

        log.warning("%s failed: %s", during or "an action", exc)
        self.error.emit(describe_error(exc, during))

    # -- selection --------------------------------------------------------------------------------------
    def select_sample(self, sample_id: int) -> None:
        if sample_id != self.current_sample:
            self.current_sample = sample_id
            self.currentSampleChanged.emit(sample_id)

    # -- what the project holds now (latest of each) ------------------------------------------------------
    def original_model_id(self) -> int | None:
        """The audited model: the latest trained or imported one (never an aligned one)."""
        return self.project.latest_original_model() if self.project is not None else None

    def aligned_model_id(self) -> int | None:
        """The latest model made by alignment (RRR fine-tuning), if any."""
        return self.project.latest_model("rrr") if self.project is not None else None

    def latest_model_id(self) -> int | None:
        return self.project.latest_model() if self.project is not None else None

    def alignment_set_id(self) -> int | None:
        return self.project.latest_id("alignment_sets") if self.project is not None else None

    def explanation_id(self) -> int | None:
        return self.project.latest_id("explanations") if self.project is not None else None

    # -- device -----------------------------------------------------------------------------------------
    def device(self):
        from lvlmva_desktop.core.runtime.devices import resolve_device

        return resolve_device(self.device_name)

    def device_label(self) -> str:
        from lvlmva_desktop.core.runtime.devices import describe_device

        try:
            return describe_device(self.device())
        except ValueError as e:
            return f"no device ({e})"

    # -- the method's settings for this project -----------------------------------------------------------
    def pipeline_settings(self):
        """The settings the expert chose (defaults of METHOD.md until changed), kept in the project folder
        where the command line reads them too (core.method.settings_schema.project_settings)."""
        from lvlmva_desktop.core.method.settings_schema import project_settings

        if self._pipeline_settings is None:
            self._pipeline_settings, _ = project_settings(self.root)
        return self._pipeline_settings

    def save_pipeline_settings(self, settings) -> None:
        from lvlmva_desktop.core.method.settings_schema import save_project_settings

        self._pipeline_settings = settings
        if self.root is not None and self.read_only:
            # kept for this window only: the project belongs to the program that has it open for writing
            self.changed.emit("settings")
            return
        if self.root is not None:
            self._settings_to_log = save_project_settings(self.root, settings)
            self._log_timer.start()  # one audit entry per burst of edits, not one per keystroke
        self.changed.emit("settings")

    def _log_unlogged_settings(self) -> None:
        """The settings file is replaced at once and logged a moment later: after a crash in between, the
        change is logged on the next opening, saying so."""
        from lvlmva_desktop.core.store import audit

        path = self.root / SETTINGS_FILE
        if not path.is_file():
            return
        try:
            settings = json.loads(path.read_text(encoding="utf-8")).get("pipeline", {})
            logged = self.project.latest_audit_hashes("settings")
            if logged is not None and logged.get("settings") == audit.json_hash(settings):
                return
            self.project.record_settings(
                f"{SETTINGS_FILE} (changed before the program stopped; logged on reopening)", settings
            )
        except Exception as e:  # noqa: BLE001 - told, never blocks opening
            self.report(e, "Checking the settings against the audit log")

    def flush_settings_log(self) -> None:
        """Write the pending settings change to the audit log (also before jobs read them and at close)."""
        self._log_timer.stop()
        pending, self._settings_to_log = self._settings_to_log, None
        if pending is not None and self.project is not None:
            try:
                self.project.record_settings(SETTINGS_FILE, pending)
            except Exception as e:  # noqa: BLE001 - told, not fatal: the settings file is saved
                self.report(e, "Recording the settings change in the audit log")

    # -- the LVLM ---------------------------------------------------------------------------------------
    def lvlm_config(self):
        """The LVLM the user configured (kept in the user's settings: folders differ per workstation)."""
        from lvlmva_desktop.lvlm.config import LVLMConfig

        raw = QSettings().value("lvlm/config", "")
        if not raw:
            return None
        try:
            return LVLMConfig.from_dict(json.loads(str(raw)))
        except Exception:  # noqa: BLE001 - a broken stored setting is forgotten, not fatal
            log.warning("ignoring unreadable stored LVLM settings")
            return None

    def set_lvlm_config(self, config) -> None:
        before = self.lvlm_config()
        QSettings().setValue("lvlm/config", json.dumps(config.to_dict()) if config is not None else "")
        if before is None or config is None or before.to_dict() != config.to_dict():
            self.release_lvlm()  # a model loaded for the old settings is freed once unused
        self.changed.emit("lvlm")

    @contextlib.contextmanager
    def use_lvlm(self, state=None) -> Iterator[Any]:
        """The loaded LVLM for the duration of a job's use (call from a job: loading takes long).

        The model stays loaded between jobs. A model whose settings were changed meanwhile is closed
        once its last user is done, never under a running critique or chat; the GUI thread never waits
        for a load (release_lvlm does not block).
        """
        from lvlmva_desktop.lvlm.backend import LVLMError

        config = self.lvlm_config()
        if config is None:
            raise LVLMError("No vision-language model is configured yet: choose one in LVLM > Settings.")
        key = json.dumps(config.to_dict(), sort_keys=True)
        with self._backend_lock:
            if self._backend is None or self._backend_key != key:
                self._retire_current()
                from lvlmva_desktop.lvlm.config import open_backend

                self._backend = open_backend(config, state)
                self._backend_key = key
            backend = self._backend
            self._users[id(backend)] = self._users.get(id(backend), 0) + 1
        try:
            yield backend
        finally:
            with self._backend_lock:
                self._users[id(backend)] -= 1
                if self._users[id(backend)] == 0:
                    del self._users[id(backend)]
                    if backend is not self._backend:  # retired while in use: close it now
                        self._close(backend)
                    elif self._release_requested:  # released (settings changed) while it loaded
                        self._retire_current()

    def release_lvlm(self) -> None:
        """Free the loaded LVLM when nobody uses it (settings changed, project closed, quitting).

        Never blocks: if a job is loading or using the model, it is retired and closed by its last user.
        """
        if not self._backend_lock.acquire(blocking=False):
            self._release_requested = True
            return
        try:
            self._retire_current()
        finally:
            self._backend_lock.release()

    def lvlm_in_use(self) -> bool:
        return bool(self._users)

    def _retire_current(self) -> None:
        backend, self._backend, self._backend_key = self._backend, None, None
        self._release_requested = False
        if backend is not None and id(backend) not in self._users:
            self._close(backend)

    @staticmethod
    def _close(backend) -> None:
        try:
            backend.close()
        except Exception:  # noqa: BLE001
            log.exception("closing the LVLM failed")
