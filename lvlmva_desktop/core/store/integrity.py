"""Verification of content: the project's tables and files against what the audit log recorded when they
were written.

The hash chain (core/store/audit.py) proves that the log itself was not altered; this module proves that what the
report and the steps read today is what the log says was written. Each kind of content is recomputed from
today's tables and files and compared with the entries that recorded it:

- images and labels: every sample row against the row ledger of the import that added it (``ledger/``,
  whose sha256 the import entry holds), and every image file against its content hash;
- decoded images (``cache/``): each file against the sha256 logged when it was written;
- model versions and explanations: the files and their table rows against the logged sha256;
- alignment sets: the member lists against the logged hash;
- critiques and verdicts: every critique text and the critic's verdicts against the per-image entries,
  and the expert's current verdicts against the replay of every logged change;
- metrics: every metrics row against its logged values and detail hash;
- runs: settings, status, error and results against the run's start and end entries;
- class descriptions: every version's texts against the logged hashes.

Every difference is named (which row or file, what changed where it can be told). Projects written before
a record existed are checked as far as their records go, and the check says what it could not cover.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.store import audit as audit_log

#: differences listed per kind of content before the rest are counted only
MAX_LISTED = 20


@dataclass
class ContentCheck:
    what: str  # the kind of content, in words
    checked: int = 0  # how many items were compared
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why
    more: int = 0  # differences beyond the listed ones

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)
        else:
            self.more += 1

    def line(self) -> str:
        if self.ok:
            return f"{self.what}: {self.checked} verified"
        more = f" and {self.more} more" if self.more else ""
        return f"{self.what}: {len(self.problems) + self.more} of {self.checked} differ{more and ''}"

    def to_dict(self) -> dict:
        return {
            "what": self.what,
            "checked": self.checked,
            "ok": self.ok,
            "problems": self.problems,
            "more": self.more,
            "notes": self.notes,
        }


@dataclass
class ContentVerification:
    checks: list[ContentCheck]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def n_problems(self) -> int:
        return sum(len(c.problems) + c.more for c in self.checks)

    def summary(self) -> str:
        if self.ok:
            n = sum(c.checked for c in self.checks)
            return f"content intact: {n} rows and files match the audit log ({self.seconds:.1f} s)"
        return f"content NOT intact: {self.n_problems} difference(s) from what the audit log recorded"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "seconds": self.seconds, "checks": [c.to_dict() for c in self.checks]}


def _entries(project) -> list[dict]:
    try:
        return audit_log.entries(project.db)
    except Exception:  # noqa: BLE001 - no audit log table: nothing to compare with
        return []


def verify_content(project, state: TaskState | None = None, images: bool = True) -> ContentVerification:
    """Compare the project's content with the audit log (see the module docstring); ``images``: also hash
    every image file (the slowest part, proportional to the data)."""
    state = ensure_state(state)
    t0 = time.perf_counter()
    entries = _entries(project)
    by_action: dict[str, list[dict]] = {}
    for e in entries:
        if isinstance(e.get("params"), dict) and isinstance(e.get("hashes"), dict):
            by_action.setdefault(e["action"], []).append(e)
    steps: list[tuple[str, Callable]] = [
        ("images and labels", lambda: _samples(project, by_action, images, state.child(0.0, 0.6))),
        ("decoded images", lambda: _caches(project, by_action)),
        (
            "model versions",
            lambda: _files(project, by_action, "models", "model_version", "model_id", "model"),
        ),
        (
            "explanations",
            lambda: _files(
                project, by_action, "explanations", "explanation", "explanation_id", "explanation"
            ),
        ),
        ("alignment sets", lambda: _alignment_sets(project, by_action)),
        ("critiques and the critic's verdicts", lambda: _critiques(project, by_action)),
        ("the expert's verdicts", lambda: _expert_verdicts(project, by_action)),
        ("metrics", lambda: _metrics(project, by_action)),
        ("runs", lambda: _runs(project, by_action)),
        ("class descriptions", lambda: _descriptions(project, by_action)),
    ]
    checks = []
    for i, (_, step) in enumerate(steps):
        state.check()
        state.progress(0.6 + 0.4 * i / len(steps) if i else 0.0, None, "verifying the project's content")
        checks.append(step())
    state.progress(1.0, None, "content verified")
    return ContentVerification(checks, time.perf_counter() - t0)


# -- images and labels -------------------------------------------------------------------------------------
def _samples(project, by_action, images: bool, state: TaskState) -> ContentCheck:
    from lvlmva_desktop.core.store.project import sha256_file

    c = ContentCheck("images and labels")
    imports = by_action.get("import", [])
    rows = {r["id"]: r for r in project.samples()}
    c.checked = len(rows)
    expected: dict[int, dict] = {}
    unledgered = 0
    for e in imports:
        rel = e["params"].get("ledger")
        if not rel:
            unledgered += 1
            continue
        path = project.root / rel
        if not path.is_file():
            c.add(f"the row ledger {rel} of the import in audit entry {e['id']} is missing")
            continue
        if sha256_file(path) != e["hashes"].get("ledger"):
            c.add(f"the row ledger {rel} is not the one written by the import (audit entry {e['id']})")
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        cols = data["columns"]
        for values in data["rows"]:
            row = dict(zip(cols, values))
            expected[int(row["id"])] = row
    if unledgered and imports:
        c.notes.append(
            f"{unledgered} import(s) were made before rows were recorded one by one: their rows are checked "
            "through the data hash of the latest import only"
        )
    if imports and imports[-1]["hashes"].get("data") != project.data_hash() and not expected:
        c.add("the list of images (labels, splits, groups, masks, content hashes) differs from the one "
              "recorded at the latest import")  # fmt: skip
    classes = project.classes
    for sid, want in expected.items():
        got = rows.get(sid)
        if got is None:
            c.add(f"image {sid} ({want['path']}) was removed from the samples table")
            continue
        for col in ("path", "label", "split", "grp", "mask_path", "sha256"):
            if got[col] != want[col]:
                if col == "label":
                    old = classes[want[col]] if 0 <= want[col] < len(classes) else want[col]
                    new = classes[got[col]] if 0 <= got[col] < len(classes) else got[col]
                    c.add(f"image {sid}: label changed from {old!r} to {new!r}")
                else:
                    c.add(f"image {sid}: {col} changed from {want[col]!r} to {got[col]!r}")
    if expected:
        for sid in sorted(set(rows) - set(expected)):
            c.add(f"image {sid} ({rows[sid]['path']}) is in the samples table but no import added it")
    if images:
        from lvlmva_desktop.core.data.images import ImageLoadError, file_sha256

        items = list(rows.values())
        for i, r in enumerate(items):
            if i % 256 == 0:
                state.check()
                state.progress(i, len(items), "hashing the image files")
            path = project.abs(r["path"])
            try:
                digest = file_sha256(path)
            except (OSError, ImageLoadError):
                c.add(f"image {r['id']}: the file {r['path']} cannot be read")
                continue
            want = expected.get(r["id"], {}).get("sha256", r["sha256"])
            if digest != want:
                c.add(
                    f"image {r['id']}: the file {r['path']} changed after import (its content hash differs)"
                )
    else:
        c.notes.append("the image files were not hashed (quick check)")
    return c


def _caches(project, by_action) -> ContentCheck:
    from lvlmva_desktop.core.store.project import sha256_file

    c = ContentCheck("decoded images")
    logged: dict[str, str] = {}
    for e in by_action.get("decoded_images", []):
        logged[e["params"].get("file", "")] = e["hashes"].get("cache", "")
    folder = project.root / "cache"
    files = sorted(folder.glob("data-*.safetensors")) if folder.is_dir() else []
    c.checked = len(files)
    for f in files:
        rel = project.rel(f)
        if rel not in logged:
            c.notes.append(f"{rel} was not recorded when written (an older version, or a reader): not used")
        elif sha256_file(f) != logged[rel]:
            c.add(f"{rel} is not the decoding recorded in the audit log (it will be decoded again, not used)")
    return c


# -- files with a table row ------------------------------------------------------------------------------
def _files(project, by_action, table: str, action: str, key: str, name: str) -> ContentCheck:
    from lvlmva_desktop.core.store.project import sha256_file

    what = {"models": "model versions", "explanations": "explanations"}[table]
    c = ContentCheck(what)
    logged = {e["params"].get(key): e["hashes"].get(name) for e in by_action.get(action, [])}
    rows = project.db.execute(f"SELECT id, path, sha256 FROM {table} ORDER BY id").fetchall()  # noqa: S608
    c.checked = len(rows)
    label = "model version" if table == "models" else "explanation"
    for r in rows:
        path = project.abs(r["path"]) if r["path"] else None
        if path is None or not path.is_file():
            c.add(f"{label} {r['id']}: its file {r['path'] or '(none)'} is missing")
            continue
        digest = sha256_file(path)
        want = logged.get(r["id"])
        if want is None:
            c.notes.append(f"{label} {r['id']} has no entry in the audit log to compare with")
        elif digest != want:
            c.add(f"{label} {r['id']}: the file {r['path']} is not the one recorded when it was made")
        if r["sha256"] != (want or digest):
            c.add(f"{label} {r['id']}: the sha256 in the {table} table was changed")
    for i in sorted(set(logged) - {r["id"] for r in rows}):
        c.add(f"{label} {i} was recorded in the audit log but its row is gone")
    return c


def _alignment_sets(project, by_action) -> ContentCheck:
    c = ContentCheck("alignment sets")
    logged = {
        e["params"].get("set_id"): e["hashes"].get("members") for e in by_action.get("alignment_set", [])
    }
    sets = [r["id"] for r in project.db.execute("SELECT id FROM alignment_sets ORDER BY id")]
    c.checked = len(sets)
    for sid in sets:
        members = [r["sample_id"] for r in project.alignment_members(sid)]
        want = logged.get(sid)
        if want is not None and audit_log.json_hash(members) != want:
            c.add(f"alignment set {sid}: its list of images was changed")
    return c


# -- critiques and verdicts -----------------------------------------------------------------------------------
def verdict_problems(project, expl_id: int) -> list[str]:
    """The differences between one explanation's critiques and verdicts and what the log recorded (what
    alignment reads: checked before the masks are built)."""
    by_action: dict[str, list[dict]] = {}
    for e in _entries(project):
        if isinstance(e.get("params"), dict) and isinstance(e.get("hashes"), dict):
            by_action.setdefault(e["action"], []).append(e)
    checks = (_critiques(project, by_action, expl_id), _expert_verdicts(project, by_action, expl_id))
    return [p for c in checks for p in c.problems] + [f"... and {c.more} more" for c in checks if c.more]


def _critiques(project, by_action, expl_id: int | None = None) -> ContentCheck:
    c = ContentCheck("critiques and the critic's verdicts")
    logged = {}
    for e in by_action.get("critique_image", []):
        p = e["params"]
        if expl_id is None or p.get("explanation") == expl_id:
            logged[(p.get("run"), p.get("explanation"), p.get("sample"))] = e["hashes"]
    rows = project.db.execute(
        "SELECT id, run_id, explanation_id, sample_id, text FROM critiques"
        + ("" if expl_id is None else " WHERE explanation_id=?")
        + " ORDER BY id",
        () if expl_id is None else (expl_id,),
    ).fetchall()
    c.checked = len(rows)
    seen = set()
    for r in rows:
        k = (r["run_id"], r["explanation_id"], r["sample_id"])
        seen.add(k)
        want = logged.get(k)
        if want is None:
            c.notes.append(
                f"the critique of image {r['sample_id']} (run {r['run_id']}) has no per-image entry"
            )
            continue
        if audit_log.text_hash(r["text"]) != want.get("text"):
            c.add(f"the critic's text for image {r['sample_id']} (run {r['run_id']}) was changed")
        verdicts = project.db.execute(
            "SELECT segment, verdict FROM verdicts WHERE critique_id=? ORDER BY segment", (r["id"],)
        ).fetchall()
        if audit_log.json_hash([[v["segment"], v["verdict"]] for v in verdicts]) != want.get("verdicts"):
            c.add(f"the critic's verdicts for image {r['sample_id']} (run {r['run_id']}) were changed")
    for k in sorted(set(logged) - seen, key=str):
        c.add(f"the critique of image {k[2]} (run {k[0]}) was removed")
    return c


def _expert_verdicts(project, by_action, expl_id: int | None = None) -> ContentCheck:
    """Replay every logged change of an expert verdict, then compare with the table's current ones."""
    c = ContentCheck("the expert's verdicts")
    changes = sorted(
        (
            e
            for e in by_action.get("verdict_set", []) + by_action.get("verdict_cleared", [])
            if expl_id is None or e["params"].get("explanation_id") == expl_id
        ),
        key=lambda e: e["id"],
    )
    expected: dict[tuple, str] = {}
    for e in changes:
        p = e["params"]
        seg = p.get("segment")
        k = (
            p.get("explanation_id"),
            p.get("sample_id"),
            seg - 1 if isinstance(seg, int) else seg,
        )  # logged from 1
        if e["action"] == "verdict_set":
            expected[k] = p.get("new")
        else:
            expected.pop(k, None)
    current: dict[tuple, str] = {}
    for r in project.db.execute(
        "SELECT explanation_id, sample_id, segment, verdict FROM verdicts WHERE source='expert'"
        + ("" if expl_id is None else " AND explanation_id=?")
        + " ORDER BY id",
        () if expl_id is None else (expl_id,),
    ):
        current[(r["explanation_id"], r["sample_id"], r["segment"])] = r["verdict"]
    c.checked = len(set(expected) | set(current))
    for k in sorted(set(expected) | set(current), key=str):
        want, got = expected.get(k), current.get(k)
        if want != got:
            where = (
                f"image {k[1]}, segment {k[2] + 1 if isinstance(k[2], int) else k[2]} (explanation {k[0]})"
            )
            if got is None:
                c.add(f"the expert's verdict on {where} ({want!r}) was removed from the table")
            elif want is None:
                c.add(f"{where}: an expert verdict {got!r} is in the table but was never given")
            else:
                c.add(f"{where}: the expert's verdict was changed from {want!r} to {got!r}")
    return c


# -- metrics, runs, descriptions --------------------------------------------------------------------------------
def _metrics(project, by_action) -> ContentCheck:
    c = ContentCheck("metrics")
    logged = {}
    for e in by_action.get("metrics", []):
        p = e["params"]
        logged[(p.get("run_id"), p.get("model_id"), p.get("split"))] = (
            p.get("values"),
            e["hashes"].get("detail"),
        )
    groups: dict[tuple, dict] = {}
    for r in project.db.execute(
        "SELECT run_id, model_id, split, name, value, detail FROM metrics ORDER BY id"
    ):
        g = groups.setdefault((r["run_id"], r["model_id"], r["split"]), {"values": {}, "detail": r["detail"]})
        g["values"][r["name"]] = r["value"]
    c.checked = len(groups)
    for k, g in groups.items():
        want = logged.get(k)
        where = f"model {k[1]} in evaluation run {k[0]} ({k[2]})"
        if want is None:
            c.notes.append(f"the metrics of {where} have no entry in the audit log (an older version)")
            continue
        values, detail_hash = want
        for name, v in g["values"].items():
            if values is None or name not in values or values[name] != v:
                c.add(f"{where}: {name} is {v!r} in the table, {None if values is None else values.get(name)!r} "
                      "in the audit log")  # fmt: skip
        detail = json.loads(g["detail"]) if g["detail"] else None
        if audit_log.json_hash(detail) != detail_hash:
            c.add(f"{where}: the detailed metrics (per group) were changed")
    for k in sorted(set(logged) - set(groups), key=str):
        c.add(f"the metrics of model {k[1]} in evaluation run {k[0]} were removed")
    return c


def _runs(project, by_action) -> ContentCheck:
    c = ContentCheck("runs")
    starts = {e["params"].get("run_id"): e["params"] for e in by_action.get("run_start", [])}
    ends = {e["params"].get("run_id"): e["params"] for e in by_action.get("run_end", [])}
    rows = project.db.execute("SELECT * FROM runs ORDER BY id").fetchall()
    c.checked = len(rows)

    def same(a, b) -> bool:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    for r in rows:
        rid = r["id"]
        s = starts.get(rid)
        if s is None:
            c.notes.append(f"run {rid} has no start entry in the audit log")
            continue
        if s.get("kind") != r["kind"]:
            c.add(f"run {rid}: its step was changed from {s.get('kind')!r} to {r['kind']!r}")
        if not same(s.get("settings"), json.loads(r["settings"] or "null")):
            c.add(f"run {rid} ({r['kind']}): its settings were changed")
        e = ends.get(rid)
        if e is None:
            if r["status"] not in ("running", "interrupted"):
                c.add(f"run {rid} ({r['kind']}): marked {r['status']!r} but its end was never recorded")
            continue
        if e.get("status") != r["status"]:
            c.add(
                f"run {rid} ({r['kind']}): its status was changed from {e.get('status')!r} to {r['status']!r}"
            )
        if not same(e.get("results") or {}, json.loads(r["results"] or "null") or {}):
            c.add(f"run {rid} ({r['kind']}): its results were changed")
        if (e.get("error") or None) != (r["error"] or None):
            c.add(f"run {rid} ({r['kind']}): its error text was changed")
    return c


def _descriptions(project, by_action) -> ContentCheck:
    c = ContentCheck("class descriptions")
    logged = {e["params"].get("version"): e["hashes"] for e in by_action.get("class_descriptions", [])}
    rows = project.db.execute(
        "SELECT version, descriptions FROM class_descriptions ORDER BY version"
    ).fetchall()
    c.checked = len(rows)
    for r in rows:
        want = logged.get(r["version"])
        if want is None:
            continue
        texts = json.loads(r["descriptions"])
        for cls, text in texts.items():
            if want.get(cls) is not None and audit_log.text_hash(text) != want[cls]:
                c.add(f"version {r['version']}: the description of {cls!r} was changed")
    return c
