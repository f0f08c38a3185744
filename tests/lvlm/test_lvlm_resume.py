"""An LVLM critique killed midway (a real process, SIGKILL) is resumed from the command line: without the
LVLM named again it says so in one line; with it, only the images left are critiqued, with the critic
settings the interrupted run recorded."""

from __future__ import annotations

import json

import torch
from fixtures.crash import check_reopened, kill, query, start, wait_for

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.data.demo import create_demo_project
from lvlmva_desktop.core.method.explain import ExplainSettings
from lvlmva_desktop.core.method.pipeline import explain_alignment_set, sample_alignment_set, train_original
from lvlmva_desktop.core.method.sampling import SamplingSettings
from lvlmva_desktop.core.method.segment import SegmentSettings
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store.project import Project

N = 12


def test_an_interrupted_lvlm_critique_resumes_with_the_lvlm_named_again(tiny_lvlm_dirs, tmp_path, capsys):
    model = str(tiny_lvlm_dirs["qwen2_5_vl"])
    root = create_demo_project(tmp_path / "proj", n_train=64, n_test=16, size=32)
    cpu = torch.device("cpu")
    with Project.open(root) as p:
        mid = train_original(p, "small_cnn", TrainSettings(epochs=1, batch_size=32), cpu)
        sid = sample_alignment_set(p, mid, SamplingSettings(n=N), cpu)
        explain_alignment_set(p, mid, sid, ExplainSettings(n_background=4), SegmentSettings(), cpu)

    argv = ["critique", str(root), "--critic", "lvlm", "--model-dir", model, "--batch-size", "1"]
    proc, _, err = start([*argv, "--max-new-tokens", "8", "--quiet"], tmp_path, pause="slow_lvlm_critic:0.3")
    wait_for(lambda: query(root, "SELECT count(*) FROM critiques")[0][0] >= 2, proc, err, what="2 critiques")
    kill(proc)
    found = check_reopened(root)
    ((rid, kind),) = found["interrupted"]
    done_before = query(root, "SELECT count(*) FROM critiques")[0][0]
    assert kind == "critique" and 2 <= done_before < N

    capsys.readouterr()  # the fixture's own output (writing the tiny model)
    assert main(["resume", str(root), "--quiet"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "used an LVLM critic: say which LVLM to use (--model-dir" in err_lines[0]

    assert main(["resume", str(root), "--quiet", "--model-dir", model]) == 0
    assert f"Resumed run {rid} as run" in capsys.readouterr().out
    (old,) = query(root, "SELECT settings FROM runs WHERE id=?", (rid,))
    (new,) = query(root, "SELECT settings, results, status FROM runs WHERE kind='critique' AND id>?", (rid,))
    old_s, new_s, res = json.loads(old[0]), json.loads(new[0]), json.loads(new[1])
    assert new[2] == "finished" and new_s["resumes"] == rid
    assert new_s["critic"]["kind"] == "lvlm" and new_s["critic"]["settings"] == old_s["critic"]["settings"]
    assert new_s["critic"]["settings"]["critic_max_new_tokens"] == 8
    assert new_s["critic"]["settings"]["batch_size"] == 1
    assert res["n_images"] == N - done_before and res["lvlm"]["calls"] >= N - done_before
    samples = query(root, "SELECT sample_id FROM critiques")
    assert len(samples) == len(set(samples)) == N
