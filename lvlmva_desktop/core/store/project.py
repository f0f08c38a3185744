"""The project: a folder with a versioned manifest, one SQLite database and immutable model versions.

Layout::

    project.json        manifest (schema_version, name, classes, image size, channels)
    project.sqlite      samples, alignment sets, explanations, critiques, verdicts, runs, metrics (WAL;
                        its schema version in PRAGMA user_version, migrated by DB_MIGRATIONS)
    models/             model versions as safetensors, read-only, sha256 recorded in the database
    artifacts/          attribution and segment maps as safetensors
    runs/               one results JSON per pipeline run
    ledger/             the rows each import added (import-N.json; its sha256 in the audit log)
    cache/              derived data (decoded image tensors, their sha256 in the audit log); safe to delete

Paths inside are relative to the project folder, so a project can be moved. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lvlmva_desktop.core.store import audit as audit_log
from lvlmva_desktop.core.store.database import (
    DB_MIGRATIONS,
    DB_SCHEMA_VERSION,
    READ_ONLY_REASONS,
    _check_database_file,
    _check_integrity,
    _ReadOnlyConnection,
    add_missing_columns,
    database_version,
    folder_writable,
    migrate_verdicts,
)
from lvlmva_desktop.core.store.files import (
    DATABASE,
    MANIFEST,
    ProjectError,
    atomic_write_json,
    current_user,
    sha256_file,
)
from lvlmva_desktop.core.store.model_versions import ModelVersionStore
from lvlmva_desktop.core.store.runs import RunHandle, RunStore
from lvlmva_desktop.core.store.samples import SampleStore, SplitData
from lvlmva_desktop.core.store.texts import TextStore
from lvlmva_desktop.core.store.verdicts import VerdictStore

__all__ = [
    "DATABASE",
    "DB_MIGRATIONS",
    "DB_SCHEMA_VERSION",
    "MANIFEST",
    "MIGRATIONS",
    "READ_ONLY_REASONS",
    "SCHEMA_VERSION",
    "Project",
    "ProjectError",
    "RunHandle",
    "SplitData",
    "add_missing_columns",
    "current_user",
    "sha256_file",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


# Manifest migrations: MIGRATIONS[v] turns a version-v manifest into version v+1.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


class Project(SampleStore, TextStore, RunStore, ModelVersionStore, VerdictStore):
    """An open project folder. Use ``Project.create`` or ``Project.open``; close (or use ``with``).

    Its parts, one module each in core/store/: the images (samples.py), the texts (texts.py), the runs
    (runs.py), the model versions (model_versions.py), and what the steps write after a model exists
    (verdicts.py); the database file (database.py), the lock (lock.py) and crash recovery (recovery.py)
    apart. This class holds the lifecycle, the transaction, the audit hooks and the manifest."""

    def __init__(
        self,
        root: Path,
        manifest: dict,
        read_only: bool = False,
        lock: object = None,
        read_only_reason: str = "asked",
    ) -> None:
        """``lock``: this object's share of the process's writer lock (core/store/lock.py), None if read-only.
        ``read_only_reason``: why it is read-only, for the words of a refused write (READ_ONLY_REASONS)."""
        self.root = root
        self.manifest = manifest
        self.read_only = read_only
        self.read_only_reason = read_only_reason if read_only else ""
        self.notes: list[str] = []  # what the command line and the window should tell about this opening
        self._lock = lock
        self._resumes: int | None = None  # see ``resuming``
        self._audit_due: tuple[int, str] | None = None  # anchor to write once the transaction commits
        if read_only:  # mode=ro: SQLite itself refuses writes; _ReadOnlyConnection says so in words
            uri = f"{(root / DATABASE).resolve().as_uri()}?mode=ro"
            if not folder_writable(root):
                # a read-only mount or copy: SQLite cannot make the write-ahead log's shared-memory file, so
                # the file is read as it is (it cannot change under us there)
                uri += "&immutable=1"
                wal = root / (DATABASE + "-wal")
                if wal.is_file() and wal.stat().st_size > 0:
                    self.notes.append(
                        f"{wal.name} holds changes that were never written into the database (the program "
                        "that made them stopped before closing the project); they are not shown here."
                    )
            self.db = sqlite3.connect(
                uri, uri=True, timeout=30, isolation_level=None, factory=_ReadOnlyConnection
            )
            self.db.refusal = READ_ONLY_REASONS.get(read_only_reason, READ_ONLY_REASONS["asked"])
        else:
            self.db = sqlite3.connect(str(root / DATABASE), timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        if getattr(lock, "first", True):  # once per process and folder: a damaged file is refused up front
            _check_integrity(self.db)
        self.db_version = database_version(self.db)  # after _migrate_database: the version it has now
        if self.db_version > DB_SCHEMA_VERSION:
            self.db.close()
            raise ProjectError(
                f"The project database {root / DATABASE} was written by a newer version of the program "
                f"(database schema {self.db_version}); this program reads database schemas up to "
                f"{DB_SCHEMA_VERSION}. Update the program to open this project."
            )
        self.db.execute("PRAGMA foreign_keys=ON")
        if read_only:
            self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a damaged file fails here
            if 0 < self.db_version < DB_SCHEMA_VERSION:
                self.notes.append(
                    f"The project database has schema {self.db_version}; this program writes schema "
                    f"{DB_SCHEMA_VERSION}. Opened read-only it is read as it is, not brought up to date "
                    "(opening it for writing does that)."
                )
        else:
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate_database()
            # columns added before versions were recorded are added whatever the version says, as
            # recovery.migrate does for the run columns (idempotent: nothing changes where they are)
            migrate_verdicts(self.db)
            from lvlmva_desktop.core.store import recovery

            recovery.prepare(self, first=getattr(lock, "first", True), locked=getattr(lock, "locked", False))

    # -- lifecycle ----------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | Path,
        name: str,
        classes: list[str],
        image_size: tuple[int, int],
        channels: int,
    ) -> Project:
        root = Path(root)
        if (root / MANIFEST).exists():
            raise ProjectError(f"A project already exists in {root}.")
        if channels not in (1, 3):
            raise ProjectError("Images must be used with 1 (grayscale) or 3 (RGB) channels.")
        for sub in ("models", "artifacts", "runs", "cache"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        from lvlmva_desktop.core.store.lock import acquire

        lock = acquire(root)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "created": time.time(),
            "classes": list(classes),
            "image_size": list(image_size),
            "channels": channels,
        }
        try:
            atomic_write_json(root / MANIFEST, manifest)
            project = cls(root, manifest, lock=lock)
        except BaseException:
            lock.release()
            raise
        project.audit("create_project", dict(manifest), {"manifest": audit_log.json_hash(manifest)})
        return project

    @classmethod
    def open(cls, root: str | Path, read_only: bool = False, reason: str = "asked") -> Project:
        """Open for writing (taking the one-writer lock: ProjectLocked if another process has it), or
        ``read_only`` (no lock; every write raises ProjectError saying why: ``reason``, one of
        READ_ONLY_REASONS). A folder that cannot be written (a read-only mount or copy) is opened read-only
        whatever was asked, with a note saying so."""
        root = Path(root)
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise ProjectError(f"{root} is not an LVLM-VA project (no {MANIFEST}).")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ProjectError(f"The project manifest {mpath} cannot be read: {e}") from e
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        if not isinstance(version, int):
            raise ProjectError(f"The project manifest {mpath} has no schema version.")
        if version > SCHEMA_VERSION:
            raise ProjectError(
                f"This project was written by a newer version (schema {version}); this program reads up to "
                f"{SCHEMA_VERSION}. Update the program to open it."
            )
        _check_database_file(root / DATABASE)
        from lvlmva_desktop.core.store.lock import acquire

        note = ""
        if not read_only and not folder_writable(root):
            read_only, reason = True, "folder"
            note = (
                f"The project folder {root} cannot be written (a read-only copy or mount): it is opened "
                "read-only, so it can be looked at, verified and reported on, but not changed."
            )
        lock = None if read_only else acquire(root)  # before the migrations: they write
        try:
            while version < SCHEMA_VERSION:
                manifest = MIGRATIONS[version](manifest)
                version = manifest["schema_version"] = version + 1
                if not read_only:
                    atomic_write_json(mpath, manifest)
            project = cls(root, manifest, read_only=read_only, lock=lock, read_only_reason=reason)
            if note:
                project.notes.insert(0, note)
            return project
        except sqlite3.DatabaseError as e:
            if lock is not None:
                lock.release()
            raise ProjectError(
                f"The project database {root / DATABASE} is damaged or not a database: {e}"
            ) from e
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def _migrate_database(self) -> None:
        """Bring the database to DB_SCHEMA_VERSION: DB_MIGRATIONS[v] for each v from the version it has,
        in order, in one transaction with the new version (all or none are kept). Migrating a recorded
        version is logged in the audit log; recognising a database written before versions were recorded
        (0 -> 1) changes no table content and is not."""
        if self.db_version >= DB_SCHEMA_VERSION:
            return
        start = self.db_version
        try:
            with self.transaction() as db:
                start = database_version(db)  # another Project of this process may have migrated it now
                for version in range(start, DB_SCHEMA_VERSION):
                    DB_MIGRATIONS[version](db)
                db.execute(f"PRAGMA user_version={int(DB_SCHEMA_VERSION)}")
                if 0 < start < DB_SCHEMA_VERSION:
                    self.audit("migrate_database", {"from_version": start, "to_version": DB_SCHEMA_VERSION})
        except sqlite3.Error as e:
            self.db.close()
            raise ProjectError(
                f"The project database {self.root / DATABASE} could not be brought from schema {start} to "
                f"{DB_SCHEMA_VERSION} ({e}); nothing in it was changed. Check that the project folder may be "
                "written and open the project again."
            ) from e
        except BaseException:
            self.db.close()
            raise
        if start < DB_SCHEMA_VERSION:
            log.info("project database %s: schema %d -> %d", self.root / DATABASE, start, DB_SCHEMA_VERSION)
        self.db_version = DB_SCHEMA_VERSION

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.release()  # idempotent; the process's lock goes with its last share

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            self._audit_due = None
            raise
        else:
            self.db.execute("COMMIT")
            if self._audit_due is not None:
                self._write_audit_anchor(*self._audit_due)

    # -- audit log (core/store/audit.py) --------------------------------------------------------------------
    def audit(self, action: str, params: dict | None = None, hashes: dict | None = None) -> int:
        """Log a change (OS user, time, params, hashes) in the hash chain; returns the entry id.

        Inside a transaction the entry commits (or rolls back) with the change it records; the manifest's
        anchor is written after the commit, so it may lag behind the log but never runs ahead of it.
        """
        manifest = self.root / MANIFEST
        entry_id, digest = audit_log.append(
            self.db,
            current_user(),
            action,
            params,
            hashes,
            announce=lambda new_id, prev_id: audit_log.announce(manifest, new_id, prev_id),
        )
        if self.db.in_transaction:
            self._audit_due = (entry_id, digest)
        else:
            self._write_audit_anchor(entry_id, digest)
        return entry_id

    def _write_audit_anchor(self, entry_id: int, digest: str) -> None:
        self._audit_due = None
        try:
            self.manifest[audit_log.ANCHOR_KEY] = audit_log.write_anchor(
                self.root / MANIFEST, entry_id, digest
            )
        except (OSError, ValueError) as e:  # the entry is committed; verify reports the lag as a warning
            log.error("could not record audit entry %d in the manifest: %s", entry_id, e)

    def record_settings(self, name: str, settings: dict) -> int:
        """Log the method's settings saved for this project (e.g. the GUI's gui-settings.json)."""
        return self.audit(
            "settings", {"file": name, "settings": settings}, {"settings": audit_log.json_hash(settings)}
        )

    # -- manifest -----------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.manifest["image_size"]
        return int(h), int(w)

    @property
    def channels(self) -> int:
        return int(self.manifest["channels"])

    def rel(self, path: str | Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()

    def abs(self, rel: str) -> Path:
        return (self.root / rel).resolve()

    def latest_id(self, table: str) -> int | None:
        if table not in ("alignment_sets", "explanations", "models", "runs"):
            raise ValueError(table)
        row = self.db.execute(f"SELECT id FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
        return int(row["id"]) if row else None

    def has_audit_log(self) -> bool:
        """Whether the database has its audit log table (a removed one is tampering)."""
        row = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='audit_log'"
        ).fetchone()
        return row is not None

    def latest_audit_hashes(self, action: str) -> object | None:
        """The hashes (as recorded: a dict) of the newest audit entry ``action``; None when there is none."""
        row = self.db.execute(
            "SELECT hashes FROM audit_log WHERE action=? ORDER BY id DESC LIMIT 1", (action,)
        ).fetchone()
        return json.loads(row[0]) if row is not None else None

    def logged_entry(self, action: str, key: str, value: object) -> dict | None:
        """The newest audit entry ``action`` whose parameter ``key`` is ``value``, as {"id", "hashes"} (the
        hashes as recorded); None when there is none. Entries that cannot be read are passed over."""
        for entry_id, hashes in self._audit_entries(action, key, value):
            return {"id": entry_id, "hashes": hashes}
        return None

    def _audit_entries(self, action: str, key: str, value: object) -> Iterator[tuple[int, object]]:
        """(id, hashes as recorded) of each audit entry ``action`` whose parameter ``key`` is ``value``,
        newest first; entries whose JSON cannot be read are passed over."""
        rows = self.db.execute(
            "SELECT id, params, hashes FROM audit_log WHERE action=? ORDER BY id DESC", (action,)
        ).fetchall()
        for r in rows:
            try:
                params, hashes = json.loads(r["params"]), json.loads(r["hashes"])
            except (TypeError, ValueError):
                continue
            if isinstance(params, dict) and params.get(key) == value:
                yield r["id"], hashes

    def logged_hash(self, action: str, key: str, value: object, name: str) -> str | None:
        """The hash ``name`` of the newest audit entry ``action`` whose parameter ``key`` is ``value``; None
        when there is none (or no audit log): what was recorded when the thing was written."""
        try:
            for _, hashes in self._audit_entries(action, key, value):
                if isinstance(hashes, dict):
                    return hashes.get(name)
        except sqlite3.OperationalError:
            return None
        return None
