"""One critic factory: the command line, the window and resume build a critic through one code path.

The same choice made on the command line and in the window's Critique dialog gives critics with equal
identities (what a run records) and equal cache identities, equal to what the code before the factory
recorded; resume rebuilds, from what an interrupted run recorded, a critic equal to the one that ran;
a recorded critic kind this program does not know is refused in words.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lvlmva_desktop.cli import build_parser, main
from lvlmva_desktop.cli.critic_args import make_critic
from lvlmva_desktop.core.data.demo import create_demo_project
from lvlmva_desktop.core.method.critic import (
    ExpertCritic,
    GroundTruthCritic,
    UnknownCritic,
    critic_from_identity,
    critic_spec,
)
from lvlmva_desktop.core.method.explain import ExplainSettings
from lvlmva_desktop.core.method.pipeline import (
    explain_alignment_set,
    run_critique,
    sample_alignment_set,
    train_original,
)
from lvlmva_desktop.core.method.sampling import SamplingSettings
from lvlmva_desktop.core.method.segment import SegmentSettings
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store import recovery
from lvlmva_desktop.core.store.project import Project, ProjectError
from lvlmva_desktop.gui import workflow
from lvlmva_desktop.lvlm.config import LVLMConfig, open_backend
from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic
from lvlmva_desktop.lvlm.factory import critic_settings, lvlm_builder
from lvlmva_desktop.lvlm.prompts import TemplateSet

N = 2


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A small project with an explained alignment set of N images (copied by each test that writes)."""
    root = create_demo_project(tmp_path_factory.mktemp("factory") / "proj", n_train=48, n_test=8, size=32)
    cpu = torch.device("cpu")
    with Project.open(root) as p:
        mid = train_original(p, "small_cnn", TrainSettings(epochs=1, batch_size=16), cpu)
        sid = sample_alignment_set(p, mid, SamplingSettings(n=N), cpu)
        eid = explain_alignment_set(p, mid, sid, ExplainSettings(n_background=4), SegmentSettings(), cpu)
    return root, eid


@pytest.fixture
def project(explained, tmp_path):
    root, eid = explained
    copy = tmp_path / "proj"
    shutil.copytree(root, copy)
    with Project.open(copy) as p:
        yield p, eid


def _cli_critic(argv: list[str], p: Project, eid: int | None):
    args = build_parser().parse_args(["critique", str(p.root), *argv])
    return make_critic(args, p, eid)


def _interrupt_leaving_one(p: Project, rid: int) -> int:
    """Make finished critique run ``rid`` look interrupted before its last image; returns that image."""
    last, cid = p.db.execute(
        "SELECT sample_id, id FROM critiques WHERE run_id=? ORDER BY id DESC LIMIT 1", (rid,)
    ).fetchone()
    with p.transaction() as db:
        db.execute("DELETE FROM verdicts WHERE critique_id=?", (cid,))
        db.execute("DELETE FROM critiques WHERE id=?", (cid,))
        db.execute("UPDATE runs SET status=? WHERE id=?", (recovery.INTERRUPTED, rid))
    return int(last)


def _recorded_critic(p: Project, rid: int) -> dict:
    (settings,) = p.db.execute("SELECT settings FROM runs WHERE id=?", (rid,)).fetchone()
    return json.loads(settings)["critic"]


# -- the command line and the window, same choice ------------------------------------------------------
@pytest.mark.parametrize("accuracy", [0.87, 0.9, 1.0, 0.42])
def test_the_cli_and_the_window_build_the_same_simulated_critic(project, accuracy):
    p, eid = project
    cli = _cli_critic(
        ["--critic", "simulated", "--verdict-accuracy", str(accuracy), "--critic-seed", "0"], p, eid
    )
    window = workflow.make_critic(p, workflow.critic_choice("simulated", accuracy), eid)
    assert isinstance(cli, GroundTruthCritic) and isinstance(window, GroundTruthCritic)
    assert cli.identity() == window.identity()
    assert cli.name == window.name
    # what the command line recorded before the factory: the error rate rounded to 6 digits
    assert cli.identity() == GroundTruthCritic(error_rate=round(1.0 - accuracy, 6), seed=0).identity()


def test_the_cli_and_the_window_build_the_same_expert_critic(project):
    p, eid = project
    sample = int(p.explanation(eid)[1]["sample_ids"][0])
    p.set_expert_verdict(eid, sample, 0, "spurious")
    cli = _cli_critic(["--critic", "expert"], p, eid)
    window = workflow.make_critic(p, workflow.critic_choice("expert"), eid)
    assert isinstance(cli, ExpertCritic) and isinstance(window, ExpertCritic)
    assert cli.identity() == window.identity() == {"kind": "expert"}
    assert cli.verdicts == window.verdicts == {sample: {0: "spurious"}}


@pytest.mark.parametrize("one_call", [False, True])
def test_the_cli_and_the_window_build_the_same_lvlm_critic(tiny_lvlm_dirs, project, one_call):
    p, eid = project
    folder = str(tiny_lvlm_dirs["qwen2_5_vl"])
    cli = _cli_critic(["--critic", "lvlm", "--model-dir", folder, *(["--one-call"] * one_call)], p, eid)
    # the window: the LVLM configured in LVLM > Settings, loaded as session.use_lvlm loads it
    backend = open_backend(LVLMConfig(kind="local", folder=folder))
    options = {"one_call": one_call, "use_cache": True}  # what the Critique dialog gives
    window = workflow.make_critic(p, workflow.critic_choice("lvlm", 0.87, options), eid, backend)
    try:
        assert isinstance(cli, LVLMCritic) and isinstance(window, LVLMCritic)
        assert cli.identity() == window.identity()
        assert cli._cache_identity() == window._cache_identity()
        assert cli.cache is p and window.cache is p
        # the identity a run records is the one the code before the factory recorded
        before = LVLMCritic(backend, TemplateSet.for_project(p), CriticSettings(one_call=one_call), cache=p)
        assert window.identity() == before.identity()
        assert window.identity()["settings"]["one_call"] is one_call
    finally:
        cli.backend.close()
        backend.close()


def test_the_cli_records_its_lvlm_options_and_no_cache_turns_the_cache_off(tiny_lvlm_dirs, project):
    p, eid = project
    folder = str(tiny_lvlm_dirs["qwen2_5_vl"])
    argv = [
        "--critic",
        "lvlm",
        "--model-dir",
        folder,
        "--batch-size",
        "2",
        "--max-new-tokens",
        "16",
        "--no-cache",
    ]
    critic = _cli_critic(argv, p, eid)
    try:
        settings = critic.identity()["settings"]
        assert settings == {
            **CriticSettings().to_dict(),
            "batch_size": 2,
            "critic_max_new_tokens": 16,
            "use_cache": False,
        }
        assert critic.cache is None
    finally:
        critic.backend.close()


# -- resume rebuilds what ran ------------------------------------------------------------------------------
def test_resume_rebuilds_the_simulated_critic_that_ran(project):
    p, eid = project
    ran = _cli_critic(["--critic", "simulated", "--verdict-accuracy", "0.9", "--critic-seed", "3"], p, eid)
    run_critique(p, eid, ran)
    (rid,) = p.db.execute("SELECT max(id) FROM runs WHERE kind='critique'").fetchone()
    recorded = _recorded_critic(p, rid)
    assert recorded == ran.identity()
    rebuilt = recovery.critic_for(p, recorded, eid, None)
    assert isinstance(rebuilt, GroundTruthCritic) and rebuilt.identity() == ran.identity()
    assert rebuilt.name == ran.name

    last = _interrupt_leaving_one(p, rid)
    done = recovery.resume(p, rid, torch.device("cpu"))
    assert done.kind == "critique" and done.result["n_images"] == 1
    assert _recorded_critic(p, done.new_run) == recorded
    # the rebuilt critic judged the image left as the one that ran judged the others: same verdicts
    again = p.db.execute(
        "SELECT segment, verdict FROM verdicts v JOIN critiques c ON v.critique_id=c.id "
        "WHERE c.run_id=? AND c.sample_id=? ORDER BY segment",
        (done.new_run, last),
    ).fetchall()
    req = next(r for r in recovery_requests(p, eid) if r.sample_id == last)
    (fresh,) = list(ran.critique([req]))
    assert [(int(s), v) for s, v in again] == [(v.segment, v.verdict) for v in fresh.verdicts]


def recovery_requests(p: Project, eid: int):
    from lvlmva_desktop.core.method.pipeline import critique_requests

    return critique_requests(p, eid)


def test_resume_from_the_command_line_rebuilds_the_lvlm_critic_that_ran(tiny_lvlm_dirs, project, capsys):
    p, eid = project
    folder = str(tiny_lvlm_dirs["qwen2_5_vl"])
    argv = [
        "--critic",
        "lvlm",
        "--model-dir",
        folder,
        "--one-call",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "8",
    ]
    ran = _cli_critic(argv, p, eid)
    try:
        run_critique(p, eid, ran)
        (rid,) = p.db.execute("SELECT max(id) FROM runs WHERE kind='critique'").fetchone()
        recorded = _recorded_critic(p, rid)
        assert recorded == json.loads(json.dumps(ran.identity()))

        # the builder resume receives, on a model loaded again: an equal critic, equal cache keys
        rebuilt = recovery.critic_for(p, recorded, eid, lvlm_builder(p, backend=ran.backend))
        assert isinstance(rebuilt, LVLMCritic)
        assert rebuilt.identity() == ran.identity()
        assert rebuilt._cache_identity() == ran._cache_identity()
        req = recovery_requests(p, eid)[0]
        assert rebuilt.cache_key(req) == ran.cache_key(req)
    finally:
        ran.backend.close()

    _interrupt_leaving_one(p, rid)
    root = p.root
    p.close()
    capsys.readouterr()
    assert main(["resume", str(root), "--quiet", "--model-dir", folder]) == 0
    assert f"Resumed run {rid} as run" in capsys.readouterr().out
    with Project.open(root) as q:
        (new,) = q.db.execute("SELECT max(id) FROM runs WHERE kind='critique'").fetchone()
        assert new != rid and _recorded_critic(q, new) == recorded
        (results,) = q.db.execute("SELECT results FROM runs WHERE id=?", (new,)).fetchone()
        assert json.loads(results)["n_images"] == 1


# -- refused in words ----------------------------------------------------------------------------------
def test_an_unknown_recorded_critic_is_refused_in_words(project, capsys):
    p, eid = project
    with pytest.raises(UnknownCritic, match="critic kind 'oracle' is not one this program knows"):
        critic_from_identity({"kind": "oracle"}, p, eid)
    with pytest.raises(UnknownCritic, match="No critic is recorded"):
        critic_from_identity({}, p, eid)
    with pytest.raises(ValueError, match="Unknown critic 'oracle'; choose one of lvlm, simulated, expert"):
        workflow.critic_choice("oracle")

    p.db.execute(
        "INSERT INTO runs (id, kind, status, started, settings) VALUES (900, 'critique', ?, 0, ?)",
        (recovery.INTERRUPTED, json.dumps({"explanation_id": eid, "critic": {"kind": "oracle"}})),
    )
    with pytest.raises(
        ProjectError, match=r"critic of this step \(oracle\) cannot be rebuilt.*Start it again"
    ):
        recovery.resume(p, 900, torch.device("cpu"))
    root = p.root
    p.close()
    capsys.readouterr()
    assert main(["resume", str(root), "--run", "900", "--quiet"]) == 2
    assert "(oracle) cannot be rebuilt" in capsys.readouterr().err


def test_an_lvlm_critic_without_its_model_is_refused_in_words(project):
    p, eid = project
    with pytest.raises(ValueError, match="needs its vision-language model"):
        critic_from_identity(critic_spec("lvlm"), p, eid)
    with pytest.raises(ProjectError, match="say which LVLM to use"):
        recovery.critic_for(p, {"kind": "lvlm", "settings": {}}, eid, None)
    with pytest.raises(ValueError, match="between 0 and 1"):
        workflow.critic_choice("simulated", 1.5)


def test_settings_a_newer_version_recorded_are_left_out():
    s = critic_settings({"one_call": True, "batch_size": 3, "beam_width": 4})
    assert s == CriticSettings(one_call=True, batch_size=3)
