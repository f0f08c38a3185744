"""The project database: its tables, schema version and migrations, the checks made before it is
opened, and the read-only connection that says why a write is refused."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from lvlmva_desktop.core.store import audit as audit_log
from lvlmva_desktop.core.store.files import DATABASE, ProjectError

#: The database's schema version, kept in SQLite's header (PRAGMA user_version): no table holds it, so the
#: audit log's hash chain and the content check (core/store/integrity.py) are not touched by it. A database
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
    from lvlmva_desktop.core.store.recovery import RUN_COLUMNS

    for statement in (_SCHEMA + audit_log.SCHEMA).split(";"):
        if statement.strip():  # one by one: executescript would commit the migrations' transaction
            db.execute(statement)
    migrate_verdicts(db)
    add_missing_columns(db, "runs", RUN_COLUMNS)


DB_MIGRATIONS[0] = _database_version_1


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
