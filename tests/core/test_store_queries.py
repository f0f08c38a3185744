"""The store's named queries (core/store/ and core/store/project.py) on a small project, against what it holds:
counts per split, the explanation's model, the verdicts by source, the runs by kind, the audit entries."""

from __future__ import annotations

import json

import pytest

from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.pipeline import run_critique
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store.project import Project, ProjectError

N_TRAIN, N_TEST, N_SET = 64, 48, 6


@pytest.fixture(scope="module")
def template(new_small_demo, explained_alignment_set):
    """A demo project after steps 1-5 (critic verdicts), one expert verdict, an aligned ('rrr') copy of the
    model and a stored evaluation of both."""
    root = new_small_demo("queries", n_train=N_TRAIN)
    with Project.open(root) as p:
        mid, sid, eid = explained_alignment_set(p, TrainSettings(epochs=1), N_SET)
        run_critique(p, eid, GroundTruthCritic(error_rate=0.0))
        first = p.alignment_members(sid)[0]["sample_id"]
        p.set_expert_verdict(eid, first, 0, "relevant")
        module, spec = p.load_model(mid)
        with p.run("align", {"model_id": mid, "explanation_id": eid}) as run:
            new = p.save_model(module, spec, "copy", "rrr", mid, run.id, {"explanation_id": eid})
            run.results = {"model_id": new}
        with p.run("evaluate", {"model_ids": [mid, new]}) as run:
            for m, acc in ((mid, 0.5), (new, 0.75)):
                p.save_metrics(run.id, m, "test", {"accuracy": acc}, {"model": m, "accuracy": acc})
    return root


@pytest.fixture
def project(template, copy_of_project):
    with Project.open(copy_of_project(template, "p")) as p:
        yield p


def _ids(p: Project) -> tuple[int, int, int, int]:
    """(original model, aligned model, alignment set, explanation)."""
    eid = p.latest_id("explanations")
    row = p.explanation_row(eid)
    return int(row["model_id"]), p.latest_model("rrr"), int(row["set_id"]), eid


# -- samples ---------------------------------------------------------------------------------------------
def test_sample_counts_per_split(project):
    assert project.count_samples("train") == N_TRAIN == len(project.samples("train"))
    assert project.count_samples("test") == N_TEST
    assert project.count_samples("val") == 0
    assert project.count_samples() == N_TRAIN + N_TEST == len(project.samples())
    assert project.has_samples("train") and project.has_samples("test") and project.has_samples()
    assert not project.has_samples("val")
    assert project.split_counts() == {"test": N_TEST, "train": N_TRAIN}
    assert list(project.split_counts()) == ["test", "train"]  # alphabetical
    assert project.sample_splits() == ["test", "train"]


def test_masks_counted(project):
    with_mask = [r for r in project.samples() if r["mask_path"] is not None]
    assert project.count_with_masks() == len(with_mask) > 0
    assert project.has_masks()


def test_sample_rows_ids_labels_and_columns(project):
    rows = project.samples()
    ids = [r["id"] for r in rows]
    assert project.sample_ids() == ids
    assert project.first_sample_id() == ids[0] == min(ids)
    one = rows[3]
    assert dict(project.sample_row(one["id"])) == dict(one)
    assert project.sample_row(max(ids) + 1) is None
    picked = [ids[5], ids[0], max(ids) + 1]  # an unknown id is left out
    assert {k: dict(v) for k, v in project.sample_rows(picked).items()} == {
        ids[5]: dict(rows[5]),
        ids[0]: dict(rows[0]),
    }
    assert project.sample_labels(picked) == {ids[5]: rows[5]["label"], ids[0]: rows[0]["label"]}
    assert project.sample_labels([]) == {}
    many = project.sample_rows(ids * 9)  # more ids than SQLite binds at once
    assert sorted(many) == ids
    assert project.sample_columns() == [
        (r["id"], r["label"], r["split"], r["grp"] or "", r["path"]) for r in rows
    ]


def test_imports(project):
    imports = project.imports()
    assert len(imports) >= 1
    assert sum(r["n_imported"] for r in imports) == project.count_samples()
    assert [r["id"] for r in imports] == sorted(r["id"] for r in imports)


# -- runs --------------------------------------------------------------------------------------------------
def test_runs_by_kind_and_recent(project):
    every = project.runs()
    assert [r["id"] for r in every] == sorted(r["id"] for r in every)
    kinds = [r["kind"] for r in every]
    assert project.runs("critique") == [r for r in every if r["kind"] == "critique"]
    assert [r["kind"] for r in project.runs("critique")] == ["critique"]
    assert project.runs("nothing") == []
    recent = project.recent_runs(3)
    assert [r["id"] for r in recent] == [r["id"] for r in every][::-1][:3]
    assert len(project.recent_runs()) == min(10, len(every))
    assert [r["id"] for r in project.finished_runs("train")] == [
        r["id"] for r in reversed(every) if r["kind"] == "train" and r["status"] == "finished"
    ]
    assert project.finished_runs("spot_check") == []
    assert "train" in kinds and "evaluate" in kinds


def test_runs_without_the_failed(project):
    with pytest.raises(RuntimeError), project.run("critique", {"explanation_id": 1}):
        raise RuntimeError("boom")
    with_failed = project.runs("critique")
    assert with_failed[-1]["status"] == "failed"
    kept = project.runs("critique", include_failed=False)
    assert [r["id"] for r in kept] == [r["id"] for r in with_failed if r["status"] != "failed"]
    assert len(kept) == len(with_failed) - 1


def test_alignment_set_run(project):
    _, _, sid, _ = _ids(project)
    run = project.alignment_set_run(sid)
    assert run["kind"] == "sample"
    assert json.loads(run["results"])["n"] == N_SET
    assert project.alignment_set_run(sid + 100) is None


# -- model versions ------------------------------------------------------------------------------------
def test_models_by_kind_and_order(project):
    mid, new, _, _ = _ids(project)
    assert [r["id"] for r in project.models()] == [mid, new]
    assert [r["id"] for r in project.models(newest_first=True)] == [new, mid]
    assert [r["id"] for r in project.models("rrr", newest_first=True)] == [new]
    assert [r["id"] for r in project.models("erm")] == [mid]
    assert project.models("imported") == []
    assert project.latest_original_model() == mid
    assert project.first_unaligned_model() == mid
    assert json.loads(project.models("rrr")[0]["info"])["explanation_id"] == project.latest_id("explanations")


def test_model_queries_on_an_empty_project(new_small_demo):
    with Project.open(new_small_demo("empty", n_train=8)) as p:
        assert p.latest_original_model() is None and p.first_unaligned_model() is None
        assert p.models() == [] and p.models("rrr", newest_first=True) == []
        assert p.runs() == [] and p.recent_runs() == [] and p.finished_runs("train") == []


# -- alignment sets, explanations, verdicts ---------------------------------------------------------------
def test_alignment_set_queries(project):
    mid, _, sid, eid = _ids(project)
    members = project.alignment_members(sid)
    assert project.alignment_set_model(sid) == mid
    assert project.alignment_sample_ids(sid) == [m["sample_id"] for m in members]
    assert project.alignment_entropies(sid) == {m["sample_id"]: m["entropy"] for m in members}
    assert project.alignment_sample_ids(sid + 100) == [] and project.alignment_entropies(sid + 100) == {}
    with pytest.raises(ProjectError, match="No alignment set"):
        project.alignment_set_model(sid + 100)
    inside = members[0]["sample_id"]
    outside = next(i for i in project.sample_ids() if i not in project.alignment_sample_ids(sid))
    assert project.explains_sample(eid, inside)
    assert not project.explains_sample(eid, outside)
    assert not project.explains_sample(eid + 100, inside)


def test_explanation_model(project):
    mid, _, _, eid = _ids(project)
    assert project.explanation_model(eid) == mid == project.explanation_row(eid)["model_id"]
    with pytest.raises(ProjectError, match="No explanation"):
        project.explanation_model(eid + 100)


def test_verdict_queries(project):
    _, _, sid, eid = _ids(project)
    first = project.alignment_members(sid)[0]["sample_id"]
    assert project.has_verdicts(eid)
    assert project.has_verdicts(eid, "critic") and project.has_verdicts(eid, "expert")
    assert not project.has_verdicts(eid + 100) and not project.has_verdicts(eid + 100, "critic")
    experts = project.expert_verdict_rows(eid)
    assert [(r["sample_id"], r["segment"], r["verdict"]) for r in experts] == [(first, 0, "relevant")]
    assert {int(s) for s in project.expert_verdicts(eid)} == {first}
    critic = project.critic_verdicts(eid)
    assert critic and all(type(t) is tuple and len(t) == 3 for t in critic)
    effective = project.effective_verdicts(eid)
    for s, seg, v in critic:
        if (s, seg) != (first, 0):
            assert effective[s][seg] == {
                "verdict": v,
                "source": "critic",
                "author": effective[s][seg]["author"],
            }
    rows = project.sample_verdict_rows(eid, first)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert {r["source"] for r in rows} == {"critic", "expert"}
    assert all(r["sample_id"] == first for r in rows)
    assert project.sample_verdict_rows(eid, -1) == []


def test_accuracy_details(project):
    mid, new, _, _ = _ids(project)
    rows = project.accuracy_details("test", [mid, new])
    assert [(r["model_id"], json.loads(r["detail"])["accuracy"]) for r in rows] == [(mid, 0.5), (new, 0.75)]
    assert len({r["run_id"] for r in rows}) == 1
    assert project.accuracy_details("test", []) == []
    assert project.accuracy_details("train", [mid]) == []


# -- texts and the audit log ----------------------------------------------------------------------------
def test_chat_exchange_and_audit_queries(project):
    _, _, sid, eid = _ids(project)
    first = project.alignment_members(sid)[0]["sample_id"]
    assert project.has_audit_log()
    project.add_chat_exchange(
        eid,
        first,
        [("user", "why?", ""), ("assistant", "because", "m")],
        {"explanation_id": eid, "sample_id": first, "model": "m"},
        {"question": "q-hash", "answer": "a-hash"},
    )
    msgs = project.chat_messages(eid, first)
    assert [(m["role"], m["text"], m["model"]) for m in msgs] == [
        ("user", "why?", ""),
        ("assistant", "because", "m"),
    ]
    assert project.chat_messages(None, first) == []
    assert project.latest_audit_hashes("chat") == {"question": "q-hash", "answer": "a-hash"}
    assert project.latest_audit_hashes("no such action") is None
    entry = project.logged_entry("chat", "sample_id", first)
    assert entry["hashes"] == {"question": "q-hash", "answer": "a-hash"}
    assert entry["id"] == max(e["id"] for e in _audit_rows(project, "chat"))
    assert project.logged_entry("chat", "sample_id", -1) is None
    run_id = project.runs("critique")[-1]["id"]
    assert project.logged_entry("run_end", "run_id", run_id)["id"] > 0


def _audit_rows(project: Project, action: str) -> list[dict]:
    from lvlmva_desktop.core.store import audit

    return [e for e in audit.entries(project.db) if e["action"] == action]
