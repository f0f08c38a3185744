import json
import os
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image

from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method.critic import Critique, SegmentVerdict
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.store import project as project_mod
from lvlmva_desktop.core.store.project import Project, ProjectError


def _dataset(tmp_path, n=6):
    d = tmp_path / "data"
    d.mkdir()
    rows = ["path,label,group,split,mask"]
    for i in range(n):
        a = np.full((10, 10, 3), 40 * (i % 3), np.uint8)
        Image.fromarray(a).save(d / f"img{i}.png")
        mask = ""
        if i % 2 == 0:
            m = np.zeros((10, 10), np.uint8)
            m[:3, :3] = 255
            Image.fromarray(m).save(d / f"m{i}.png")
            mask = f"m{i}.png"
        rows.append(
            f"img{i}.png,{'ab'[i % 2]},{'tag' if mask else 'no_tag'},{'train' if i < 4 else 'test'},{mask}"
        )
    (d / "manifest.csv").write_text("\n".join(rows) + "\n")
    return d / "manifest.csv"


@pytest.fixture
def proj(tmp_path):
    rep = import_csv_manifest(_dataset(tmp_path))
    p = Project.create(tmp_path / "proj", "t", rep.classes, (8, 8), 3)
    assert p.add_samples(rep) == 6
    yield p
    p.close()


def test_create_open_and_relative_paths_survive_a_move(proj, tmp_path):
    assert all(not r["path"].startswith("/") for r in proj.samples())
    data = proj.load_split("train")
    assert data.x.shape == (4, 3, 8, 8) and data.has_mask.tolist() == [True, False, True, False]
    proj.close()
    # move project and data together: paths are relative, so it still opens and decodes
    shutil.move(str(tmp_path), str(tmp_path.parent / (tmp_path.name + "_moved")))
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    with Project.open(moved / "proj") as p2:
        shutil.rmtree(moved / "proj" / "cache")
        (moved / "proj" / "cache").mkdir()
        assert torch.equal(p2.load_split("train").x, data.x)
    shutil.move(str(moved), str(tmp_path))


def test_database_uses_wal(proj):
    assert proj.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reimport_does_not_duplicate(proj, tmp_path):
    rep = import_csv_manifest(tmp_path / "data" / "manifest.csv")
    assert proj.add_samples(rep) == 0
    assert len(proj.samples()) == 6


def test_model_versions_are_immutable_and_hash_checked(proj):
    spec = ModelSpec("mlp", 2, 3, (8, 8))
    m = build_model(spec)
    mid = proj.save_model(m, spec, "m", "erm", None, None)
    row = proj.model_row(mid)
    path = proj.abs(row["path"])
    assert path.suffix == ".safetensors" and not os.access(path, os.W_OK) or os.geteuid() == 0
    loaded, spec2 = proj.load_model(mid)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(loaded(x), m.eval()(x)) and spec2 == spec
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ProjectError, match="modified"):
        proj.load_model(mid)


def test_runs_record_finished_failed_and_cancelled(proj):
    from lvlmva_desktop.core.runtime.jobs import Cancelled

    with proj.run("x", {"a": 1}) as run:
        run.results = {"ok": True}
    with pytest.raises(RuntimeError):
        with proj.run("y", {}):
            raise RuntimeError("boom")
    with pytest.raises(Cancelled):
        with proj.run("z", {}):
            raise Cancelled()
    rows = {r["kind"]: r for r in proj.db.execute("SELECT * FROM runs")}
    assert rows["x"]["status"] == "finished" and json.loads(rows["x"]["results"]) == {"ok": True}
    assert rows["y"]["status"] == "failed" and "boom" in rows["y"]["error"]
    assert rows["z"]["status"] == "cancelled"


def test_expert_verdict_overrides_critic_and_is_kept_apart(proj):
    sid = proj.samples("train")[0]["id"]
    spec = ModelSpec("mlp", 2, 3, (8, 8))
    mid = proj.save_model(build_model(spec), spec, "m", "erm", None, None)
    set_id = proj.save_alignment_set(None, mid, {}, [sid], [0.1])
    eid = proj.save_explanation(None, mid, set_id, {}, {"sample_ids": torch.tensor([sid])})
    proj.save_critique(
        None,
        eid,
        Critique(sid, "judge", "text", [SegmentVerdict(0, "spurious"), SegmentVerdict(1, "relevant")]),
    )
    proj.set_expert_verdict(eid, sid, 0, "relevant")
    # a later critic run does not override the expert's word
    proj.save_critique(None, eid, Critique(sid, "judge", "again", [SegmentVerdict(0, "spurious")]))
    eff = proj.effective_verdicts(eid)[sid]
    assert eff[0] == {"verdict": "relevant", "source": "expert", "author": project_mod.current_user()}
    assert eff[1]["source"] == "critic"
    sources = {r["source"] for r in proj.db.execute("SELECT source FROM verdicts")}
    assert sources == {"critic", "expert"}
    with pytest.raises(ProjectError, match="Unknown verdict"):
        proj.set_expert_verdict(eid, sid, 0, "maybe")


def test_class_descriptions_are_versioned_and_complete(proj):
    with pytest.raises(ProjectError, match="missing for: b"):
        proj.set_class_descriptions({"a": "round"})
    v1 = proj.set_class_descriptions({"a": "round", "b": "square"})
    v2 = proj.set_class_descriptions({"a": "round", "b": "a square"})
    assert v2 == v1 + 1 and proj.class_descriptions() == (v2, {"a": "round", "b": "a square"})


def test_manifest_migration_hook_and_newer_schema_refused(proj, monkeypatch):
    root = proj.root
    proj.close()
    m = json.loads((root / "project.json").read_text())
    m["schema_version"] = 0
    (root / "project.json").write_text(json.dumps(m))
    monkeypatch.setitem(project_mod.MIGRATIONS, 0, lambda d: {**d, "migrated": True})
    with Project.open(root) as p:
        assert p.manifest["migrated"] is True
    assert json.loads((root / "project.json").read_text())["schema_version"] == project_mod.SCHEMA_VERSION
    m["schema_version"] = 99
    (root / "project.json").write_text(json.dumps(m))
    with pytest.raises(ProjectError, match="newer version"):
        Project.open(root)


def test_damaged_database_is_reported_not_crashed(tmp_path):
    p = Project.create(tmp_path / "p", "t", ["a"], (4, 4), 1)
    p.close()
    for suffix in ("", "-wal", "-shm"):
        f = tmp_path / "p" / f"project.sqlite{suffix}"
        if f.exists():
            f.unlink()
    (tmp_path / "p" / "project.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ProjectError, match="damaged"):
        Project.open(tmp_path / "p")


def test_not_a_project(tmp_path):
    with pytest.raises(ProjectError, match="not an LVLM-VA project"):
        Project.open(tmp_path)
    assert sqlite3  # stdlib database, no server
