"""`lvlmva spot-check`: the blind check of the critic from the command line, answered by a simulated expert
(the ground-truth masks) and by a person typing on the terminal; the result is stored, logged and reported."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import _generate, explained_cli_project

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.method.spotcheck import NO_MASKS, SPOT_CHECK, SpotItem, item_pictures
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.project import Project

FAST = ["--set", "train.epochs=1", "--set", "sampling.n=80", "--set", "explain.n_background=4"]
ACCURACY = re.compile(r"Verdict accuracy: (\d\.\d+) \(95% Wilson interval (\d\.\d+) to (\d\.\d+)\)")


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> Path:
    """A project with artefact masks after steps 1-4 (160 training images, an 80-image alignment set)."""
    return explained_cli_project(tmp_path_factory.mktemp("spotcli"), FAST, n_train=160, n_test=40)


@pytest.fixture
def critiqued(tmp_path, explained, capsys) -> Path:
    shutil.copytree(explained.parent, tmp_path / "copy")  # the project with its images beside it
    proj = tmp_path / "copy" / "proj"
    capsys.readouterr()
    assert main(["spot-check", str(proj), "--expert", "simulated"]) == 2  # nothing to check yet
    assert "has no critique yet" in capsys.readouterr().err
    assert (
        main(["critique", str(proj), "--quiet", "--critic", "simulated", "--verdict-accuracy", "0.87"]) == 0
    )
    capsys.readouterr()
    return proj


def test_simulated_expert_finds_the_critics_accuracy_and_the_report_shows_it(critiqued, tmp_path, capsys):
    assert main(["spot-check", str(critiqued), "--expert", "simulated", "--n", "240", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    acc, lo, hi = (float(x) for x in ACCURACY.search(out).groups())
    assert lo <= 0.87 <= hi  # the simulated critic's accuracy lies in the interval
    assert hi - lo < 0.12  # and the interval says something
    assert "expert: simulated from the ground-truth artefact masks [benchmark only]" in out.lower()
    assert 'on the critic\'s "spurious" verdicts' in out and 'on the critic\'s "relevant" verdicts' in out
    assert "What it means: At verdict accuracy" in out and "worst-group-accuracy gap" in out
    run_id = int(re.search(r"Stored as run (\d+) \(spot_check\)", out).group(1))
    with Project.open(critiqued, read_only=True) as p:
        row = p.get_run(run_id)
        assert row["kind"] == SPOT_CHECK and row["status"] == "finished"
        settings, results = json.loads(row["settings"]), json.loads(row["results"])
        assert settings["seed"] == 0 and settings["n"] == 240 and "simulated" in settings["expert"]
        assert results["accuracy"] == pytest.approx(acc, abs=5e-4)
        items = [SpotItem(**d) for d in settings["sample"]]
        eid = settings["explanation_id"]
        experts = p.expert_verdicts(eid)
        assert sum(len(v) for v in experts.values()) == 240 == results["expert_verdicts_written"]
        assert all(experts[i.sample_id][i.segment] == a for i, a in zip(items, results["answers"]))
        # the critic was wrong where the expert (the ground truth) disagreed with it
        wrong = sum(i.critic_verdict != a for i, a in zip(items, results["answers"]))
        assert wrong == results["n_counted"] - results["n_agreed"] > 0
        entry = [e for e in audit.entries(p.db) if e["action"] == SPOT_CHECK][-1]
        assert entry["params"]["run_id"] == run_id
        assert entry["hashes"] == {
            "sample": audit.json_hash([i.key() for i in items]),
            "answers": audit.json_hash(results["answers"]),
        }
    assert main(["audit", str(critiqued), "--verify", "--quick", "--quiet"]) == 0
    assert "content intact" in capsys.readouterr().out
    assert main(["report", str(critiqued), "--out", str(tmp_path / "audit"), "--no-pdf", "--quiet"]) == 0
    page = (tmp_path / "audit" / "report.html").read_text(encoding="utf-8")
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert f"Verdict accuracy {acc:.3f} (95% Wilson interval {lo:.2f} to {hi:.2f})" in text
    assert f"Run {run_id} ·" in text and "Proven from the data" in text


def test_a_person_answers_on_the_terminal(critiqued, monkeypatch, capsys):
    # s; a typo then r; back twice; u, r; quit: answers "undecided", "relevant" on the first two segments
    monkeypatch.setattr("sys.stdin", io.StringIO("s\nx\nr\nb\nb\nu\nr\nq\n"))
    assert main(["spot-check", str(critiqued), "--n", "6", "--seed", "11"]) == 0
    out = capsys.readouterr().out
    assert "please answer s, r, u, b or q" in out
    shown = [line for line in out.splitlines() if re.match(r".*\[\d of 6\] image \d+", line)]
    assert [re.search(r"\[(\d) of 6\]", s).group(1) for s in shown] == ["1", "2", "3", "2", "1", "2", "3"]
    # what is shown per segment never depends on the critic's verdict: one question, the class and image
    assert {re.sub(r"image \d+ \(class \w+\)", "IMAGE", s.split("] ")[-1]) for s in shown} == {
        "IMAGE: is the outlined region (right) relevant evidence for that class, or a spurious feature?"
    }
    with Project.open(critiqued, read_only=True) as p:
        row = p.db.execute(
            "SELECT * FROM runs WHERE kind=? ORDER BY id DESC LIMIT 1", (SPOT_CHECK,)
        ).fetchone()
        settings, results = json.loads(row["settings"]), json.loads(row["results"])
        assert results["answers"] == ["undecided", "relevant"]
        assert (
            results["n_answered"] == 2
            and results["n_counted"] == 1
            and results["expert_verdicts_written"] == 1
        )
        items = [SpotItem(**d) for d in settings["sample"]]
        experts = p.expert_verdicts(settings["explanation_id"])
        assert experts == {items[1].sample_id: {items[1].segment: "relevant"}}
        # the pictures written are the segments asked about, without anything of the critic's
        folder = next((critiqued / "spot-check").iterdir())
        assert sorted(f.name for f in folder.iterdir()) == ["001.png", "002.png", "003.png"]
        want = item_pictures(p, settings["explanation_id"], items[:3])
        for k, pic in enumerate(want, 1):
            assert np.array_equal(
                np.asarray(Image.open(folder / f"{k:03d}.png").convert("RGB")), np.asarray(pic)
            )
    assert "4 of 6 segments were not answered" in out
    # the end of the input stops as q does; nothing answered, nothing stored
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["spot-check", str(critiqued), "--n", "3"]) == 0
    assert "Nothing was answered; nothing was stored." in capsys.readouterr().out


def test_simulated_expert_needs_masks(tmp_path, capsys):
    data, proj = tmp_path / "data", tmp_path / "proj"
    _generate(data, n_train=160, n_test=40)
    with open(data / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)]
    with open(data / "nomask.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "label", "group", "split"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in ("path", "label", "group", "split")})
    assert (
        main(["import", str(proj), "--csv", str(data / "nomask.csv"), "--quiet", "--image-size", "32"]) == 0
    )
    capsys.readouterr()
    assert main(["spot-check", str(proj), "--expert", "simulated"]) == 2
    assert NO_MASKS in capsys.readouterr().err
    assert main(["spot-check", str(proj)]) == 2
    assert "has no explanation yet" in capsys.readouterr().err
