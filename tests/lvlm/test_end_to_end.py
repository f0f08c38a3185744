"""The whole LVLM path with a real local model folder: critic -> judge -> verdict -> mask -> RRR.

A tiny Qwen2.5-VL-shaped model is built from its config with a locally trained tokenizer, overfit for a
few seconds to answer one fixed verdict JSON, saved as a folder and then used exactly as a user's folder
would be: through the command line, with real generation on CPU.
"""

import json

import pytest
from fixtures.tiny_lvlm import make_tiny_lvlm, overfit_for_project
from test_cli import FAST, explained_cli_project

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.method.pipeline import critique_requests
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.lvlm.critic import CriticSettings, LVLMCritic

TARGET = json.dumps(
    {
        "segments": [
            {"segment": 1, "verdict": "relevant", "reason": "lesion"},
            {"segment": 2, "verdict": "spurious", "reason": "patch"},
            {"segment": 3, "verdict": "relevant", "reason": "lesion"},
            {"segment": 4, "verdict": "relevant", "reason": "border"},
        ]
    }
)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return explained_cli_project(tmp_path_factory.mktemp("e2e"), FAST)


@pytest.fixture(scope="module")
def overfit_model(project, tmp_path_factory):
    """A folder that answers TARGET to critic, judge and chat prompts of this project's shape."""
    return overfit_for_project(project, tmp_path_factory.mktemp("lvlm") / "qwen-tiny", TARGET)


def test_critique_align_and_chat_with_a_real_local_model(project, overfit_model, capsys):
    proj, model = str(project), str(overfit_model)
    assert main(["lvlm-check", "--model-dir", model]) == 0
    assert "health check passed" in capsys.readouterr().out

    assert main(["critique", proj, "--quiet", "--critic", "lvlm", "--model-dir", model]) == 0
    out = capsys.readouterr().out
    assert "LVLM critic (qwen2_5_vl" in out and "0 from the cache" in out
    with Project.open(project) as p:
        eid = p.latest_id("explanations")
        eff = p.effective_verdicts(eid)
        assert len(eff) == 8
        for per in eff.values():
            assert {s: d["verdict"] for s, d in per.items()} == {
                0: "relevant",
                1: "spurious",
                2: "relevant",
                3: "relevant",
            }
        crit = p.critiques(eid)[0]
        raw = json.loads(crit["raw"])
        assert raw["parse"] == "json" and raw["calls"] == 2 and raw["model"]["kind"] == "local"
        assert raw["model"]["trust_remote_code"] is False and "critic.j2" in raw["templates"]
        run = p.db.execute("SELECT * FROM runs WHERE kind='critique' ORDER BY id DESC").fetchone()
        assert run["status"] == "finished"
        assert json.loads(run["settings"])["critic"]["model"]["folder_hash"] == raw["model"]["folder_hash"]
        sample = sorted(eff)[0]

    # unchanged rerun: served from the cache, no generation
    assert main(["critique", proj, "--quiet", "--critic", "lvlm", "--model-dir", model]) == 0
    again = capsys.readouterr().out
    assert "LVLM: 0 calls" in again and "8 from the cache" in again

    # the expert overrules one verdict; the mask and the RRR run follow the expert
    assert main(["verdict", proj, "--sample", str(sample), "--segment", "2", "--set", "relevant"]) == 0
    assert main(["align", proj, "--quiet", "--device", "cpu", *FAST]) == 0
    with Project.open(project) as p:
        run = p.db.execute("SELECT * FROM runs WHERE kind='align' ORDER BY id DESC").fetchone()
        assert run["status"] == "finished"
        stats = json.loads(run["results"])["mask_stats"]
        assert stats["spurious_segments"] == 7 and stats["expert_overrides"] == 1
        models = p.models()
        assert models[-1]["parent_id"] == models[0]["id"]

    capsys.readouterr()
    assert (
        main(["ask", proj, "--sample", str(sample), "Why is segment 2 spurious?", "--model-dir", model]) == 0
    )
    answer = capsys.readouterr().out
    assert '"verdict": "spurious"' in answer
    with Project.open(project) as p:
        msgs = p.chat_messages(p.latest_id("explanations"), sample)
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        assert msgs[1]["text"] == answer.strip()

    assert main(["summary", proj, "--class", "benign", "--model-dir", model]) == 0
    assert '"segments"' in capsys.readouterr().out


def test_prompts_are_listed_exported_edited_and_recorded(project, tmp_path, capsys):
    proj = str(project)
    assert main(["prompts", proj]) == 0
    listing = capsys.readouterr().out
    assert "critic.j2" in listing and "judge_examples.json" in listing
    assert main(["prompts", proj, "--export", str(tmp_path / "p")]) == 0
    edited = (tmp_path / "p" / "critic.j2").read_text() + "\nKeep each step short."
    (tmp_path / "p" / "critic.j2").write_text(edited)
    assert main(["prompts", proj, "--load", "critic.j2", str(tmp_path / "p" / "critic.j2")]) == 0
    assert "critic.j2: version 2" in capsys.readouterr().out
    (tmp_path / "bad.j2").write_text("{{ unknown_thing }}")
    assert main(["prompts", proj, "--load", "critic.j2", str(tmp_path / "bad.j2")]) == 2
    assert "cannot be rendered" in capsys.readouterr().err
    assert main(["prompts", proj, "--show", "critic.j2"]) == 0
    assert capsys.readouterr().out.strip().endswith("Keep each step short.")


def test_a_random_model_never_crashes_a_run(project, tmp_path, capsys):
    folder = make_tiny_lvlm("qwen2_5_vl", tmp_path / "random", seed=3)
    args = ["critique", str(project), "--quiet", "--critic", "lvlm", "--model-dir", str(folder), "--no-cache"]
    args += ["--max-new-tokens", "48"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "undecided" in out
    with Project.open(project) as p:
        run = p.db.execute("SELECT * FROM runs WHERE kind='critique' ORDER BY id DESC").fetchone()
        assert run["status"] == "finished"
        res = json.loads(run["results"])
        assert res["n_images"] == 8
        # garbage is kept for the expert, and every segment it could not read counts as undecided
        assert res["lvlm"]["undecided_by_parser"] == res["verdicts"]["undecided"] > 0
        raw = json.loads(p.critiques(p.latest_id("explanations"))[-1]["raw"])
        assert raw["retried"] and isinstance(raw["critic_output"], str)


@pytest.mark.parametrize("family", ["idefics3", "llava", "gemma3"])
def test_every_family_critiques_from_the_command_line(project, tiny_lvlm_dirs, family, capsys):
    """A folder of each family works through the CLI with no family-specific code in the caller."""
    args = [
        "critique",
        str(project),
        "--quiet",
        "--critic",
        "lvlm",
        "--model-dir",
        str(tiny_lvlm_dirs[family]),
    ]
    assert main([*args, "--no-cache", "--max-new-tokens", "24", "--one-call"]) == 0
    assert f"LVLM critic ({family}" in capsys.readouterr().out
    with Project.open(project) as p:
        run = p.db.execute("SELECT * FROM runs WHERE kind='critique' ORDER BY id DESC").fetchone()
        assert run["status"] == "finished" and json.loads(run["results"])["n_images"] == 8


def test_local_backend_needs_no_network(project, tiny_lvlm_dirs, monkeypatch):
    """With every outbound connection refused, a local folder still loads and critiques."""
    import socket

    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the code path itself must not reach out
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    from lvlmva_desktop.lvlm.local import LocalBackend

    be = LocalBackend(tiny_lvlm_dirs["qwen2_5_vl"], device="cpu")
    with Project.open(project) as p:
        reqs = critique_requests(p, p.latest_id("explanations"))[:2]
    settings = CriticSettings(use_cache=False, critic_max_new_tokens=16, judge_max_new_tokens=16)
    crits = list(LVLMCritic(be, settings=settings).critique(reqs))
    assert len(crits) == 2 and be.health_check().ok
    assert attempts == []


def test_bad_lvlm_settings_and_paths_are_one_error_line(project, tmp_path, capsys):
    cfg = tmp_path / "lvlm.json"
    for content in ("[1]", '{"kind": "local", "folder": 3}', '{"kind": "local", "colour": "red"}'):
        cfg.write_text(content)
        assert main(["lvlm-check", "--lvlm-config", str(cfg)]) == 2
        assert capsys.readouterr().err.startswith("error:")
    assert main(["lvlm-check", "--lvlm-config", str(tmp_path)]) == 2  # a folder, not a file
    assert main(["prompts", str(project), "--load", "critic.j2", str(tmp_path)]) == 2
    assert main(["ask", str(project), "--sample", "1", "  ", "--model-dir", str(tmp_path)]) == 2
    assert "question is empty" in capsys.readouterr().err


def test_views_accept_grey_images_and_maps_at_another_resolution():
    import torch

    from lvlmva_desktop.lvlm.render import render_views

    seg = torch.zeros(8, 8, dtype=torch.long)
    seg[:, 4:] = 1
    for image in (torch.rand(1, 16, 16), torch.rand(2, 16, 16), torch.rand(3, 16, 16)):
        a, b, c = render_views(image, seg, torch.rand(8, 8), min_side=64)
        assert a.size == b.size == c.size == (64, 64)
