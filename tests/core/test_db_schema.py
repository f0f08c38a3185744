"""The project database's schema version (SQLite's user_version) and its migrations.

A project written before versions were recorded (tests/fixtures/main-project.zip, made by the program at
d36aa26) opens as version 1 with no table content changed, verifies and resumes; a chain of migrations
runs in order, in one transaction, and is recorded; a database newer than this program is refused in
words (the command line too); a read-only opening writes nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
import zipfile
from pathlib import Path

import pytest

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.store import audit as audit_log
from lvlmva_desktop.core.store import project as project_mod
from lvlmva_desktop.core.store.integrity import verify_content
from lvlmva_desktop.core.store.project import Project, ProjectError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "main-project.zip"


def _unpack(tmp_path: Path) -> Path:
    with zipfile.ZipFile(FIXTURE) as z:
        z.extractall(tmp_path)
    return tmp_path / "main-project"


def _raw(root: Path) -> sqlite3.Connection:
    """The database as SQLite sees it, read-only, without the program."""
    return sqlite3.connect(f"{(root / 'project.sqlite').resolve().as_uri()}?mode=ro", uri=True)


def _user_version(root: Path) -> int:
    con = _raw(root)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def _set_user_version(root: Path, version: int) -> None:
    con = sqlite3.connect(root / "project.sqlite")
    try:
        con.execute(f"PRAGMA user_version={version}")
    finally:
        con.close()


def _tables(root: Path) -> dict[str, list[tuple]]:
    """Every table's definition and rows."""
    con = _raw(root)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        out = {
            "sqlite_master": con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        }
        for name in names:
            out[name] = con.execute(f"SELECT * FROM {name} ORDER BY rowid").fetchall()
        return out
    finally:
        con.close()


def _fingerprint(root: Path) -> dict[str, str]:
    """Every file's content (a reader's empty -wal and its -shm left out)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name != "project.lock"
        and not (p.name.endswith(("-shm", "-wal")) and p.stat().st_size in (0, 32768))
    }


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A new, empty project (closed)."""
    root = tmp_path / "tiny"
    Project.create(root, "t", ["a", "b"], (8, 8), 1).close()
    return root


def test_a_new_project_records_the_current_version(tiny):
    assert _user_version(tiny) == project_mod.DB_SCHEMA_VERSION == 1
    with Project.open(tiny) as p:
        assert p.db_version == 1
        assert [e["action"] for e in audit_log.entries(p.db)] == ["create_project"]  # no migration logged


def test_a_project_written_before_versions_opens_verifies_and_resumes(tmp_path, capsys):
    root = _unpack(tmp_path)
    assert _user_version(root) == 0  # as written by the program at d36aa26
    before = _tables(root)
    assert [r[2] for r in before["runs"]] == [
        "finished",
        "finished",
        "finished",
        "running",
    ]  # killed critique

    with Project.open(root) as p:
        assert p.db_version == 1
        assert audit_log.verify_project(p).ok
    assert _user_version(root) == 1
    after = _tables(root)
    # recognised as version 1 without changing a table: only the crash recovery's own writes differ (the
    # killed critique marked interrupted, and its log entry appended to the unchanged chain)
    assert set(after) == set(before)
    for name in before:
        if name not in ("runs", "audit_log"):
            assert after[name] == before[name], name
    assert after["runs"][:3] == before["runs"][:3]
    assert after["runs"][3][2] == "interrupted" and after["runs"][3][:2] == before["runs"][3][:2]
    assert after["audit_log"][: len(before["audit_log"])] == before["audit_log"]
    new_actions = [r[3] for r in after["audit_log"][len(before["audit_log"]) :]]
    assert new_actions == ["run_end"]

    assert main(["audit", str(root), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "audit log intact" in out
    with Project.open(root) as p:
        assert verify_content(p).ok

    assert main(["resume", str(root), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Resumed run 4 as run 5" in out and "8 more images critiqued" in out

    with Project.open(root) as p:  # a write of the expert's: a verdict changed
        expl = p.latest_id("explanations")
        sid = int(p.critiques(expl)[0]["sample_id"])
        assert len({r["sample_id"] for r in p.critiques(expl)}) == 12  # the resumed critique is whole
        p.set_expert_verdict(expl, sid, 0, "spurious")
        assert p.expert_verdicts(expl)[sid][0] == "spurious"
        assert audit_log.verify_project(p).ok and verify_content(p).ok
        assert "migrate_database" not in {e["action"] for e in audit_log.entries(p.db)}
    assert _user_version(root) == 1


def test_migrations_run_in_order_in_one_transaction_and_are_recorded(tiny, monkeypatch):
    ran: list[int] = []

    def add_note(db):
        ran.append(1)
        db.execute("ALTER TABLE verdicts ADD COLUMN note TEXT")

    def index_note(db):
        ran.append(2)
        db.execute("CREATE INDEX verdicts_by_note ON verdicts(note)")  # needs migration 1's column

    monkeypatch.setattr(project_mod, "DB_SCHEMA_VERSION", 3)
    monkeypatch.setitem(project_mod.DB_MIGRATIONS, 1, add_note)
    monkeypatch.setitem(project_mod.DB_MIGRATIONS, 2, index_note)
    with Project.open(tiny) as p:
        assert ran == [1, 2] and p.db_version == 3
        assert "note" in {r[1] for r in p.db.execute("PRAGMA table_info(verdicts)")}
        logged = [e for e in audit_log.entries(p.db) if e["action"] == "migrate_database"]
        assert [e["params"] for e in logged] == [{"from_version": 1, "to_version": 3}]
        assert audit_log.verify_project(p).ok and verify_content(p).ok
    assert _user_version(tiny) == 3
    with Project.open(tiny) as p:  # once only
        assert ran == [1, 2] and p.db_version == 3


def test_a_failed_migration_keeps_nothing_and_says_so(tiny, monkeypatch):
    def add_note(db):
        db.execute("ALTER TABLE verdicts ADD COLUMN note TEXT")

    def broken(db):
        db.execute("CREATE INDEX broken ON verdicts(no_such_column)")

    monkeypatch.setattr(project_mod, "DB_SCHEMA_VERSION", 3)
    monkeypatch.setitem(project_mod.DB_MIGRATIONS, 1, add_note)
    monkeypatch.setitem(project_mod.DB_MIGRATIONS, 2, broken)
    with pytest.raises(ProjectError, match="could not be brought from schema 1 to 3") as err:
        Project.open(tiny)
    assert "nothing in it was changed" in str(err.value)
    assert _user_version(tiny) == 1
    con = _raw(tiny)
    assert "note" not in {r[1] for r in con.execute("PRAGMA table_info(verdicts)")}  # migration 1 rolled back
    con.close()
    monkeypatch.setitem(project_mod.DB_MIGRATIONS, 2, lambda db: None)
    with Project.open(tiny) as p:  # the writer lock was given back; fixed, it migrates
        assert p.db_version == 3


def test_a_newer_database_is_refused_in_words(tiny, capsys):
    _set_user_version(tiny, 2)
    for read_only in (False, True):
        with pytest.raises(ProjectError) as err:
            Project.open(tiny, read_only=read_only)
        said = str(err.value)
        assert "newer version of the program" in said and "(database schema 2)" in said
        assert "reads database schemas up to 1" in said and "Update the program" in said
    for extra in ([], ["--read-only"]):
        rc = main(["status", str(tiny), *extra])
        got = capsys.readouterr()
        assert rc != 0
        assert got.err.startswith("error: ") and "database schema 2" in got.err, got.err
        assert "Traceback" not in got.err + got.out
    assert _user_version(tiny) == 2  # refused, not "migrated" downwards
    _set_user_version(tiny, 1)
    with Project.open(tiny) as p:  # the refusal gave the writer lock back
        assert p.db_version == 1


def test_read_only_opening_writes_no_version(tmp_path, capsys):
    root = _unpack(tmp_path)
    files = _fingerprint(root)
    with Project.open(root, read_only=True) as p:
        assert p.db_version == 0
        assert len(p.critiques(p.latest_id("explanations"))) == 4
        assert audit_log.verify_project(p).ok
    assert main(["status", str(root), "--read-only"]) == 0
    assert "run 4: critique running" in capsys.readouterr().out  # not even marked interrupted
    assert _user_version(root) == 0 and _fingerprint(root) == files


def test_read_only_opening_of_an_older_recorded_version_says_so_and_writes_nothing(tiny, monkeypatch):
    monkeypatch.setattr(project_mod, "DB_SCHEMA_VERSION", 2)
    monkeypatch.setitem(
        project_mod.DB_MIGRATIONS, 1, lambda db: db.execute("ALTER TABLE verdicts ADD COLUMN note TEXT")
    )
    files = _fingerprint(tiny)
    with Project.open(tiny, read_only=True) as p:
        assert p.db_version == 1
        assert any("schema 1; this program writes schema 2" in n for n in p.notes), p.notes
    assert _user_version(tiny) == 1 and _fingerprint(tiny) == files
