"""The report proves the data, not only the log (core/store/integrity.py): each tampering with a table or file,
done as a hostile tester would (SQL and file edits only), is found by `audit --verify`, named, and refused
by the step that would use it; an untouched project verifies as intact."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.pipeline import (
    EvalSettings,
    align_model,
    evaluate_models,
    run_critique,
    train_original,
)
from lvlmva_desktop.core.method.train import AlignSettings, TrainSettings
from lvlmva_desktop.core.store.integrity import verify_content
from lvlmva_desktop.core.store.project import Project, ProjectError, sha256_file
from lvlmva_desktop.report.document import write_report

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def finished(new_small_demo, explained_alignment_set):
    """A small demo after the whole method, with an expert verdict and edited descriptions."""
    root = new_small_demo("integrity")
    with Project.open(root) as p:
        mid, sid, eid = explained_alignment_set(p, TrainSettings(epochs=1), 10)
        run_critique(p, eid, GroundTruthCritic(error_rate=0.13))
        first = p.alignment_members(sid)[0]["sample_id"]
        p.set_expert_verdict(eid, first, 0, "spurious")
        new = align_model(p, mid, eid, AlignSettings(epochs=1, lambda_=1.0), CPU)
        evaluate_models(p, [mid, new], EvalSettings(n_attribution_images=4, min_group_size=1), CPU)
        p.set_class_descriptions({c: f"what {c} looks like" for c in p.classes})
    return root


@pytest.fixture
def project(finished, copy_of_project):
    """A copy to tamper with (the images live inside the demo folder, so they travel with it)."""
    return copy_of_project(finished, "copy")


def _sql(root, query: str, args: tuple = ()) -> None:
    db = sqlite3.connect(root / "project.sqlite")
    db.execute(query, args)
    db.commit()
    db.close()


def _problems(root) -> list[str]:
    with Project.open(root, read_only=True) as p:
        v = verify_content(p)
    return [x for c in v.checks for x in c.problems]


def _refused(fn, *words: str) -> str:
    with pytest.raises(ProjectError) as e:
        fn()
    for w in words:
        assert w in str(e.value), str(e.value)
    return str(e.value)


def test_an_untouched_project_verifies_and_its_report_says_what_was_verified(project, tmp_path, capsys):
    with Project.open(project, read_only=True) as p:
        v = verify_content(p)
    assert v.ok, v.to_dict()
    counts = {c.what: c.checked for c in v.checks}
    assert counts["images and labels"] == 144 and counts["model versions"] == 2
    assert (
        counts["the expert's verdicts"] == 1 and counts["metrics"] == 2 and counts["class descriptions"] == 2
    )
    assert main(["audit", str(project), "--verify", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "content intact" in out and "ok   images and labels: 144 verified" in out
    with Project.open(project) as p:
        write_report(p, tmp_path / "report", CPU, pdf=False)
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "Content verified against the log" in page and "images and labels" in page


def test_edited_metrics_are_found_and_no_report_is_written_from_them(project, tmp_path, capsys):
    with Project.open(project, read_only=True) as p:
        row = p.db.execute("SELECT id, detail FROM metrics WHERE name='accuracy' ORDER BY id DESC").fetchone()
    detail = json.loads(row["detail"])
    detail["accuracy"], detail["worst_group_accuracy"] = 0.97, 0.95
    _sql(project, "UPDATE metrics SET detail=? WHERE id=?", (json.dumps(detail), row["id"]))
    _sql(project, "UPDATE metrics SET value=0.97 WHERE id=?", (row["id"],))
    found = _problems(project)
    assert any("accuracy is 0.97 in the table" in x for x in found)
    assert any("the detailed metrics (per group) were changed" in x for x in found)
    with Project.open(project) as p:
        _refused(lambda: write_report(p, tmp_path / "r", CPU, pdf=False), "The report was not written")
    assert not (tmp_path / "r" / "report.html").exists()
    assert main(["audit", str(project), "--verify", "--quiet"]) == 1
    assert "content NOT intact" in capsys.readouterr().out


def test_a_changed_critic_verdict_is_found_and_alignment_refuses_it(project):
    _sql(
        project,
        "UPDATE verdicts SET verdict='spurious' WHERE id=(SELECT min(id) FROM verdicts "
        "WHERE source='critic' AND verdict='relevant')",
    )
    assert any("the critic's verdicts for image" in x for x in _problems(project))
    with Project.open(project) as p:
        _refused(lambda: align_model(p, 1, 1, AlignSettings(epochs=1), CPU), "are not the ones recorded")


def test_a_changed_expert_verdict_is_found_and_alignment_refuses_it(project):
    _sql(project, "UPDATE verdicts SET verdict='relevant' WHERE source='expert'")
    assert any(
        "the expert's verdict was changed from 'spurious' to 'relevant'" in x for x in _problems(project)
    )
    with Project.open(project) as p:
        _refused(lambda: align_model(p, 1, 1, AlignSettings(epochs=1), CPU), "are not the ones recorded")


def test_flipped_labels_are_named_and_training_refuses_them(project):
    _sql(project, "UPDATE samples SET label=1-label WHERE id IN (3, 5)")
    found = _problems(project)
    assert any(x.startswith("image 3: label changed from") for x in found)
    assert any(x.startswith("image 5: label changed from") for x in found)
    with Project.open(project) as p:
        _refused(lambda: train_original(p, "small_cnn", TrainSettings(epochs=1), CPU), "changed afterwards")


def test_a_sample_row_no_import_added_is_found(project):
    _sql(
        project,
        "INSERT INTO samples (path, label, split, grp, mask_path, height, width, sha256) "
        "SELECT path || '?', label, split, grp, mask_path, height, width, sha256 FROM samples WHERE id=1",
    )
    assert any("is in the samples table but no import added it" in x for x in _problems(project))


def test_a_replaced_explanation_file_is_found_and_refused(project):
    with Project.open(project, read_only=True) as p:
        row = p.db.execute("SELECT path FROM explanations WHERE id=1").fetchone()
    path = project / row["path"]
    t = load_file(str(path))
    t["segments"] = torch.zeros_like(t["segments"])  # every pixel in segment 1
    save_file(t, str(path))
    _sql(project, "UPDATE explanations SET sha256=? WHERE id=1", (sha256_file(path),))  # and the table
    assert any("explanation 1: the file" in x and "not the one recorded" in x for x in _problems(project))
    with Project.open(project) as p:
        _refused(lambda: p.explanation(1), "not the one written when it was made")


def test_a_replaced_decoded_image_cache_is_found_and_not_used(project):
    cache = sorted((project / "cache").glob("data-train-*.safetensors"))[0]
    t = load_file(str(cache))
    original = t["x"].clone()
    t["x"] = torch.zeros_like(t["x"])
    save_file(t, str(cache))
    assert any("is not the decoding recorded in the audit log" in x for x in _problems(project))
    with Project.open(project) as p:
        x = p.load_split("train").x
    assert torch.equal(x, original)  # decoded again from the images, not read from the replaced file


def test_image_files_replaced_after_import_are_found_and_not_trained_on(project):
    with Project.open(project, read_only=True) as p:
        rows = p.samples("train")[:30]
    for r in rows:
        path = (project / r["path"]).resolve()
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)  # grey
    for f in (project / "cache").glob("*"):
        f.unlink()  # no decoding kept from before
    found = _problems(project)
    assert sum("changed after import (its content hash differs)" in x for x in found) == 20  # listed
    with Project.open(project, read_only=True) as p:
        v = verify_content(p)
    (images,) = [c for c in v.checks if c.what == "images and labels"]
    assert len(images.problems) + images.more == 30
    with Project.open(project) as p:
        _refused(
            lambda: train_original(p, "small_cnn", TrainSettings(epochs=1), CPU),
            "30 train image file(s) changed after they were imported",
        )


def test_a_model_file_replaced_with_its_sha256_in_the_table_is_found_and_refused(project):
    with Project.open(project, read_only=True) as p:
        row = p.db.execute("SELECT path FROM models WHERE id=1").fetchone()
    path = project / row["path"]
    path.chmod(0o644)
    t = load_file(str(path))
    t = {k: (v * 0 if v.is_floating_point() else v) for k, v in t.items()}
    save_file(t, str(path))
    _sql(project, "UPDATE models SET sha256=? WHERE id=1", (sha256_file(path),))
    assert any("model version 1: the file" in x for x in _problems(project))
    with Project.open(project) as p:
        _refused(lambda: p.load_model(1), "not the one recorded in the audit log")


def test_edited_runs_critiques_sets_and_descriptions_are_found(project):
    _sql(
        project,
        "UPDATE runs SET settings=replace(settings, '\"epochs\": 1', '\"epochs\": 50') WHERE kind='train'",
    )
    _sql(project, "UPDATE critiques SET text='All good.' WHERE id=1")
    _sql(project, "UPDATE alignment_members SET sample_id=sample_id+1 WHERE set_id=1 AND rank=0")
    _sql(
        project,
        "UPDATE class_descriptions SET descriptions=replace(descriptions, 'what', 'How') WHERE version=2",
    )
    found = _problems(project)
    assert any(x.startswith("run 1 (train): its settings were changed") for x in found)
    assert any("the critic's text for image" in x for x in found)
    assert any("alignment set 1: its list of images was changed" in x for x in found)
    assert any("version 2: the description of" in x for x in found)
