"""The open project as the GUI sees it: one thin, evented adapter over the core's Project.

Views never keep their own copy of project data: they read through ``session.project`` (the GUI thread's
database connection) and redraw when ``changed`` names a topic they show. Jobs open their own connection
in their thread (see gui/jobs.py) and the window announces what they changed when they finish.

Topics of ``changed``: "project" (opened/closed), "samples", "models", "alignment", "explanation",
"critique", "verdicts", "descriptions", "templates", "chat", "metrics", "settings", "lvlm".
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

log = logging.getLogger(__name__)

SETTINGS_FILE = "gui-settings.json"  # the method's settings the expert chose for this project


class Session(QObject):
    changed = Signal(str)  # a topic, see the module docstring
    currentSampleChanged = Signal(int)  # sample id, -1 for none
    error = Signal(object)  # core.errors.UserError: shown by the window's one message place

    def __init__(self, device: str = "auto", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.project = None  # core.project.Project, GUI-thread connection
        self.root: Path | None = None
        self.device_name = device  # "auto", "cpu", "cuda", "cuda:1"
        self.current_sample: int = -1
        self._pipeline_settings = None
        self._backend = None
        self._backend_key: str | None = None
        self._backend_lock = threading.Lock()

    # -- project ----------------------------------------------------------------------------------------
    def open_project(self, root: str | Path) -> None:
        from ..core.project import Project

        project = Project.open(root)
        self.close_project(emit=False)
        self.project = project
        self.root = project.root
        self._pipeline_settings = None
        self.current_sample = -1
        QSettings().setValue("session/last_project", str(self.root))
        self.changed.emit("project")
        self.currentSampleChanged.emit(-1)

    def close_project(self, emit: bool = True) -> None:
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

    def report(self, exc: BaseException, during: str = "") -> None:
        """Tell the user about a failure of a GUI-thread action (jobs' failures arrive via the runner)."""
        from ..core.errors import describe_error

        log.warning("%s failed: %s", during or "an action", exc)
        self.error.emit(describe_error(exc, during))

    # -- selection --------------------------------------------------------------------------------------
    def select_sample(self, sample_id: int) -> None:
        if sample_id != self.current_sample:
            self.current_sample = sample_id
            self.currentSampleChanged.emit(sample_id)

    # -- what the project holds now (latest of each) ------------------------------------------------------
    def _latest(self, sql: str, args: tuple = ()) -> int | None:
        if self.project is None:
            return None
        row = self.project.db.execute(sql, args).fetchone()
        return int(row[0]) if row is not None else None

    def original_model_id(self) -> int | None:
        """The audited model: the latest trained or imported one (never an aligned one)."""
        return self._latest("SELECT id FROM models WHERE kind IN ('erm','imported') ORDER BY id DESC LIMIT 1")

    def aligned_model_id(self) -> int | None:
        """The latest model made by alignment (RRR fine-tuning), if any."""
        return self._latest("SELECT id FROM models WHERE kind='rrr' ORDER BY id DESC LIMIT 1")

    def latest_model_id(self) -> int | None:
        return self._latest("SELECT id FROM models ORDER BY id DESC LIMIT 1")

    def alignment_set_id(self) -> int | None:
        return self._latest("SELECT id FROM alignment_sets ORDER BY id DESC LIMIT 1")

    def explanation_id(self) -> int | None:
        return self._latest("SELECT id FROM explanations ORDER BY id DESC LIMIT 1")

    # -- device -----------------------------------------------------------------------------------------
    def device(self):
        from ..core.devices import resolve_device

        return resolve_device(self.device_name)

    def device_label(self) -> str:
        from ..core.devices import describe_device

        try:
            return describe_device(self.device())
        except ValueError as e:
            return f"no device ({e})"

    # -- the method's settings for this project -----------------------------------------------------------
    def pipeline_settings(self):
        """The settings the expert chose (defaults of METHOD.md until changed), kept in the project folder."""
        from ..core.pipeline import PipelineSettings

        if self._pipeline_settings is None:
            data: dict[str, Any] = {}
            if self.root is not None and (self.root / SETTINGS_FILE).is_file():
                try:
                    data = json.loads((self.root / SETTINGS_FILE).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    log.warning("could not read %s; using the defaults", SETTINGS_FILE)
            self._pipeline_settings = PipelineSettings.from_dict(data.get("pipeline", {}))
        return self._pipeline_settings

    def save_pipeline_settings(self, settings) -> None:
        self._pipeline_settings = settings
        if self.root is not None:
            path = self.root / SETTINGS_FILE
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pipeline": settings.to_dict()}, indent=2), encoding="utf-8")
            os.replace(tmp, path)
        self.changed.emit("settings")

    # -- the LVLM ---------------------------------------------------------------------------------------
    def lvlm_config(self):
        """The LVLM the user configured (kept in the user's settings: folders differ per workstation)."""
        from ..lvlm.config import LVLMConfig

        raw = QSettings().value("lvlm/config", "")
        if not raw:
            return None
        try:
            return LVLMConfig.from_dict(json.loads(str(raw)))
        except Exception:  # noqa: BLE001 - a broken stored setting is forgotten, not fatal
            log.warning("ignoring unreadable stored LVLM settings")
            return None

    def set_lvlm_config(self, config) -> None:
        QSettings().setValue("lvlm/config", json.dumps(config.to_dict()) if config is not None else "")
        self.release_lvlm()
        self.changed.emit("lvlm")

    def lvlm_backend(self, state=None):
        """The loaded LVLM, opened on first use (call from a job: loading takes long) and then reused."""
        from ..lvlm.backend import LVLMError

        config = self.lvlm_config()
        if config is None:
            raise LVLMError("No vision-language model is configured yet: choose one in LVLM > Settings.")
        key = json.dumps(config.to_dict(), sort_keys=True)
        with self._backend_lock:
            if self._backend is None or self._backend_key != key:
                self._close_backend()
                from ..lvlm.config import open_backend

                self._backend = open_backend(config, state)
                self._backend_key = key
            return self._backend

    def release_lvlm(self) -> None:
        with self._backend_lock:
            self._close_backend()

    def _close_backend(self) -> None:
        if self._backend is not None:
            try:
                self._backend.close()
            except Exception:  # noqa: BLE001
                log.exception("closing the LVLM failed")
        self._backend = None
        self._backend_key = None
