"""The audit log: every change to a project, appended with who, when, what and the hashes involved.

Each entry carries the sha256 of the previous entry, and its own hash covers its fields and that link,
so editing, deleting, inserting or reordering entries breaks the chain at that point. Deleting the newest
entries leaves a valid but shorter chain, so the project manifest keeps an "anchor":

* ``pending``: the highest entry id the program announced. It is written *before* the entry is
  committed (under the database write lock), so every entry this program writes is announced first.
* ``id``/``hash``: the newest entry known to be committed, written *after* the commit.

A crash between the commit and the anchor write therefore leaves entries between ``id`` and ``pending``:
reported as a warning ("not in the manifest yet"), never as tampering. An entry beyond ``pending`` was
not written by this program; if one is found when the next entry is appended, its id is kept in the
manifest (``unannounced``) so it stays reported. The anchor never names an entry that is not committed.

Someone who rewrites both the database and the manifest consistently is not detected by this alone: the
head hash is printed so it can be kept outside the project (printed, signed, sent) and compared later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GENESIS = "0" * 64
ANCHOR_KEY = "audit"  # the manifest's key for the anchor

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL,
    params TEXT NOT NULL, hashes TEXT NOT NULL, prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL);
"""

# One lock for every read-modify-write of a manifest in this process (the GUI's thread and its jobs'
# threads each hold a Project on the same folder). It is never held while waiting for the database.
_manifest_lock = threading.Lock()


def entry_hash(entry_id: int, t: float, user: str, action: str, params: str, hashes: str, prev: str) -> str:
    payload = json.dumps([entry_id, repr(t), user, action, params, hashes, prev], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def text_hash(text: str) -> str:
    """sha256 of a text (UTF-8): what the log keeps instead of the text itself."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_hash(value: Any) -> str:
    """sha256 of a JSON value in a canonical form (sorted keys), so equal settings hash equally."""
    return text_hash(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str))


def trust_remote_code_in(identity: Any) -> bool:
    """True when any model in a critic's or backend's identity runs code shipped with the model."""
    if isinstance(identity, dict):
        return identity.get("trust_remote_code") is True or any(
            trust_remote_code_in(v) for v in identity.values()
        )
    if isinstance(identity, list | tuple):
        return any(trust_remote_code_in(v) for v in identity)
    return False


def critique_entry(project: Any, run_id: int, settings: dict, results: dict) -> tuple[dict, dict]:
    """Params and hashes of a critique run's entry: the run's settings with the critic's identity (LVLM,
    trust_remote_code, templates), its counts, and hashes of every critique text and verdict."""
    identity = settings.get("critic") or {}
    rows = project.db.execute(
        "SELECT c.id, c.sample_id, c.critic, c.text FROM critiques c WHERE c.run_id=? ORDER BY c.id",
        (run_id,),
    ).fetchall()
    texts = []
    for r in rows:
        verdicts = project.db.execute(
            "SELECT segment, verdict FROM verdicts WHERE critique_id=? ORDER BY segment", (r["id"],)
        ).fetchall()
        texts.append([r["sample_id"], r["critic"], r["text"], [tuple(v) for v in verdicts]])
    _, descriptions = project.class_descriptions()
    hashes = {"critiques": json_hash(texts), "class_descriptions": json_hash(descriptions)}
    for name, digest in (identity.get("templates") or {}).items():
        hashes[f"template:{name}"] = str(digest)
    for key in ("model", "judge_model"):
        model = identity.get(key)
        if isinstance(model, dict) and model.get("folder_hash"):
            hashes[f"lvlm:{key}"] = str(model["folder_hash"])
    params = {
        "run_id": run_id,
        **settings,
        "trust_remote_code": trust_remote_code_in(identity),
        "n_critiques": len(rows),
        "results": results,
    }
    return params, hashes


def append(
    db: sqlite3.Connection,
    user: str,
    action: str,
    params: dict[str, Any] | None = None,
    hashes: dict[str, str] | None = None,
    announce: Callable[[int, int], None] | None = None,
) -> tuple[int, str]:
    """Append one entry (inside the caller's transaction, or its own); returns (id, entry hash).

    ``db`` must be in autocommit mode (isolation_level=None) or already inside a transaction; the read of
    the previous hash and the insert happen under one write lock so two writers cannot fork the chain.
    ``announce(new_id, previous_id)`` runs under that lock before the insert (the manifest's ``pending``).
    """
    own = not db.in_transaction
    if own:
        db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT id, entry_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        prev_id, prev = (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)
        entry_id = prev_id + 1
        t = time.time()
        p = json.dumps(params or {}, sort_keys=True, ensure_ascii=False, default=str)
        h = json.dumps(hashes or {}, sort_keys=True, ensure_ascii=False)
        digest = entry_hash(entry_id, t, user, action, p, h, prev)
        if announce is not None:
            announce(entry_id, prev_id)
        db.execute(
            "INSERT INTO audit_log (id, time, user, action, params, hashes, prev_hash, entry_hash) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (entry_id, t, user, action, p, h, prev, digest),
        )
        if own:
            db.execute("COMMIT")
    except BaseException:
        if own and db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return entry_id, digest


# -- the anchor in the manifest --------------------------------------------------------------------------
def _empty_anchor() -> dict:
    return {"id": 0, "hash": GENESIS, "pending": 0}


def read_anchor(manifest_path: Path) -> dict | None:
    """The anchor as it is on disk now (not a Project's in-memory copy, which may be older)."""
    data = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    anchor = data.get(ANCHOR_KEY)
    return dict(anchor) if isinstance(anchor, dict) else None


def _update_anchor(manifest_path: Path, change: Callable[[dict], None]) -> dict:
    """Re-read the manifest, change its anchor, write it atomically (fsync, then rename)."""
    path = Path(manifest_path)
    with _manifest_lock:
        data = json.loads(path.read_text(encoding="utf-8"))
        anchor = data.get(ANCHOR_KEY)
        anchor = {**_empty_anchor(), **anchor} if isinstance(anchor, dict) else _empty_anchor()
        change(anchor)
        data[ANCHOR_KEY] = anchor
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return anchor


def announce(manifest_path: Path, entry_id: int, prev_id: int) -> dict:
    """Before committing entry ``entry_id``: raise ``pending``; remember any entry nobody announced."""

    def change(a: dict) -> None:
        if prev_id > a["pending"]:  # the log holds entries this program never announced
            a.setdefault("unannounced", []).append([a["pending"] + 1, prev_id])
        a["pending"] = max(int(a["pending"]), entry_id)

    return _update_anchor(manifest_path, change)


def write_anchor(manifest_path: Path, entry_id: int, digest: str) -> dict:
    """After the commit of ``entry_id``: name it as the newest (never moves the anchor backwards)."""

    def change(a: dict) -> None:
        if entry_id > int(a["id"]):
            a["id"], a["hash"] = entry_id, digest

    return _update_anchor(manifest_path, change)


# -- verification ----------------------------------------------------------------------------------------
@dataclass
class Verification:
    ok: bool
    n_entries: int
    head: str  # hash of the newest entry (GENESIS when empty)
    problems: list[str] = field(default_factory=list)  # signs of tampering: the check fails
    warnings: list[str] = field(default_factory=list)  # e.g. a crash before the anchor was written

    def summary(self) -> str:
        if self.ok:
            return f"audit log intact: {self.n_entries} entries, head {self.head}"
        return f"audit log NOT intact: {len(self.problems)} problem(s) in {self.n_entries} entries"


def _range(a: int, b: int) -> str:
    """'entry 5 is' or 'entries 5 to 7 are': the entries a message is about, named."""
    return f"entry {a} is" if a == b else f"entries {a} to {b} are"


def verify(db: sqlite3.Connection, anchor: dict | None = None) -> Verification:
    """Walk the chain; report every edited, inserted, reordered or deleted entry, and compare the newest
    entries with ``anchor`` (the manifest's {"id", "hash", "pending", "unannounced"})."""
    problems: list[str] = []
    warnings: list[str] = []
    prev, expected_id, n = GENESIS, 1, 0
    actions: dict[int, str] = {}
    hashes_by_id: dict[int, str] = {}
    try:
        rows = db.execute(
            "SELECT id, time, user, action, params, hashes, prev_hash, entry_hash FROM audit_log ORDER BY id"
        ).fetchall()
    except sqlite3.DatabaseError as e:
        return Verification(False, 0, GENESIS, [f"the audit log cannot be read: {e}"])
    for r in rows:
        entry_id, t, user, action, params, hashes, prev_hash, digest = tuple(r)
        n += 1
        actions[entry_id], hashes_by_id[entry_id] = action, digest
        if entry_id != expected_id:
            problems.append(f"{_range(expected_id, entry_id - 1)} missing (deleted) before entry {entry_id}")
        if prev_hash != prev:
            problems.append(f"entry {entry_id} ({action}) does not follow the entry before it")
        if entry_hash(entry_id, t, user, action, params, hashes, prev_hash) != digest:
            problems.append(f"entry {entry_id} ({action}) was changed after it was written")
        prev, expected_id = digest, entry_id + 1
    last_id = expected_id - 1 if n else 0

    if anchor is None:
        if n:
            problems.append(
                f"the manifest holds no record of the audit log, yet the log has {n} entries "
                f"(entries 1 to {last_id} cannot be checked against it)"
            )
        return Verification(not problems, n, prev, problems, warnings)
    try:
        a_id, a_hash = int(anchor.get("id", 0)), str(anchor.get("hash", GENESIS))
        pending = max(int(anchor.get("pending", a_id)), a_id)
        unannounced = [(int(x), int(y)) for x, y in anchor.get("unannounced", [])]
    except (TypeError, ValueError):
        problems.append("the manifest's record of the audit log is unreadable (it was edited)")
        return Verification(False, n, prev, problems, warnings)
    if a_id > last_id:
        problems.append(
            f"{_range(last_id + 1, a_id)} missing: the manifest records entry {a_id} as written"
            + (f", the log ends at entry {last_id}" if last_id else ", the log is empty")
        )
    elif a_id > 0 and hashes_by_id.get(a_id) not in (None, a_hash):
        problems.append(f"entry {a_id} ({actions[a_id]}) differs from the one recorded in the manifest")
    lag = [i for i in actions if a_id < i <= pending]
    if lag:
        warnings.append(
            f"the newest {_range(min(lag), max(lag))} not in the manifest yet: the program stopped "
            "before recording it there (a crash, not a sign of tampering)"
        )
    for i in sorted(i for i in actions if i > pending):
        problems.append(f"entry {i} ({actions[i]}) was not written by this program (never announced)")
    for lo, hi in unannounced:
        for i in range(lo, hi + 1):
            what = f"entry {i} ({actions[i]})" if i in actions else f"entry {i}"
            problems.append(f"{what} was added outside this program (found when the next one was written)")
    return Verification(not problems, n, prev, problems, warnings)


def verify_project(project: Any) -> Verification:
    """Verify a project's log against the anchor in its manifest file (as on disk now)."""
    from lvlmva_desktop.core.store.project import MANIFEST

    try:
        anchor = read_anchor(project.root / MANIFEST)
    except (OSError, ValueError) as e:
        return Verification(False, 0, GENESIS, [f"the project manifest cannot be read: {e}"])
    return verify(project.db, anchor)


def entries(db: sqlite3.Connection) -> list[dict]:
    """Every entry, oldest first, with params and hashes decoded (left as text where they do not parse)."""
    cur = db.execute(
        "SELECT id, time, user, action, params, hashes, prev_hash, entry_hash FROM audit_log ORDER BY id"
    )
    names = [c[0] for c in cur.description]
    out = []
    for r in cur:
        d = dict(zip(names, tuple(r)))
        for key in ("params", "hashes"):
            try:
                d[key] = json.loads(d[key])
            except (TypeError, ValueError):
                pass
        out.append(d)
    return out
