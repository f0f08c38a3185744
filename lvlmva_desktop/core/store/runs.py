"""The project's runs: each step recorded as running, then finished, cancelled or failed."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lvlmva_desktop.core.runtime.jobs import Cancelled
from lvlmva_desktop.core.store.files import (
    ProjectError,
    sha256_file,
)

if TYPE_CHECKING:
    from lvlmva_desktop.core.store.project import Project


class RunStore:
    """Part of Project (core/store/project.py): the runs table."""

    # -- runs -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, kind: str, settings: dict) -> Iterator[RunHandle]:
        """Record a run: 'running' now, then finished / cancelled / failed with the error text.

        The row names the writing process (pid, host, a per-process token), so a later open can tell a
        run whose process died (marked 'interrupted', core/store/recovery.py) from one still going.
        """
        from lvlmva_desktop.core.store.lock import writer_identity

        if self._resumes is not None:  # the first run started inside ``resuming`` says what it resumes
            settings, self._resumes = {**settings, "resumes": self._resumes}, None
        w = writer_identity()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (kind, status, started, user, settings, pid, host, process) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (kind, "running", time.time(), w["user"], json.dumps(settings))
                + (w["pid"], w["host"], w["process"]),
            )
            self.audit("run_start", {"run_id": int(cur.lastrowid), "kind": kind, "settings": settings})
        handle = RunHandle(self, int(cur.lastrowid))
        try:
            yield handle
        except (Cancelled, KeyboardInterrupt):
            self._finish_run(handle.id, "cancelled", handle.results, "cancelled by the user")
            raise
        except BaseException as e:
            from lvlmva_desktop.core.runtime.secrets import scrub

            # the log is append-only: what a server echoed of a key must never reach it
            self._finish_run(handle.id, "failed", handle.results, scrub(f"{type(e).__name__}: {e}"))
            raise
        else:
            self._finish_run(handle.id, "finished", handle.results, None)

    def _finish_run(self, run_id: int, status: str, results: dict, error: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status=?, finished=?, results=?, error=? WHERE id=?",
                (status, time.time(), json.dumps(results), error, run_id),
            )
            kind = db.execute("SELECT kind FROM runs WHERE id=?", (run_id,)).fetchone()["kind"]
            params = {"run_id": run_id, "kind": kind, "status": status, "error": error, "results": results}
            written = results.get("results_file") if isinstance(results, dict) else None
            hashes = {"results_file": sha256_file(self.abs(written))} if written else {}
            self.audit("run_end", params, hashes)

    @contextlib.contextmanager
    def resuming(self, run_id: int) -> Iterator[None]:
        """The next run started inside records ``resumes: run_id`` in its settings (core/store/recovery.py)."""
        self._resumes = run_id
        try:
            yield
        finally:
            self._resumes = None

    def get_run(self, run_id: int) -> sqlite3.Row:
        """The row of run ``run_id``; a ProjectError when there is none."""
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No run {run_id} in this project.")
        return row

    def latest_finished_run(self, kind: str) -> sqlite3.Row | None:
        """The newest run of ``kind`` that finished (None: there is none)."""
        return self.db.execute(
            "SELECT * FROM runs WHERE kind=? AND status='finished' ORDER BY id DESC LIMIT 1", (kind,)
        ).fetchone()

    def finished_runs(self, kind: str) -> list[sqlite3.Row]:
        """Every run of ``kind`` that finished, newest first."""
        return self.db.execute(
            "SELECT * FROM runs WHERE kind=? AND status='finished' ORDER BY id DESC", (kind,)
        ).fetchall()

    def runs(self, kind: str | None = None, *, include_failed: bool = True) -> list[sqlite3.Row]:
        """Every run (of ``kind``), oldest first; failed ones left out with ``include_failed=False``."""
        where = ["kind=?"] if kind is not None else []
        if not include_failed:
            where.append("status != 'failed'")
        q = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return self.db.execute(q, (kind,) if kind is not None else ()).fetchall()

    def recent_runs(self, limit: int = 10) -> list[sqlite3.Row]:
        """The newest ``limit`` runs of any kind, newest first."""
        return self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()

    def alignment_set_run(self, set_id: int) -> sqlite3.Row | None:
        """The run that chose alignment set ``set_id`` (its results: n, artefact_share, ...); None when
        there is no such set."""
        return self.db.execute(
            "SELECT * FROM runs WHERE id=(SELECT run_id FROM alignment_sets WHERE id=?)", (set_id,)
        ).fetchone()


class RunHandle:
    """A running run; set ``results`` (a dict) to have them stored when the run ends."""

    def __init__(self, project: Project, run_id: int) -> None:
        self.project = project
        self.id = run_id
        self.results: dict = {}
