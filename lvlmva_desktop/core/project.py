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
import getpass
import hashlib
import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import audit as audit_log
from .data import ImportReport
from .errors import PlainError
from .images import mask_to_tensor, read_image, read_mask, to_tensor
from .jobs import Cancelled, TaskState, ensure_state
from .models import ModelSpec, build_model, spec_metadata

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "project.json"
DATABASE = "project.sqlite"

# Manifest migrations: MIGRATIONS[v] turns a version-v manifest into version v+1.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}

#: The database's schema version, kept in SQLite's header (PRAGMA user_version): no table holds it, so the
#: audit log's hash chain and the content check (core/integrity.py) are not touched by it. A database
#: written before versions were recorded reads 0. DB_MIGRATIONS[v] turns a version-v database into v+1
#: (see _migrate_database: all of them in one transaction, when the project is opened for writing).
DB_SCHEMA_VERSION = 1
DB_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}  # filled below _SCHEMA

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, label INTEGER NOT NULL, split TEXT NOT NULL,
    grp TEXT, mask_path TEXT, height INTEGER, width INTEGER, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS imports (
    id INTEGER PRIMARY KEY, created REAL, source TEXT, n_imported INTEGER, n_skipped INTEGER, report TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, started REAL, finished REAL,
    user TEXT, settings TEXT, results TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY, name TEXT, kind TEXT, parent_id INTEGER REFERENCES models(id),
    run_id INTEGER REFERENCES runs(id), path TEXT NOT NULL, sha256 TEXT NOT NULL, spec TEXT NOT NULL,
    info TEXT, created REAL);
CREATE TABLE IF NOT EXISTS alignment_sets (
    id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id), model_id INTEGER REFERENCES models(id),
    settings TEXT, created REAL);
CREATE TABLE IF NOT EXISTS alignment_members (
    set_id INTEGER REFERENCES alignment_sets(id), rank INTEGER, sample_id INTEGER REFERENCES samples(id),
    entropy REAL, PRIMARY KEY (set_id, rank));
CREATE TABLE IF NOT EXISTS explanations (
    id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id), model_id INTEGER REFERENCES models(id),
    set_id INTEGER REFERENCES alignment_sets(id), settings TEXT, path TEXT, sha256 TEXT, created REAL);
CREATE TABLE IF NOT EXISTS critiques (
    id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id),
    explanation_id INTEGER REFERENCES explanations(id), sample_id INTEGER REFERENCES samples(id),
    critic TEXT, text TEXT, raw TEXT, created REAL);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY, explanation_id INTEGER REFERENCES explanations(id),
    sample_id INTEGER REFERENCES samples(id), segment INTEGER, verdict TEXT NOT NULL,
    source TEXT NOT NULL, author TEXT, critique_id INTEGER REFERENCES critiques(id), created REAL,
    confidence REAL);
CREATE INDEX IF NOT EXISTS verdicts_by_expl ON verdicts(explanation_id, sample_id, segment);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id), model_id INTEGER REFERENCES models(id),
    split TEXT, name TEXT, value REAL, detail TEXT);
CREATE TABLE IF NOT EXISTS class_descriptions (
    version INTEGER PRIMARY KEY, created REAL, author TEXT, descriptions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompt_templates (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,
    text TEXT NOT NULL, created REAL, author TEXT, UNIQUE (name, version));
CREATE TABLE IF NOT EXISTS critique_cache (
    key TEXT PRIMARY KEY, critique TEXT NOT NULL, created REAL);
CREATE TABLE IF NOT EXISTS chat_messages (
    id INTEGER PRIMARY KEY, explanation_id INTEGER, sample_id INTEGER, role TEXT NOT NULL,
    text TEXT NOT NULL, model TEXT, created REAL, author TEXT);
"""


def _database_version_1(db: sqlite3.Connection) -> None:
    """0 -> 1: the tables as they were when versions began to be recorded. A database written then (or
    later, before versions were recorded) has them all, and nothing in it changes; an older one gets the
    tables and columns it lacks, as every opening added them before there were versions."""
    from .recovery import RUN_COLUMNS

    for statement in (_SCHEMA + audit_log.SCHEMA).split(";"):
        if statement.strip():  # one by one: executescript would commit the migrations' transaction
            db.execute(statement)
    migrate_verdicts(db)
    add_missing_columns(db, "runs", RUN_COLUMNS)


DB_MIGRATIONS[0] = _database_version_1


#: decoded-images files found to be (or not to be) the ones this program wrote: (path, mtime, size) -> bool
_VERIFIED_CACHES: dict[tuple[str, int, int], bool] = {}

#: where the rows each import added are kept (one JSON file per import, its sha256 in the audit log)
LEDGER_DIR = "ledger"
LEDGER_COLUMNS = ("id", "path", "label", "split", "grp", "mask_path", "height", "width", "sha256")


class ProjectError(PlainError):
    """A project cannot be created or opened; the message says why in plain words."""

    kind = "project"


def write_tensors(tensors: dict, path: Path, root: Path, metadata: dict | None = None) -> None:
    """safetensors' save_file, with a failed write (a full disk, a folder that may not be written) told
    as one ProjectError naming the file, and the half-written file removed."""
    from safetensors import SafetensorError

    try:
        save_file(tensors, str(path), metadata=metadata)
    except (SafetensorError, OSError) as e:
        with contextlib.suppress(OSError):
            path.unlink()
        why = str(e)
        if isinstance(e, OSError) and e.strerror:
            why = e.strerror
        try:
            shown = path.relative_to(root).as_posix()
        except ValueError:
            shown = str(path)
        low = why.lower()
        full = any(
            w in low for w in ("space", "too large", "os error 28", "os error 27", "errno 28", "errno 27")
        )
        hint = "Free some disk space" if full else "Check that the project folder may be written"
        raise ProjectError(
            f"Could not write {shown} in the project folder {root} ({why}). {hint} and run the step again; "
            "nothing of the step was kept."
        ) from None


def read_project_image(path: Path, sample_id: int, reader):
    """``reader(path)`` (read_image or read_mask), with a file that cannot be read told as one
    ProjectError naming the image and the file (and what to do when the project or its images moved)."""
    from .images import ImageLoadError

    try:
        return reader(path)
    except ImageLoadError as e:
        hint = ""
        if e.reason == "missing":
            hint = (
                " The project refers to its images where they were imported from; if the images or the "
                "project folder were moved, move them back, or import the images again."
            )
        raise ProjectError(f"Image {sample_id} cannot be read: {path}: {e.detail}.{hint}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some sandboxes
        return "unknown"


@dataclass
class SplitData:
    """Decoded images of one split, ready for a model: rows align across all fields."""

    sample_ids: list[int]
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64
    groups: list[str | None]
    masks: torch.Tensor  # (N, H, W) bool ground-truth artefact masks (all False where unknown / none)
    has_mask: torch.Tensor  # (N,) bool


class Project:
    """An open project folder. Use ``Project.create`` or ``Project.open``; close (or use ``with``)."""

    def __init__(
        self,
        root: Path,
        manifest: dict,
        read_only: bool = False,
        lock: object = None,
        read_only_reason: str = "asked",
    ) -> None:
        """``lock``: this object's share of the process's writer lock (core/lock.py), None if read-only.
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
            from . import recovery

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
        from .lock import acquire

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
            _atomic_write_json(root / MANIFEST, manifest)
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
        from .lock import acquire

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
                    _atomic_write_json(mpath, manifest)
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

    # -- audit log (core/audit.py) --------------------------------------------------------------------
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

    # -- data -----------------------------------------------------------------------------------------
    def add_samples(self, report: ImportReport) -> int:
        """Add the good rows of an import report; unknown classes are refused by the report's importer."""
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({s.label for s in report.samples} - set(index))
        if unknown:
            raise ProjectError(f"Labels {unknown} are not classes of this project ({self.classes}).")
        added = 0
        ledger: list[list] = []  # every row this import added, as written (core/integrity.py reads it)
        with self.transaction() as db:
            for s in report.samples:
                row = (
                    self.rel(s.path),
                    index[s.label],
                    s.split,
                    s.group,
                    self.rel(s.mask_path) if s.mask_path else None,
                    s.height,
                    s.width,
                    s.sha256,
                )
                cur = db.execute(
                    "INSERT OR IGNORE INTO samples (path, label, split, grp, mask_path, height, width, sha256) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    row,
                )
                if cur.rowcount:
                    ledger.append([int(cur.lastrowid), *row])
                added += cur.rowcount
            cur = db.execute(
                "INSERT INTO imports (created, source, n_imported, n_skipped, report) VALUES (?,?,?,?,?)",
                (time.time(), report.source, added, len(report.skipped), json.dumps(report.to_dict())),
            )
            path = self.root / LEDGER_DIR / f"import-{int(cur.lastrowid):04d}.json"
            path.parent.mkdir(exist_ok=True)
            _atomic_write_json(path, {"columns": list(LEDGER_COLUMNS), "rows": ledger})
            self.audit(
                "import",
                {
                    "source": str(report.source),
                    "imported": added,
                    "skipped": len(report.skipped),
                    "ledger": self.rel(path),
                },
                {"data": self.data_hash(), "ledger": sha256_file(path)},
            )
        return added

    def samples(self, split: str | None = None) -> list[sqlite3.Row]:
        if split is None:
            return self.db.execute("SELECT * FROM samples ORDER BY id").fetchall()
        return self.db.execute("SELECT * FROM samples WHERE split=? ORDER BY id", (split,)).fetchall()

    def data_hash(self) -> str:
        """Hash of the data manifest (paths, labels, splits, groups, masks, content hashes)."""
        h = hashlib.sha256()
        for r in self.samples():
            h.update(
                json.dumps(
                    [r["path"], r["label"], r["split"], r["grp"], r["mask_path"], r["sha256"]]
                ).encode()
            )
        return h.hexdigest()

    def _split_cache(self, split: str, rows: list[sqlite3.Row]) -> Path:
        """Where ``load_split`` keeps the decoded split (its name changes with any change of the data)."""
        key = hashlib.sha256(
            json.dumps(
                [self.image_size, self.channels, [(r["id"], r["sha256"], r["mask_path"]) for r in rows]]
            ).encode()
        ).hexdigest()[:16]
        return self.root / "cache" / f"data-{split}-{key}.safetensors"

    def cached_images(self, split: str, positions: list[int]) -> torch.Tensor | None:
        """Images at ``positions`` (rows of ``samples(split)``) read from the decoded split's cache, without
        loading the rest of it; None when the split has not been decoded (or its cache cannot be read)."""
        from safetensors import safe_open

        cache = self._split_cache(split, self.samples(split))
        if not cache.is_file() or not self.cache_verified(cache):
            return None
        try:
            with safe_open(str(cache), framework="pt") as f:
                x = f.get_slice("x")
                return torch.cat([x[i : i + 1] for i in positions]) if positions else None
        except Exception as e:  # noqa: BLE001 - a damaged cache (SafetensorError too): decode them instead
            log.warning("could not read the decoded %s images (%s); decoding them", split, e)
            return None

    def check_data(self) -> None:
        """Refuse images and labels that are not those imported: the data hash of the samples table against
        the one the audit log recorded at the latest import (one edited label, path or split changes it)."""
        logged = self._latest_import_hash()
        if logged is not None and logged != self.data_hash():
            raise ProjectError(
                "The project's list of images (their labels, splits, groups, masks or content hashes) is not "
                "the one recorded in the audit log at the latest import: it was changed afterwards. Refusing "
                "to use it; `lvlmva audit PROJ --verify` names the changed images."
            )

    def _latest_import_hash(self) -> str | None:
        try:
            row = self.db.execute(
                "SELECT hashes FROM audit_log WHERE action='import' ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:
            return None
        try:
            return json.loads(row["hashes"]).get("data") if row is not None else None
        except (TypeError, ValueError, AttributeError):
            return "unreadable"

    def cache_verified(self, cache: Path) -> bool:
        """Whether a decoded-images file is the one this program wrote (its sha256 as the audit log
        recorded it); remembered per file state, so it is hashed once."""
        try:
            st = cache.stat()
        except OSError:
            return False
        key = (str(cache), st.st_mtime_ns, st.st_size)
        if key not in _VERIFIED_CACHES:
            logged = self.logged_hash("decoded_images", "file", self.rel(cache), "cache")
            _VERIFIED_CACHES[key] = logged is not None and logged == sha256_file(cache)
        return _VERIFIED_CACHES[key]

    def decode_sample(self, row) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One samples-table row at the project's image size and channels: the image (C, H, W) and its
        artefact mask (H, W), None without one; a file that cannot be read is one ProjectError."""
        h, w = self.image_size
        x = to_tensor(read_project_image(self.abs(row["path"]), row["id"], read_image), (h, w), self.channels)
        if not row["mask_path"]:
            return x, None
        return x, mask_to_tensor(read_project_image(self.abs(row["mask_path"]), row["id"], read_mask), (h, w))

    def load_split(self, split: str, state: TaskState | None = None) -> SplitData:
        """Decode a split at the project's image size and channels, cached as safetensors.

        Checked first: the image list against the audit log (``check_data``), a cached decoding against the
        hash logged when it was written (an unrecorded or changed one is decoded again), and while decoding
        every image file against its content hash from the import."""
        state = ensure_state(state)
        self.check_data()
        rows = self.samples(split)
        cache = self._split_cache(split, rows)
        ids = [r["id"] for r in rows]
        groups = [r["grp"] for r in rows]
        y = torch.tensor([r["label"] for r in rows], dtype=torch.int64)
        if cache.is_file():
            if self.cache_verified(cache):
                t = load_file(str(cache))
                return SplitData(ids, t["x"], y, groups, t["masks"], t["has_mask"])
            log.warning("%s is not the decoding this program recorded; decoding the images again", cache.name)
        h, w = self.image_size
        x = torch.zeros(len(rows), self.channels, h, w)
        masks = torch.zeros(len(rows), h, w, dtype=torch.bool)
        has_mask = torch.zeros(len(rows), dtype=torch.bool)
        changed: list[str] = []
        from .images import file_sha256

        for i, r in enumerate(rows):
            state.check()
            x[i], mask = self.decode_sample(r)
            if file_sha256(self.abs(r["path"])) != r["sha256"]:
                changed.append(f"{r['id']} ({r['path']})")
            if mask is not None:
                masks[i], has_mask[i] = mask, True
            if i % 64 == 0:
                state.progress(i, len(rows), f"decoding {split} images")
        if changed:
            raise ProjectError(
                f"{len(changed)} {split} image file(s) changed after they were imported (their content is not "
                f"the one recorded), e.g. {', '.join(changed[:5])}. Refusing to use them: restore the files, "
                "or import the changed images as new ones."
            )
        state.progress(1.0, None, f"decoded {len(rows)} {split} images")
        if self.read_only and self.read_only_reason != "held":
            # an archive (or a project opened --read-only) is left exactly as it is
            log.info("read-only project: the decoded %s images are not cached", split)
            return SplitData(ids, x, y, groups, masks, has_mask)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # a reader beside the writer may cache the decoding
        try:
            cache.parent.mkdir(exist_ok=True)  # cache/ may have been emptied, or deleted whole (docs say so)
            write_tensors({"x": x, "masks": masks, "has_mask": has_mask}, tmp, self.root)
            os.replace(tmp, cache)
            if not self.read_only:  # a reader cannot log: the writer decodes again rather than trust it
                self.audit(
                    "decoded_images",
                    {"split": split, "file": self.rel(cache), "n": len(rows)},
                    {"cache": sha256_file(cache)},
                )
        except (OSError, ProjectError):
            if not self.read_only:
                raise
            log.info("read-only project: the decoded %s images are not cached", split)
        return SplitData(ids, x, y, groups, masks, has_mask)

    # -- class descriptions -------------------------------------------------------------------------
    def set_class_descriptions(self, descriptions: dict[str, str]) -> int:
        missing = [c for c in self.classes if not descriptions.get(c, "").strip()]
        if missing:
            raise ProjectError(f"Every class needs a description; missing for: {', '.join(missing)}.")
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO class_descriptions (created, author, descriptions) VALUES (?,?,?)",
                (time.time(), current_user(), json.dumps({c: descriptions[c] for c in self.classes})),
            )
            self.audit(
                "class_descriptions",
                {"version": int(cur.lastrowid), "classes": self.classes},
                {c: audit_log.text_hash(descriptions[c]) for c in self.classes},
            )
        return int(cur.lastrowid)

    def class_descriptions(self) -> tuple[int | None, dict[str, str]]:
        row = self.db.execute("SELECT * FROM class_descriptions ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return None, {c: "" for c in self.classes}
        return int(row["version"]), json.loads(row["descriptions"])

    def class_descriptions_history(self) -> list[dict]:
        """Every saved version, oldest first: {version, created, author, descriptions}."""
        rows = self.db.execute("SELECT * FROM class_descriptions ORDER BY version").fetchall()
        return [
            {
                "version": int(r["version"]),
                "created": r["created"],
                "author": r["author"],
                "descriptions": json.loads(r["descriptions"]),
            }
            for r in rows
        ]

    # -- prompt templates (the project's own versioned copy) ------------------------------------------
    def prompt_templates(self) -> dict[str, dict]:
        """The latest version of each template this project has: name -> {text, version, sha256}."""
        rows = self.db.execute(
            "SELECT t.* FROM prompt_templates t JOIN (SELECT name, MAX(version) v FROM prompt_templates "
            "GROUP BY name) m ON t.name = m.name AND t.version = m.v"
        ).fetchall()
        return {r["name"]: {"text": r["text"], "version": r["version"], "sha256": r["sha256"]} for r in rows}

    def save_prompt_template(self, name: str, text: str) -> int:
        """Store a new version of a template (unchanged text keeps the current version); returns it."""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self.transaction() as db:
            row = db.execute(
                "SELECT version, sha256 FROM prompt_templates WHERE name=? ORDER BY version DESC LIMIT 1",
                (name,),
            ).fetchone()
            if row is not None and row["sha256"] == digest:
                return int(row["version"])
            version = 1 if row is None else int(row["version"]) + 1
            db.execute(
                "INSERT INTO prompt_templates (name, version, sha256, text, created, author) "
                "VALUES (?,?,?,?,?,?)",
                (name, version, digest, text, time.time(), current_user()),
            )
            self.audit("prompt_template", {"name": name, "version": version}, {"template": digest})
        return version

    def prompt_template_history(self, name: str) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM prompt_templates WHERE name=? ORDER BY version", (name,)
        ).fetchall()

    # -- critique cache and chat transcripts ----------------------------------------------------------
    def cache_get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT critique FROM critique_cache WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row["critique"])

    def cache_put(self, key: str, value: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO critique_cache (key, critique, created) VALUES (?,?,?)",
            (key, json.dumps(value), time.time()),
        )

    def add_chat_message(
        self, expl_id: int | None, sample_id: int | None, role: str, text: str, model: str = ""
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO chat_messages (explanation_id, sample_id, role, text, model, created, author) "
                "VALUES (?,?,?,?,?,?,?)",
                (expl_id, sample_id, role, text, model, time.time(), current_user()),
            )
            params = {"explanation_id": expl_id, "sample_id": sample_id, "role": role, "model": model}
            self.audit("chat", params, {"text": audit_log.text_hash(text)})
        return int(cur.lastrowid)

    def chat_messages(self, expl_id: int | None, sample_id: int | None) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM chat_messages WHERE explanation_id IS ? AND sample_id IS ? ORDER BY id",
            (expl_id, sample_id),
        ).fetchall()

    # -- runs -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, kind: str, settings: dict) -> Iterator[RunHandle]:
        """Record a run: 'running' now, then finished / cancelled / failed with the error text.

        The row names the writing process (pid, host, a per-process token), so a later open can tell a
        run whose process died (marked 'interrupted', core/recovery.py) from one still going.
        """
        from .lock import writer_identity

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
            from .secrets import scrub

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
        """The next run started inside records ``resumes: run_id`` in its settings (core/recovery.py)."""
        self._resumes = run_id
        try:
            yield
        finally:
            self._resumes = None

    def get_run(self, run_id: int) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No run {run_id} in this project.")
        return row

    def latest_finished_run(self, kind: str) -> sqlite3.Row | None:
        """The newest run of ``kind`` that finished (None: there is none)."""
        return self.db.execute(
            "SELECT * FROM runs WHERE kind=? AND status='finished' ORDER BY id DESC LIMIT 1", (kind,)
        ).fetchone()

    # -- model versions -------------------------------------------------------------------------------
    def save_model(
        self,
        module: torch.nn.Module,
        spec: ModelSpec,
        name: str,
        kind: str,
        parent_id: int | None,
        run_id: int | None,
        info: dict | None = None,
    ) -> int:
        """Store a new immutable model version (safetensors, read-only file, sha256 in the database)."""
        info = info or {}
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO models (name, kind, parent_id, run_id, path, sha256, spec, info, created) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    kind,
                    parent_id,
                    run_id,
                    "",
                    "",
                    json.dumps(spec.to_dict()),
                    json.dumps(info),
                    time.time(),
                ),
            )
            model_id = int(cur.lastrowid)
            path = self.root / "models" / f"model-{model_id:04d}-{kind}.safetensors"
            tmp = path.with_suffix(".tmp")
            write_tensors(tensors, tmp, self.root, spec_metadata(spec, {"name": name, "kind": kind}))
            os.replace(tmp, path)
            os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            digest = sha256_file(path)
            db.execute("UPDATE models SET path=?, sha256=? WHERE id=?", (self.rel(path), digest, model_id))
            params = {
                "model_id": model_id,
                "name": name,
                "kind": kind,
                "parent_id": parent_id,
                "run_id": run_id,
            }
            self.audit("model_version", params, {"model": digest})
        return model_id

    def model_row(self, model_id: int) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM models WHERE id=?", (model_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No model version {model_id} in this project.")
        return row

    def models(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM models ORDER BY id").fetchall()

    def original_of(self, model_id: int) -> int:
        """The model a version was derived from, followed back to the first one (itself if it has no
        parent): the ERM or imported model that an aligned version is compared with."""
        seen = set()
        current = int(model_id)
        while current not in seen:
            seen.add(current)
            parent = self.model_row(current)["parent_id"]
            if parent is None:
                return current
            current = int(parent)
        return current

    def latest_model(self, kind: str | None = None) -> int | None:
        q = "SELECT id FROM models" + (" WHERE kind=?" if kind else "") + " ORDER BY id DESC LIMIT 1"
        row = self.db.execute(q, (kind,) if kind else ()).fetchone()
        return int(row["id"]) if row else None

    def load_model(self, model_id: int) -> tuple[torch.nn.Module, ModelSpec]:
        """Rebuild a model version, refusing a file whose sha256 differs from the one recorded in the table
        and in the audit log when the version was made (a file replaced together with its table row)."""
        row = self.model_row(model_id)
        path = self.abs(row["path"])
        if not path.is_file():
            raise ProjectError(f"The file of model version {model_id} is missing: {path}")
        digest = sha256_file(path)
        if digest != row["sha256"]:
            raise ProjectError(
                f"Model version {model_id} was modified on disk (sha256 mismatch); refusing to use it."
            )
        logged = self.logged_hash("model_version", "model_id", int(model_id), "model")
        if logged is not None and logged != digest:
            raise ProjectError(
                f"Model version {model_id} is not the one recorded in the audit log when it was made (its file "
                "and its sha256 in the models table were both changed); refusing to use it. `lvlmva audit "
                "PROJ --verify` lists what changed."
            )
        spec = ModelSpec.from_dict(json.loads(row["spec"]))
        module = build_model(spec)
        module.load_state_dict(load_file(str(path)))
        return module.eval(), spec

    # -- alignment sets, explanations -----------------------------------------------------------------
    def save_alignment_set(
        self, run_id: int, model_id: int, settings: dict, sample_ids: list[int], entropies: list[float]
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO alignment_sets (run_id, model_id, settings, created) VALUES (?,?,?,?)",
                (run_id, model_id, json.dumps(settings), time.time()),
            )
            set_id = int(cur.lastrowid)
            db.executemany(
                "INSERT INTO alignment_members (set_id, rank, sample_id, entropy) VALUES (?,?,?,?)",
                [(set_id, i, s, e) for i, (s, e) in enumerate(zip(sample_ids, entropies))],
            )
            params = {"set_id": set_id, "run_id": run_id, "model_id": model_id, "n": len(sample_ids)}
            self.audit("alignment_set", params, {"members": audit_log.json_hash(list(sample_ids))})
        return set_id

    def alignment_members(self, set_id: int) -> list[sqlite3.Row]:
        rows = self.db.execute(
            "SELECT * FROM alignment_members WHERE set_id=? ORDER BY rank", (set_id,)
        ).fetchall()
        if not rows:
            raise ProjectError(f"No alignment set {set_id} in this project.")
        return rows

    def latest_id(self, table: str) -> int | None:
        if table not in ("alignment_sets", "explanations", "models", "runs"):
            raise ValueError(table)
        row = self.db.execute(f"SELECT id FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
        return int(row["id"]) if row else None

    def save_explanation(
        self, run_id: int, model_id: int, set_id: int, settings: dict, tensors: dict[str, torch.Tensor]
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO explanations (run_id, model_id, set_id, settings, path, sha256, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (run_id, model_id, set_id, json.dumps(settings), "", "", time.time()),
            )
            expl_id = int(cur.lastrowid)
            path = self.root / "artifacts" / f"explanation-{expl_id:04d}.safetensors"
            tmp = path.with_suffix(".tmp")
            write_tensors({k: v.contiguous() for k, v in tensors.items()}, tmp, self.root)
            os.replace(tmp, path)
            digest = sha256_file(path)
            db.execute(
                "UPDATE explanations SET path=?, sha256=? WHERE id=?", (self.rel(path), digest, expl_id)
            )
            params = {"explanation_id": expl_id, "run_id": run_id, "model_id": model_id, "set_id": set_id}
            self.audit("explanation", params, {"explanation": digest})
        return expl_id

    def explanation_row(self, expl_id: int) -> sqlite3.Row:
        """The explanation's row (settings, the attribution method used) without reading its tensors."""
        row = self.db.execute("SELECT * FROM explanations WHERE id=?", (expl_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No explanation {expl_id} in this project.")
        return row

    def explanation(self, expl_id: int) -> tuple[sqlite3.Row, dict[str, torch.Tensor]]:
        row = self.db.execute("SELECT * FROM explanations WHERE id=?", (expl_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No explanation {expl_id} in this project.")
        path = self.abs(row["path"])
        if not path.is_file():
            raise ProjectError(f"The file of explanation {expl_id} is missing: {path}")
        digest = sha256_file(path)
        logged = self.logged_hash("explanation", "explanation_id", int(expl_id), "explanation")
        if digest != row["sha256"] or (logged is not None and logged != digest):
            raise ProjectError(
                f"The file of explanation {expl_id} ({row['path']}) is not the one written when it was made "
                "(its sha256 differs from the one recorded); refusing to use it. `lvlmva audit PROJ --verify` "
                "lists what changed."
            )
        return row, load_file(str(path))

    def logged_hash(self, action: str, key: str, value: object, name: str) -> str | None:
        """The hash ``name`` of the newest audit entry ``action`` whose parameter ``key`` is ``value``; None
        when there is none (or no audit log): what was recorded when the thing was written."""
        try:
            rows = self.db.execute(
                "SELECT params, hashes FROM audit_log WHERE action=? ORDER BY id DESC", (action,)
            ).fetchall()
        except sqlite3.OperationalError:
            return None
        for r in rows:
            try:
                params, hashes = json.loads(r["params"]), json.loads(r["hashes"])
            except (TypeError, ValueError):
                continue
            if isinstance(params, dict) and params.get(key) == value and isinstance(hashes, dict):
                return hashes.get(name)
        return None

    # -- critiques and verdicts -------------------------------------------------------------------------
    def save_critique(self, run_id: int | None, expl_id: int, critique: object) -> int:
        """Store a critic's text and its verdicts (source 'critic'); an expert's later word overrides them."""
        from .critic import Critique

        assert isinstance(critique, Critique)
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO critiques (run_id, explanation_id, sample_id, critic, text, raw, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    run_id,
                    expl_id,
                    critique.sample_id,
                    critique.critic,
                    critique.text,
                    json.dumps(critique.raw),
                    now,
                ),
            )
            cid = int(cur.lastrowid)
            db.executemany(
                "INSERT INTO verdicts (explanation_id, sample_id, segment, verdict, source, author, critique_id, "
                "created, confidence) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        expl_id,
                        critique.sample_id,
                        v.segment,
                        v.verdict,
                        "critic",
                        critique.critic,
                        cid,
                        now,
                        _confidence(getattr(v, "confidence", None)),
                    )
                    for v in critique.verdicts
                ],
            )
            # each image's critique is chained as it is stored, so a run that stops half-way (cancelled,
            # failed, killed) leaves no unhashed verdicts behind; the run's own entry hashes them together.
            # The verdicts' confidences only order the expert's review (core/review.py), never a mask: the
            # entry hashes what it always hashed, so logs written before they existed still verify.
            self.audit(
                "critique_image",
                {
                    "run": run_id,
                    "explanation": expl_id,
                    "sample": critique.sample_id,
                    "critic": critique.critic,
                },
                {
                    "text": audit_log.text_hash(critique.text),
                    "verdicts": audit_log.json_hash([[v.segment, v.verdict] for v in critique.verdicts]),
                },
            )
        return cid

    def set_expert_verdict(self, expl_id: int, sample_id: int, segment: int, verdict: str) -> None:
        from .critic import VERDICTS

        if verdict not in VERDICTS:
            raise ProjectError(f"Unknown verdict '{verdict}'; use one of {', '.join(VERDICTS)}.")
        _, t = self.explanation(expl_id)
        if "sample_ids" in t and sample_id not in t["sample_ids"].tolist():
            raise ProjectError(f"Image {sample_id} is not in the alignment set of explanation {expl_id}.")
        if "evidence" in t and not 0 <= segment < t["evidence"].shape[1]:
            raise ProjectError(
                f"Segment {segment + 1} does not exist; segments are numbered 1 to {t['evidence'].shape[1]}."
            )
        with self.transaction() as db:
            old = self._effective_verdict(expl_id, sample_id, segment)
            db.execute(
                "INSERT INTO verdicts (explanation_id, sample_id, segment, verdict, source, author, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (expl_id, sample_id, segment, verdict, "expert", current_user(), time.time()),
            )
            self.audit("verdict_set", _verdict_params(expl_id, sample_id, segment, old, verdict, "expert"))

    def clear_expert_verdict(self, expl_id: int, sample_id: int, segment: int) -> int:
        """Take back the expert's word on one segment, so the critic's verdict (if any) applies again.

        Removes the expert's rows for that segment (the critic's rows are never touched); returns how many.
        """
        with self.transaction() as db:
            old = self._effective_verdict(expl_id, sample_id, segment)
            cur = db.execute(
                "DELETE FROM verdicts WHERE explanation_id=? AND sample_id=? AND segment=? AND source='expert'",
                (expl_id, sample_id, segment),
            )
            if cur.rowcount:
                now = self._effective_verdict(expl_id, sample_id, segment)
                params = _verdict_params(
                    expl_id, sample_id, segment, old, now and now["verdict"], now and now["source"]
                )
                self.audit("verdict_cleared", params)
        return int(cur.rowcount)

    def _effective_verdict(self, expl_id: int, sample_id: int, segment: int) -> sqlite3.Row | None:
        """One segment's effective verdict (as effective_verdicts), for the audit log's old/new."""
        return self.db.execute(
            "SELECT verdict, source FROM verdicts WHERE explanation_id=? AND sample_id=? AND segment=? "
            "ORDER BY source='expert' DESC, id DESC LIMIT 1",
            (expl_id, sample_id, segment),
        ).fetchone()

    def effective_verdicts(self, expl_id: int) -> dict[int, dict[int, dict]]:
        """Per sample and segment: the latest expert verdict if any, else the latest critic verdict; each
        with its source and author, and "confidence" where the critic gave one (its probability of the
        verdict; the key is left out where there is none, so read it with ``.get("confidence")``: the
        simulated critic, the expert's verdicts, a project opened read-only from before confidences)."""
        out: dict[int, dict[int, dict]] = {}
        rows = self.db.execute(
            "SELECT * FROM verdicts WHERE explanation_id=? ORDER BY id", (expl_id,)
        ).fetchall()
        has_conf = bool(rows) and "confidence" in rows[0].keys()
        for r in rows:
            cur = out.setdefault(r["sample_id"], {}).get(r["segment"])
            if cur is not None and cur["source"] == "expert" and r["source"] != "expert":
                continue
            d = {"verdict": r["verdict"], "source": r["source"], "author": r["author"]}
            if has_conf and r["confidence"] is not None:
                d["confidence"] = r["confidence"]
            out[r["sample_id"]][r["segment"]] = d
        return out

    def expert_verdicts(self, expl_id: int) -> dict[int, dict[int, str]]:
        out: dict[int, dict[int, str]] = {}
        for r in self.db.execute(
            "SELECT * FROM verdicts WHERE explanation_id=? AND source='expert' ORDER BY id", (expl_id,)
        ):
            out.setdefault(r["sample_id"], {})[r["segment"]] = r["verdict"]
        return out

    def critiques(self, expl_id: int) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM critiques WHERE explanation_id=? ORDER BY id", (expl_id,)
        ).fetchall()

    # -- metrics --------------------------------------------------------------------------------------
    def save_metrics(
        self,
        run_id: int,
        model_id: int,
        split: str,
        values: dict[str, float | None],
        detail: dict | None = None,
    ) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO metrics (run_id, model_id, split, name, value, detail) VALUES (?,?,?,?,?,?)",
                [
                    (run_id, model_id, split, k, v, json.dumps(detail) if detail else None)
                    for k, v in values.items()
                ],
            )
            params = {"run_id": run_id, "model_id": model_id, "split": split, "values": values}
            self.audit("metrics", params, {"detail": audit_log.json_hash(detail)})


#: why a project is open read-only, in the words a refused write uses
READ_ONLY_REASONS = {
    "held": (
        "This project is open read-only, so nothing can be changed here. Close the other LVLM-VA window or "
        "command that has it open, then open the project again to make changes."
    ),
    "folder": (
        "This project's folder cannot be written (a read-only copy or mount), so nothing can be changed "
        "here. Copy the project to a folder you may write to make changes."
    ),
    "asked": (
        "This project was opened read-only (--read-only), so nothing can be changed here. Open it for "
        "writing to make changes."
    ),
}


def folder_writable(root: Path) -> bool:
    """Whether the project folder can be written: not on a read-only mount, and writable for this user."""
    try:
        if hasattr(os, "statvfs") and os.statvfs(root).f_flag & getattr(os, "ST_RDONLY", 1):
            return False
    except OSError:
        pass
    return os.access(root, os.W_OK) and (
        not (root / DATABASE).exists() or os.access(root / DATABASE, os.W_OK)
    )


class _ReadOnlyConnection(sqlite3.Connection):
    """A read-only project's connection: SQLite's "readonly database" refusal becomes a ProjectError that
    says why the project is read-only (``refusal``)."""

    refusal = READ_ONLY_REASONS["asked"]

    def _told(self, call, *args):  # noqa: ANN001, ANN202
        try:
            return call(*args)
        except sqlite3.OperationalError as e:
            if "readonly" in str(e) or "read-only" in str(e):
                raise ProjectError(self.refusal) from e
            raise

    def execute(self, *args):  # noqa: ANN002, ANN201
        return self._told(super().execute, *args)

    def executemany(self, *args):  # noqa: ANN002, ANN201
        return self._told(super().executemany, *args)

    def executescript(self, *args):  # noqa: ANN002, ANN201
        return self._told(super().executescript, *args)


class RunHandle:
    """A running run; set ``results`` (a dict) to have them stored when the run ends."""

    def __init__(self, project: Project, run_id: int) -> None:
        self.project = project
        self.id = run_id
        self.results: dict = {}


def _verdict_params(
    expl_id: int,
    sample_id: int,
    segment: int,
    old: sqlite3.Row | None,
    new: str | None,
    new_source: str | None,
) -> dict:
    """An expert's change of one segment's verdict, as logged (segments numbered from 1, as shown)."""
    return {
        "explanation_id": expl_id,
        "sample_id": sample_id,
        "segment": segment + 1,
        "old": old["verdict"] if old else None,
        "old_source": old["source"] if old else None,
        "new": new,
        "new_source": new_source,
    }


#: columns added to the verdicts table after projects were first made: (name, declaration)
VERDICT_COLUMNS = (("confidence", "REAL"),)


def add_missing_columns(db: sqlite3.Connection, table: str, columns: tuple[tuple[str, str], ...]) -> None:
    """Schema migration: add to ``table`` the (name, declaration) columns a project made before them lacks."""
    have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    for name, decl in columns:
        if name not in have:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            except sqlite3.OperationalError as e:  # another thread of this process added it just now
                if "duplicate column" not in str(e):
                    raise


def migrate_verdicts(db: sqlite3.Connection) -> None:
    """Add the verdict columns a project made before them lacks."""
    add_missing_columns(db, "verdicts", VERDICT_COLUMNS)


def _confidence(value: object) -> float | None:
    """A verdict's confidence as stored: a probability in (0, 1], else None (never a made-up number)."""
    if value is None:
        return None
    p = float(value)  # type: ignore[arg-type]
    if not 0.0 < p <= 1.0:
        raise ProjectError(f"A verdict's confidence must be a probability in (0, 1], not {p}.")
    return p


def _check_database_file(path: Path) -> None:
    """Refuse a database SQLite would silently replace by a new, empty one: missing, emptied, or too short
    for its 100-byte header (a damaged file with another beginning SQLite refuses by itself)."""
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size if path.is_file() else -1
    if size == 0 and wal.is_file() and wal.stat().st_size > 0:
        return  # everything still in the write-ahead log
    if size < 0 or size == 0:
        state = "missing" if size < 0 else "empty (0 bytes)"
        raise ProjectError(
            f"The project database {path} is {state}: what the project recorded is not there. Restore it "
            "from a backup."
        )
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise ProjectError(
            f"The project database {path} is damaged or not a database: it does not start with a SQLite "
            "header."
        )


def database_version(db: sqlite3.Connection) -> int:
    """The schema version recorded in a project database (0: written before versions were recorded)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _check_integrity(db: sqlite3.Connection) -> None:
    """SQLite's structural check (b-trees, page links, a truncated file) before anything is written; a
    damaged database raises sqlite3.DatabaseError, which Project.open reports as a ProjectError."""
    factory, db.text_factory = db.text_factory, lambda b: b.decode("utf-8", "replace")  # damaged names
    try:
        problems = [r[0] for r in db.execute("PRAGMA quick_check(3)").fetchall()]
        # a table definition whose text is no longer UTF-8 passes the structural check, and then every
        # query naming its columns fails to decode them (a UnicodeDecodeError, not a DatabaseError)
        db.text_factory = bytes
        for row in db.execute("SELECT name, sql FROM sqlite_master"):
            for value in row:
                if value is not None:
                    value.decode("utf-8")
    except UnicodeDecodeError:  # SQLite's own message quotes a damaged schema that is no longer text
        raise sqlite3.DatabaseError("its table definitions are damaged (not text)") from None
    finally:
        db.text_factory = factory
    if problems != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(str(p) for p in problems)[:300])


def _atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
