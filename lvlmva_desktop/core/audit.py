"""The audit log: every change to a project, appended with who, when, what and the hashes involved.

Each entry carries the sha256 of the previous entry, and its own hash covers its fields and that link,
so editing or deleting an entry breaks the chain at that point. Deleting the newest entries leaves a
valid but shorter chain; the project manifest therefore keeps the newest entry's id and hash (the
"anchor"), and ``verify`` compares the two. Someone who rewrites both the database and the manifest
consistently is not detected by this alone: the report prints the head hash so it can be kept outside
the project (printed, signed, sent) and compared later.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL,
    params TEXT NOT NULL, hashes TEXT NOT NULL, prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL);
"""


def entry_hash(entry_id: int, t: float, user: str, action: str, params: str, hashes: str, prev: str) -> str:
    payload = json.dumps([entry_id, repr(t), user, action, params, hashes, prev], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append(
    db: sqlite3.Connection,
    user: str,
    action: str,
    params: dict[str, Any] | None = None,
    hashes: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Append one entry (inside the caller's transaction, or its own); returns (id, entry hash).

    ``db`` must be in autocommit mode (isolation_level=None) or already inside a transaction; the read of
    the previous hash and the insert happen under one write lock so two writers cannot fork the chain.
    """
    own = not db.in_transaction
    if own:
        db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT id, entry_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        prev_id, prev = (row[0], row[1]) if row is not None else (0, GENESIS)
        entry_id = prev_id + 1
        t = time.time()
        p = json.dumps(params or {}, sort_keys=True, ensure_ascii=False, default=str)
        h = json.dumps(hashes or {}, sort_keys=True, ensure_ascii=False)
        digest = entry_hash(entry_id, t, user, action, p, h, prev)
        db.execute(
            "INSERT INTO audit_log (id, time, user, action, params, hashes, prev_hash, entry_hash) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (entry_id, t, user, action, p, h, prev, digest),
        )
        if own:
            db.execute("COMMIT")
    except BaseException:
        if own:
            db.execute("ROLLBACK")
        raise
    return entry_id, digest


@dataclass
class Verification:
    ok: bool
    n_entries: int
    head: str  # hash of the newest entry (GENESIS when empty)
    problems: list[str] = field(default_factory=list)


def verify(db: sqlite3.Connection, anchor: dict | None = None) -> Verification:
    """Walk the chain; report every edited, inserted or deleted entry, and a tail cut against ``anchor``
    ({"id": newest id, "hash": its entry hash}, as kept in the manifest)."""
    problems: list[str] = []
    prev, expected_id, n = GENESIS, 1, 0
    for r in db.execute(
        "SELECT id, time, user, action, params, hashes, prev_hash, entry_hash FROM audit_log ORDER BY id"
    ):
        entry_id, t, user, action, params, hashes, prev_hash, digest = tuple(r)
        n += 1
        if entry_id != expected_id:
            problems.append(f"entries {expected_id} to {entry_id - 1} are missing (deleted)")
        if prev_hash != prev:
            problems.append(f"entry {entry_id} ({action}) does not follow the entry before it")
        if entry_hash(entry_id, t, user, action, params, hashes, prev_hash) != digest:
            problems.append(f"entry {entry_id} ({action}) was changed after it was written")
        prev, expected_id = digest, entry_id + 1
    if anchor:
        last_id = expected_id - 1
        if anchor.get("id", 0) > last_id:
            problems.append(
                f"the newest entries after {last_id} are missing (the log ends before {anchor['id']})"
            )
        elif anchor.get("id") == last_id and anchor.get("hash") != prev:
            problems.append(f"the newest entry {last_id} differs from the one recorded in the manifest")
    return Verification(ok=not problems, n_entries=n, head=prev, problems=problems)


def entries(db: sqlite3.Connection) -> list[dict]:
    """Every entry, oldest first, with params and hashes decoded."""
    cur = db.execute(
        "SELECT id, time, user, action, params, hashes, prev_hash, entry_hash FROM audit_log ORDER BY id"
    )
    names = [c[0] for c in cur.description]
    out = []
    for r in cur:
        d = dict(zip(names, tuple(r)))
        d["params"] = json.loads(d["params"])
        d["hashes"] = json.loads(d["hashes"])
        out.append(d)
    return out
