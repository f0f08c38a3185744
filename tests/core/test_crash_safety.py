"""Crash safety with real processes: the command line is SIGKILLed in the middle of a step, and the
reopened project is intact (integrity check, whole model versions and explanations, finished critiques
kept), the run is marked interrupted, and resuming it finishes the work.

Each kill happens at a moment the test has observed: critiques being saved, a training epoch under way, a
model or explanation file just before or just after its rename into place (inside the transaction that
records it), or a given step of the whole pipeline running.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from fixtures.crash import check_reopened, kill, last_progress, query, running_kinds, start, wait_for

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.pipeline import run_critique
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store import recovery
from lvlmva_desktop.core.store.project import Project

CPU = torch.device("cpu")
N_SET = 30  # images in the base project's alignment set


@pytest.fixture(scope="module")
def base(new_small_demo, explained_alignment_set):
    """A small demo project after steps 1-4: model 1, a 30-image alignment set, its explanation."""
    root = new_small_demo("crash", n_train=128)
    with Project.open(root) as p:
        explained_alignment_set(p, TrainSettings(epochs=2, batch_size=32), N_SET)
    return root


@pytest.fixture
def project(base, copy_of_project):
    return copy_of_project(base, "proj")


def _count(root, sql: str, args: tuple = ()) -> int:
    got = query(root, sql, args)
    return int(got[0][0]) if got else 0


def test_critique_killed_midway_keeps_finished_critiques_and_resumes_only_the_rest(
    project, base, tmp_path, capsys
):
    proc, _, err = start(
        ["critique", str(project), "--critic", "simulated", "--verdict-accuracy", "0.9", "--critic-seed", "3"]
        + ["--quiet"],
        tmp_path,
        pause="slow_critic:0.15",
    )
    wait_for(lambda: _count(project, "SELECT count(*) FROM critiques") >= 5, proc, err, what="5 critiques")
    kill(proc)
    before = _count(project, "SELECT count(*) FROM critiques")
    assert 5 <= before < N_SET  # demonstrably in the middle

    found = check_reopened(project)
    ((rid, kind),) = found["interrupted"]
    assert kind == "critique"
    with Project.open(project) as p:
        assert len(p.critiques(1)) == before  # every finished critique is there
        assert recovery.critiqued_samples(p, rid) == {r["sample_id"] for r in p.critiques(1)}
        old_settings = json.loads(p.get_run(rid)["settings"])

    assert main(["status", str(project)]) == 0
    out = capsys.readouterr().out
    assert f"Run {rid} (critique" in out and f"after {before} of {N_SET} images" in out
    assert "lvlmva resume" in out

    assert main(["resume", str(project), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"the remaining {N_SET - before}" in out and f"Resumed run {rid} as run" in out

    with Project.open(project) as p:
        new = p.db.execute("SELECT * FROM runs WHERE id > ? AND kind='critique'", (rid,)).fetchone()
        s, res = json.loads(new["settings"]), json.loads(new["results"])
        assert new["status"] == "finished" and s["resumes"] == rid
        assert s["critic"] == old_settings["critic"]  # the same simulated critic, rebuilt from the record
        assert res["n_images"] == N_SET - before and res["skipped_already_critiqued"] == before
        rows = p.critiques(1)
        assert len(rows) == N_SET and len({r["sample_id"] for r in rows}) == N_SET  # none twice, none lost
        assert recovery.resumable_runs(p) == []
        resumed = p.effective_verdicts(1)
    check_reopened(project)

    # the resumed critique decided exactly as one uninterrupted critique does
    whole = tmp_path / "whole"
    shutil.copytree(base, whole)
    with Project.open(whole) as p:
        run_critique(p, 1, GroundTruthCritic(error_rate=0.1, seed=3))
        assert p.effective_verdicts(1) == resumed


def test_training_killed_midway_keeps_the_last_model_and_is_rerun(project, tmp_path):
    proc, _, err = start(
        [
            "train",
            str(project),
            "--device",
            "cpu",
            "--set",
            "train.epochs=12",
            "--set",
            "train.batch_size=32",
        ],
        tmp_path,
    )

    def mid_training() -> bool:
        m = re.search(r"epoch (\d+)/12", last_progress(err))
        return running_kinds(project) == ["train"] and m is not None and 3 <= int(m.group(1)) < 12

    wait_for(mid_training, proc, err, what="epoch 3 of 12")
    kill(proc)
    found = check_reopened(project)
    ((rid, kind),) = found["interrupted"]
    assert kind == "train" and found["models"] == [1]  # the last finished version, whole and loadable

    with Project.open(project) as p:
        assert [r["id"] for r in recovery.resumable_runs(p)] == [rid]
        done = recovery.resume(p, None, CPU)
        assert done.kind == "train" and done.old_run == rid
        new = p.get_run(done.new_run)
        s = json.loads(new["settings"])
        assert new["status"] == "finished" and s["resumes"] == rid and s["train"]["epochs"] == 12
        assert p.model_row(done.result)["run_id"] == done.new_run
        assert len(json.loads(p.model_row(done.result)["info"])["history"]) == 12
        assert recovery.resumable_runs(p) == []
        with pytest.raises(Exception, match="No interrupted step"):
            recovery.resume(p, None, CPU)
    assert check_reopened(project)["models"] == [1, done.result]


@pytest.mark.parametrize(
    "step, pause",
    [
        ("train", "model:before"),
        ("train", "model:after"),
        ("explain", "explanation:before"),
        ("explain", "explanation:after"),
        ("align", "model:after"),
    ],
)
def test_kill_while_a_version_file_is_written_leaves_no_half_version(project, tmp_path, step, pause):
    """'before': the file is fully written under a temporary name; 'after': renamed into place, but the
    transaction recording it has not committed. Neither may show up as a version after the kill."""
    fast = ["--set", "train.epochs=1", "--set", "align.epochs=1", "--set", "explain.n_background=4"]
    proc, mark, err = start([step, str(project), "--quiet", "--device", "cpu", *fast], tmp_path, pause=pause)
    wait_for(mark.exists, proc, err, timeout=180, what=f"the pause at {pause}")
    kill(proc)
    folder = project / ("models" if pause.startswith("model") else "artifacts")
    left = sorted(f.name for f in folder.iterdir())
    if pause.endswith("before"):
        assert any(n.endswith(".tmp") for n in left)  # the killed write left its temporary file
    else:
        assert len(left) == 2  # the renamed file of the uncommitted version beside the base's one

    found = check_reopened(project)  # integrity, whole versions only, no leftovers
    assert found["models"] == [1] and found["explanations"] == [1]
    assert [k for _, k in found["interrupted"]] == [step]


@pytest.mark.slow
def test_whole_pipeline_killed_in_each_step(project, tmp_path):
    """`lvlmva run` killed once in each of its steps, on one project; then the last run is resumed."""
    small = ["--set", "train.epochs=2", "--set", "sampling.n=16", "--set", "explain.n_background=4"]
    small += ["--set", "align.epochs=2", "--set", "evaluate.n_attribution_images=16"]
    small += ["--set", "evaluate.min_group_size=1"]
    survived = []
    for target in ("train", "sample", "explain", "critique", "align", "evaluate"):
        proc, _, err = start(
            ["run", str(project), "--quiet", "--device", "cpu", "--critic", "simulated", *small],
            tmp_path,
            "slow_critic:0.1",
        )
        wait_for(lambda t=target: running_kinds(project) == ["pipeline", t], proc, err, what=f"step {target}")
        kill(proc)
        found = check_reopened(project)
        last_two = [k for _, k in found["interrupted"][-2:]]
        assert last_two == ["pipeline", target], (target, found["interrupted"])
        survived.append(target)
    assert survived == ["train", "sample", "explain", "critique", "align", "evaluate"]

    with Project.open(project) as p:
        # the step a pipeline was in belongs to it: the pipelines are what is left to resume
        pipelines = recovery.resumable_runs(p)
        assert [r["kind"] for r in pipelines] == ["pipeline"] * 6
        assert "interrupted in its evaluate step" in recovery.describe(p, pipelines[-1])
        done = recovery.resume(p, None, CPU)  # the latest
        new = p.get_run(done.new_run)
        assert (
            done.old_run == pipelines[-1]["id"] and new["kind"] == "pipeline" and new["status"] == "finished"
        )
        assert json.loads(new["settings"])["resumes"] == pipelines[-1]["id"]
        assert json.loads(new["settings"])["critic"]["kind"] == "ground_truth_simulated"
        assert done.result["critique"]["n_images"] == 16
        assert len(recovery.resumable_runs(p)) == 5
    check_reopened(project)


def test_the_safetensors_writers_own_temporary_file_is_removed_on_reopening(project):
    """A kill in the middle of safetensors' own write leaves ``models/.tmpXXXXXX`` (its temporary file
    before the rename); reopening removes it."""
    (project / "models" / ".tmpAb3dE9").write_bytes(b"half a model")
    (project / "artifacts" / ".tmpZz81Qx").write_bytes(b"half a map")
    found = check_reopened(project)
    assert not (project / "models" / ".tmpAb3dE9").exists()
    assert not (project / "artifacts" / ".tmpZz81Qx").exists()
    assert found["models"] == [1]


def test_the_row_ledger_of_an_import_that_was_rolled_back_is_removed_on_reopening(project):
    """The ledger file is written inside the import's transaction; when the transaction does not commit
    (a kill), the file names an import that does not exist and goes on reopening."""
    (project / "ledger" / "import-0099.json").write_text('{"columns": [], "rows": []}')
    (project / "ledger" / "import-0001.json.tmp").write_text("{")
    kept = sorted(f.name for f in (project / "ledger").iterdir() if not f.name.startswith("import-0099"))
    check_reopened(project)
    assert sorted(f.name for f in (project / "ledger").iterdir()) == [
        n for n in kept if not n.endswith(".tmp")
    ]
    assert (project / "ledger" / "import-0001.json").is_file()
