"""The audit log: every change to a project leaves an entry (who, when, what, hashes) in a hash chain that
verifies after a real pipeline run, catches every kind of tampering by naming the entry, and does not
mistake a crash between the database commit and the manifest's anchor for tampering."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lvlmva_desktop.core.data.benchsets import GENERATORS, default_class_descriptions
from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.pipeline import EvalSettings, PipelineSettings, run_pipeline
from lvlmva_desktop.core.method.sampling import SamplingSettings
from lvlmva_desktop.core.method.train import AlignSettings, TrainSettings
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.export import export_results
from lvlmva_desktop.core.store.project import DATABASE, MANIFEST, Project, current_user, sha256_file

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def _settings() -> PipelineSettings:
    return PipelineSettings(
        train=TrainSettings(epochs=1, batch_size=32),
        sampling=SamplingSettings(n=8),
        align=AlignSettings(epochs=1, batch_size=32, lambda_=1.0),
        evaluate=EvalSettings(n_attribution_images=4, min_group_size=1),
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A project after every kind of change: create, import, descriptions, a template, a whole pipeline run
    (simulated critic), an expert verdict set and taken back, a chat message, an export, saved settings."""
    base = tmp_path_factory.mktemp("audit")
    manifest = GENERATORS["isic-like"](base / "data", seed=0, n_train=48, n_test=24, size=32)
    t0 = time.time()
    report = import_csv_manifest(manifest)
    root = base / "proj"
    with Project.create(root, "audited", report.classes, (32, 32), 3) as p:
        p.add_samples(report)
        p.set_class_descriptions(default_class_descriptions("isic-like"))
        p.save_prompt_template("critic.j2", "Judge {{ class_name }}.")
        res = run_pipeline(p, _settings(), GroundTruthCritic(error_rate=0.1, seed=1), CPU)
        expl = res["explanation_id"]
        sample = p.alignment_members(res["alignment_set"]["id"])[0]["sample_id"]
        before = p.effective_verdicts(expl)[sample][0]["verdict"]
        flipped = "relevant" if before == "spurious" else "spurious"
        p.set_expert_verdict(expl, sample, 0, flipped)
        p.clear_expert_verdict(expl, sample, 0)
        p.add_chat_message(expl, sample, "user", "Why is segment 1 spurious?")
        written = export_results(p, base / "export")
        p.record_settings("gui-settings.json", {"pipeline": _settings().to_dict()})
    return {
        "root": root,
        "t0": t0,
        "t1": time.time(),
        "results": res,
        "sample": sample,
        "before": before,
        "flipped": flipped,
        "written": written,
    }


@pytest.fixture
def project_copy(built, tmp_path) -> Path:
    root = tmp_path / "proj"
    shutil.copytree(built["root"], root)
    return root


def _entries(root: Path) -> list[dict]:
    with Project.open(root, read_only=True) as p:
        return audit.entries(p.db)


def _verify(root: Path) -> audit.Verification:
    with Project.open(root, read_only=True) as p:
        return audit.verify_project(p)


def _by_action(entries: list[dict], action: str) -> list[dict]:
    return [e for e in entries if e["action"] == action]


# -- every action leaves its entry ----------------------------------------------------------------------
def test_every_change_is_logged_with_user_time_and_hashes(built):
    root, res = built["root"], built["results"]
    entries = _entries(root)
    for e in entries:
        assert e["user"] == current_user()
        assert built["t0"] <= e["time"] <= built["t1"]
        assert len(e["entry_hash"]) == 64
    assert [e["id"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["action"] == "create_project" and entries[0]["params"]["name"] == "audited"

    with Project.open(root, read_only=True) as p:
        (imp,) = _by_action(entries, "import")
        assert imp["params"]["imported"] == 72 and imp["params"]["skipped"] == 0
        assert imp["hashes"]["data"] == p.data_hash()

        (desc,) = _by_action(entries, "class_descriptions")
        _, texts = p.class_descriptions()
        assert desc["params"]["version"] == 1
        assert desc["hashes"] == {c: audit.text_hash(t) for c, t in texts.items()}

        (tpl,) = _by_action(entries, "prompt_template")
        stored = p.prompt_templates()["critic.j2"]
        assert tpl["params"] == {"name": "critic.j2", "version": stored["version"]}
        assert tpl["hashes"]["template"] == stored["sha256"]

        models = {m["id"]: m["sha256"] for m in p.models()}
        logged = {e["params"]["model_id"]: e["hashes"]["model"] for e in _by_action(entries, "model_version")}
        assert logged == models and len(models) == 2
        (expl,) = _by_action(entries, "explanation")
        row, _ = p.explanation(res["explanation_id"])
        assert expl["hashes"]["explanation"] == row["sha256"]
        (aset,) = _by_action(entries, "alignment_set")
        members = [r["sample_id"] for r in p.alignment_members(res["alignment_set"]["id"])]
        assert aset["params"]["n"] == 8 and aset["hashes"]["members"] == audit.json_hash(members)

        runs = p.db.execute("SELECT id, kind, status FROM runs ORDER BY id").fetchall()
    starts = {e["params"]["run_id"]: e["params"]["kind"] for e in _by_action(entries, "run_start")}
    ends = {e["params"]["run_id"]: e["params"]["status"] for e in _by_action(entries, "run_end")}
    assert starts == {r["id"]: r["kind"] for r in runs}
    assert ends == {r["id"]: r["status"] for r in runs} and set(ends.values()) == {"finished"}
    assert set(starts.values()) == {"pipeline", "train", "sample", "explain", "critique", "align", "evaluate"}
    pipeline_end = next(e for e in _by_action(entries, "run_end") if e["params"]["kind"] == "pipeline")
    assert pipeline_end["hashes"]["results_file"] == sha256_file(Path(res["results_file"]))

    (crit,) = _by_action(entries, "critique")
    assert crit["params"]["critic"]["kind"] == "ground_truth_simulated"
    assert crit["params"]["trust_remote_code"] is False and crit["params"]["n_critiques"] == 8
    assert crit["params"]["results"]["verdicts"] == res["critique"]["verdicts"]
    assert len(crit["hashes"]["critiques"]) == 64 and len(crit["hashes"]["class_descriptions"]) == 64

    (vset,) = _by_action(entries, "verdict_set")
    (vclr,) = _by_action(entries, "verdict_cleared")
    assert vset["params"]["sample_id"] == built["sample"] and vset["params"]["segment"] == 1
    assert (vset["params"]["old"], vset["params"]["old_source"]) == (built["before"], "critic")
    assert (vset["params"]["new"], vset["params"]["new_source"]) == (built["flipped"], "expert")
    assert (vclr["params"]["old"], vclr["params"]["old_source"]) == (built["flipped"], "expert")
    assert (vclr["params"]["new"], vclr["params"]["new_source"]) == (built["before"], "critic")

    (chat,) = _by_action(entries, "chat")
    assert chat["params"]["sample_id"] == built["sample"] and chat["params"]["role"] == "user"
    assert chat["hashes"]["text"] == audit.text_hash("Why is segment 1 spurious?")

    (exp,) = _by_action(entries, "export")
    assert exp["hashes"] == {p.name: sha256_file(p) for p in built["written"]}
    (settings,) = _by_action(entries, "settings")
    assert settings["params"]["file"] == "gui-settings.json"
    assert settings["hashes"]["settings"] == audit.json_hash({"pipeline": _settings().to_dict()})


def test_a_failed_or_cancelled_run_and_an_unchanged_template_are_logged_as_such(project_copy):
    with Project.open(project_copy) as p:
        n = len(audit.entries(p.db))
        p.save_prompt_template("critic.j2", "Judge {{ class_name }}.")  # same text: no new version
        assert len(audit.entries(p.db)) == n
        with pytest.raises(RuntimeError), p.run("train", {"x": 1}):
            raise RuntimeError("disk full")
        assert p.clear_expert_verdict(1, 1, 0) == 0  # nothing to take back: nothing changed, no entry
        end = audit.entries(p.db)[-1]
    assert end["action"] == "run_end" and end["params"]["status"] == "failed"
    assert end["params"]["error"] == "RuntimeError: disk full"


def test_the_chain_verifies_after_a_real_pipeline_run(built):
    result = _verify(built["root"])
    assert result.ok and result.problems == [] and result.warnings == []
    anchor = json.loads((built["root"] / MANIFEST).read_text())["audit"]
    assert result.n_entries == anchor["id"] == anchor["pending"] and result.head == anchor["hash"]
    assert result.summary() == f"audit log intact: {result.n_entries} entries, head {result.head}"


# -- tampering -------------------------------------------------------------------------------------------
def _rehash(con: sqlite3.Connection, start: int) -> None:
    """What a careful forger does: recompute the hashes (and links) of every entry from ``start`` on."""
    prev = con.execute("SELECT entry_hash FROM audit_log WHERE id=?", (start - 1,)).fetchone()
    prev = prev[0] if prev else audit.GENESIS
    for r in con.execute("SELECT * FROM audit_log WHERE id>=? ORDER BY id", (start,)).fetchall():
        digest = audit.entry_hash(r[0], r[1], r[2], r[3], r[4], r[5], prev)
        con.execute("UPDATE audit_log SET prev_hash=?, entry_hash=? WHERE id=?", (prev, digest, r[0]))
        prev = digest


def _forge_at_end(con: sqlite3.Connection) -> int:
    last_id, last_hash = con.execute("SELECT id, entry_hash FROM audit_log ORDER BY id DESC").fetchone()
    t, params = time.time(), json.dumps({"model_id": 1, "kind": "erm"})
    new_id = last_id + 1
    digest = audit.entry_hash(new_id, t, "mallory", "model_version", params, "{}", last_hash)
    con.execute(
        "INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?)",
        (new_id, t, "mallory", "model_version", params, "{}", last_hash, digest),
    )
    return new_id


def _swap(con: sqlite3.Connection, a: int, b: int) -> None:
    con.execute("UPDATE audit_log SET id=-1 WHERE id=?", (a,))
    con.execute("UPDATE audit_log SET id=? WHERE id=?", (a, b))
    con.execute("UPDATE audit_log SET id=? WHERE id=-1", (b,))


def _verdict_entry(con: sqlite3.Connection) -> int:
    return con.execute("SELECT id FROM audit_log WHERE action='verdict_set'").fetchone()[0]


def _model_entry(con: sqlite3.Connection) -> int:
    return con.execute("SELECT id FROM audit_log WHERE action='model_version' ORDER BY id").fetchone()[0]


def _insert_in_middle(con: sqlite3.Connection) -> str:
    """Shift entries 5.. up by one and put a forged entry 5 in between, with correct links throughout."""
    last = con.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    for i in range(last, 4, -1):
        con.execute("UPDATE audit_log SET id=? WHERE id=?", (i + 1, i))
    con.execute(
        "INSERT INTO audit_log VALUES (5, ?, 'mallory', 'import', '{}', '{}', '', '')", (time.time(),)
    )
    _rehash(con, 5)
    return f"entry {last + 1} ("


# Each case: (what the forger does to the database [and manifest], words the verification must say).
# The expected words name the entry (or entries) concerned.
def _case_edit_params(con, root):
    i = _verdict_entry(con)
    row = con.execute("SELECT params FROM audit_log WHERE id=?", (i,)).fetchone()[0]
    con.execute("UPDATE audit_log SET params=? WHERE id=?", (row.replace('"new": "', '"new": "x'), i))
    return [f"entry {i} (verdict_set) was changed after it was written"]


def _case_edit_hash(con, root):
    i = _model_entry(con)
    con.execute("UPDATE audit_log SET hashes=? WHERE id=?", (json.dumps({"model": "0" * 64}), i))
    return [f"entry {i} (model_version) was changed after it was written"]


def _case_edit_and_rehash_one(con, root):
    i = _verdict_entry(con)
    con.execute("UPDATE audit_log SET user='someone-else' WHERE id=?", (i,))
    r = con.execute("SELECT * FROM audit_log WHERE id=?", (i,)).fetchone()
    digest = audit.entry_hash(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
    con.execute("UPDATE audit_log SET entry_hash=? WHERE id=?", (digest, i))
    return [f"entry {i + 1} ("]  # the next entry no longer follows it


def _case_edit_and_rehash_all(con, root):
    i = _verdict_entry(con)
    con.execute("UPDATE audit_log SET params='{}' WHERE id=?", (i,))
    _rehash(con, i)
    last = con.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    return [f"entry {last} (settings) differs from the one recorded in the manifest"]


def _case_change_time(con, root):
    con.execute("UPDATE audit_log SET time=time-3600 WHERE id=3")
    return ["entry 3 (class_descriptions) was changed after it was written"]


def _case_change_user(con, root):
    con.execute("UPDATE audit_log SET user='admin' WHERE id=2")
    return ["entry 2 (import) was changed after it was written"]


def _case_delete_middle(con, root):
    i = _verdict_entry(con)
    con.execute("DELETE FROM audit_log WHERE id=?", (i,))
    return [
        f"entry {i} is missing (deleted) before entry {i + 1}",
        f"entry {i + 1} (verdict_cleared) does not follow",
    ]


def _case_delete_newest(con, root):
    last = con.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    con.execute("DELETE FROM audit_log WHERE id=?", (last,))
    return [
        f"entry {last} is missing: the manifest records entry {last} as written, the log ends at entry {last - 1}"
    ]


def _case_delete_newest_three(con, root):
    last = con.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    con.execute("DELETE FROM audit_log WHERE id>?", (last - 3,))
    return [f"entries {last - 2} to {last} are missing"]


def _case_forge_at_end(con, root):
    i = _forge_at_end(con)
    return [f"entry {i} (model_version) was not written by this program"]


def _case_insert_in_middle(con, root):
    return [_insert_in_middle(con), "not written by this program"]


def _case_swap(con, root):
    _swap(con, 4, 5)
    return ["entry 4 (", "entry 5 (", "does not follow"]


def _case_truncate(con, root):
    last = con.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    con.execute("DELETE FROM audit_log")
    return [f"entries 1 to {last} are missing", "the log is empty"]


def _case_drop_table(con, root):
    con.execute("DROP TABLE audit_log")
    return ["the audit log cannot be read"]


def _case_remove_anchor(con, root):
    data = json.loads((root / MANIFEST).read_text())
    n = data.pop("audit")["id"]
    (root / MANIFEST).write_text(json.dumps(data))
    return [f"the manifest holds no record of the audit log, yet the log has {n} entries"]


TAMPERING = {
    "edit a params field": _case_edit_params,
    "edit a hash": _case_edit_hash,
    "edit the user and recompute that entry's hash": _case_edit_and_rehash_one,
    "edit an entry and recompute every later hash": _case_edit_and_rehash_all,
    "change a time": _case_change_time,
    "change the user": _case_change_user,
    "delete a middle entry": _case_delete_middle,
    "delete the newest entry": _case_delete_newest,
    "delete the newest three entries": _case_delete_newest_three,
    "append a forged entry with a correct hash": _case_forge_at_end,
    "insert a forged entry in the middle, renumbering and rehashing": _case_insert_in_middle,
    "reorder (swap two ids)": _case_swap,
    "truncate the whole table": _case_truncate,
    "drop the table": _case_drop_table,
    "remove the anchor from the manifest": _case_remove_anchor,
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_caught_and_names_the_entry(project_copy, case):
    con = sqlite3.connect(str(project_copy / DATABASE), isolation_level=None)
    expected = TAMPERING[case](con, project_copy)
    con.close()
    result = _verify(project_copy)
    assert not result.ok, case
    said = "\n".join(result.problems)
    for words in expected:
        assert words in said, f"{case}: {words!r} not in {said!r}"
    assert result.summary().startswith("audit log NOT intact")


def test_a_forged_entry_stays_reported_after_the_program_writes_the_next_one(project_copy):
    con = sqlite3.connect(str(project_copy / DATABASE), isolation_level=None)
    forged = _forge_at_end(con)
    con.close()
    with Project.open(project_copy) as p:
        p.record_settings("gui-settings.json", {"pipeline": {}})  # chains onto the forged entry
    result = _verify(project_copy)
    assert not result.ok
    assert f"entry {forged} (model_version) was added outside this program" in "\n".join(result.problems)


# -- a crash is not tampering ------------------------------------------------------------------------------
def _die_during(root: Path, step: str) -> None:
    """In a real subprocess: record a settings change and SIGKILL the process at ``step`` of the write."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from lvlmva_desktop.core.store import audit
        from lvlmva_desktop.core.store.project import Project

        def die(*a, **k):
            if {step!r} == "announce":
                original(*a, **k)  # pending written, then death before the commit
            os.kill(os.getpid(), signal.SIGKILL)

        original = audit.{step}
        audit.{step} = die
        p = Project.open({str(root)!r})
        p.record_settings("gui-settings.json", {{"pipeline": {{"crash": 1}}}})
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr


def test_a_crash_between_the_commit_and_the_anchor_is_a_warning_not_tampering(project_copy):
    n = len(_entries(project_copy))
    _die_during(project_copy, "write_anchor")
    entries = _entries(project_copy)
    assert len(entries) == n + 1 and entries[-1]["params"]["settings"] == {"pipeline": {"crash": 1}}
    result = _verify(project_copy)
    assert result.ok and result.problems == []
    assert result.warnings == [
        f"the newest entry {n + 1} is not in the manifest yet: the program stopped before recording it "
        "there (a crash, not a sign of tampering)"
    ]
    with Project.open(project_copy) as p:  # the next change brings the anchor up to date
        p.record_settings("gui-settings.json", {"pipeline": {}})
    again = _verify(project_copy)
    assert again.ok and again.warnings == [] and again.n_entries == n + 2


def test_a_crash_before_the_commit_leaves_no_entry_and_no_alarm(project_copy):
    n = len(_entries(project_copy))
    _die_during(project_copy, "announce")
    assert len(_entries(project_copy)) == n  # the entry died with its transaction
    result = _verify(project_copy)
    assert result.ok and result.problems == [] and result.warnings == []
    with Project.open(project_copy) as p:
        p.record_settings("gui-settings.json", {"pipeline": {}})
    assert _verify(project_copy).ok


def test_the_anchor_never_names_an_uncommitted_entry(project_copy):
    """A change that fails inside its transaction rolls its entry back and leaves the anchor where it was."""
    before = json.loads((project_copy / MANIFEST).read_text())["audit"]
    with Project.open(project_copy) as p, pytest.raises(RuntimeError):
        with p.transaction():
            p.audit("settings", {"x": 1})
            raise RuntimeError("rolled back")
    after = json.loads((project_copy / MANIFEST).read_text())["audit"]
    assert (after["id"], after["hash"]) == (before["id"], before["hash"])
    assert after["pending"] == before["id"] + 1  # announced, never committed: harmless
    result = _verify(project_copy)
    assert result.ok and result.warnings == [] and result.n_entries == before["id"]


def test_trust_remote_code_is_found_anywhere_in_an_identity():
    assert audit.trust_remote_code_in({"model": {"trust_remote_code": True}})
    assert audit.trust_remote_code_in({"judge_model": {"kind": "local", "trust_remote_code": True}})
    assert not audit.trust_remote_code_in({"model": {"trust_remote_code": False}, "judge_model": None})
