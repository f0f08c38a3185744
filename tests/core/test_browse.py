"""The browser's Qt-free core: one-query sample table, cached predictions, verdict status, filters, sorts."""

import numpy as np
import pytest
import torch
from PIL import Image

from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method.critic import Critique, SegmentVerdict
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.method.train import predict_proba
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.core.views import browse
from lvlmva_desktop.core.views.browse import (
    BrowseFilter,
    SampleTable,
    VerdictFlags,
    VerdictStatus,
    alignment_membership,
    model_predictions,
    predictions_cache_path,
    sample_table,
    select_rows,
    sort_rows,
    verdict_status,
)

CPU = torch.device("cpu")


def _manifest(folder, n=10, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,group,split"]
    for i in range(start, start + n):
        a = np.full((8, 8, 3), (37 * i) % 256, np.uint8)
        Image.fromarray(a).save(folder / f"img{i}.png")
        group = "" if i % 5 == 4 else ("tag" if i % 2 else "plain")
        rows.append(f"img{i}.png,{'ab'[i % 2]},{group},{'train' if i % 3 else 'test'}")
    (folder / f"manifest{start}.csv").write_text("\n".join(rows) + "\n")
    return folder / f"manifest{start}.csv"


@pytest.fixture
def proj(tmp_path):
    rep = import_csv_manifest(_manifest(tmp_path / "data"))
    p = Project.create(tmp_path / "proj", "t", rep.classes, (8, 8), 3)
    p.add_samples(rep)
    yield p
    p.close()


def _model(p, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec("mlp", 2, 3, (8, 8))
    return p.save_model(build_model(spec), spec, f"m{seed}", "erm", None, None)


def test_sample_table_matches_the_database(proj):
    t = sample_table(proj)
    rows = proj.samples()
    assert t.ids.tolist() == [r["id"] for r in rows] and np.all(np.diff(t.ids) > 0)
    assert t.labels.tolist() == [r["label"] for r in rows]
    assert t.split.tolist() == [r["split"] for r in rows]
    assert t.group.tolist() == [r["grp"] or "" for r in rows]
    assert t.paths.tolist() == [r["path"] for r in rows]
    assert t.groups() == ["plain", "tag"] and t.splits() == ["train", "test"]
    assert t.position(int(t.ids[3])) == 3 and t.position(10_000) is None


def test_sample_table_of_an_empty_project(tmp_path):
    with Project.create(tmp_path / "empty", "e", ["a", "b"], (8, 8), 3) as p:
        t = sample_table(p)
    assert len(t) == 0 and t.position(1) is None and t.groups() == []
    assert select_rows(t, BrowseFilter(label=0)).tolist() == []


def test_predictions_align_with_ids_and_are_cached(proj, monkeypatch):
    mid = _model(proj)
    probs = model_predictions(proj, mid, CPU)
    t = sample_table(proj)
    assert probs.shape == (len(t), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    model, _ = proj.load_model(mid)
    for split in ("train", "test"):
        data = proj.load_split(split)
        want = predict_proba(model, data.x, CPU).numpy()
        rows = [t.position(s) for s in data.sample_ids]
        np.testing.assert_allclose(probs[rows], want, atol=1e-6)
    cache = predictions_cache_path(proj, mid)
    assert cache.is_file()

    # reopening reads the cache: the model is not even loaded
    def no_model(*a, **k):
        raise AssertionError("the model should not be loaded when the predictions are cached")

    monkeypatch.setattr(proj, "load_model", no_model)
    np.testing.assert_array_equal(model_predictions(proj, mid, CPU), probs)
    monkeypatch.undo()

    # another model version (another sha256) has its own cache file
    mid2 = _model(proj, seed=1)
    assert predictions_cache_path(proj, mid2) != cache
    assert not np.allclose(model_predictions(proj, mid2, CPU), probs)


def test_new_images_change_the_cache_key(proj, tmp_path):
    mid = _model(proj)
    before = predictions_cache_path(proj, mid)
    model_predictions(proj, mid, CPU)
    proj.add_samples(import_csv_manifest(_manifest(tmp_path / "data", n=3, start=10)))
    assert predictions_cache_path(proj, mid) != before
    probs = model_predictions(proj, mid, CPU)
    assert probs.shape == (13, 2) and not np.isnan(probs).any()


def test_predictions_can_be_cancelled(proj):
    from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState

    mid = _model(proj)
    state = TaskState()
    state.cancel()
    with pytest.raises(Cancelled):
        model_predictions(proj, mid, CPU, state)
    assert not predictions_cache_path(proj, mid).exists()


def _critique(p, eid, sid, verdicts):
    p.save_critique(
        None, eid, Critique(sid, "judge", "text", [SegmentVerdict(i, v) for i, v in enumerate(verdicts)])
    )


def test_verdict_status_per_image(proj):
    ids = [r["id"] for r in proj.samples()]
    mid = _model(proj)
    set_id = proj.save_alignment_set(None, mid, {}, ids[:5], [0.1] * 5)
    eid = proj.save_explanation(
        None, mid, set_id, {}, {"sample_ids": torch.tensor(ids[:5]), "evidence": torch.zeros(5, 3)}
    )
    _critique(proj, eid, ids[0], ["spurious", "relevant", "relevant"])
    _critique(proj, eid, ids[1], ["relevant", "relevant", "relevant"])
    _critique(proj, eid, ids[2], ["relevant", "undecided", "relevant"])
    _critique(proj, eid, ids[3], ["spurious", "relevant", "relevant"])
    proj.set_expert_verdict(eid, ids[3], 0, "relevant")  # overrules the critic
    proj.set_expert_verdict(eid, ids[1], 0, "relevant")  # agrees with the critic
    st = verdict_status(proj, eid)
    assert set(st) == set(ids[:4])  # ids[4] has no critique
    assert st[ids[0]] == VerdictStatus(1, 2, 0, 0, False)
    assert st[ids[1]] == VerdictStatus(0, 3, 0, 1, False)
    assert st[ids[3]] == VerdictStatus(0, 3, 0, 1, True)
    assert "1 spurious" in st[ids[0]].summary() and "overruled" in st[ids[3]].summary()

    t = sample_table(proj)
    f = VerdictFlags.build(t, st)

    def shown(key):
        return t.ids[select_rows(t, BrowseFilter(verdict=key), verdicts=f)].tolist()

    assert shown("spurious") == [ids[0]]
    assert shown("relevant") == [ids[1], ids[3]]
    assert shown("undecided") == [ids[2]]
    assert shown("overruled") == [ids[3]]
    assert shown("none") == ids[4:]
    # the review queue's filter: judged images the expert has not yet decided segment by segment
    assert shown("needs_review") == ids[:4]
    for seg in (1, 2):
        proj.set_expert_verdict(eid, ids[1], seg, "relevant")  # every segment of ids[1] confirmed
    st = verdict_status(proj, eid)
    assert st[ids[1]].reviewed and not st[ids[3]].reviewed
    f = VerdictFlags.build(t, st)
    assert shown("needs_review") == [ids[0], ids[2], ids[3]]

    members = alignment_membership(proj, t, set_id)
    in_set = t.ids[select_rows(t, BrowseFilter(in_alignment_set=True), members=members)].tolist()
    out_set = t.ids[select_rows(t, BrowseFilter(in_alignment_set=False), members=members)].tolist()
    assert in_set == ids[:5] and out_set == ids[5:]
    assert not alignment_membership(proj, t, None).any()


def _table(n):
    rng = np.random.default_rng(0)
    return SampleTable(
        ids=np.arange(1, n + 1, dtype=np.int64) * 2,
        labels=rng.integers(0, 3, n),
        split=np.where(rng.random(n) < 0.3, "test", "train"),
        group=rng.choice(["x", "y", ""], n),
        paths=np.asarray([f"i{i}.png" for i in range(n)], dtype=object),
    )


def test_filters_combine_and_match_a_plain_loop():
    t = _table(500)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), 500).astype(np.float32)
    probs[7] = np.nan  # an image without a prediction matches no prediction filter
    flt = BrowseFilter(label=1, split="train", group="x", predicted=1, correct=True)
    got = select_rows(t, flt, probs).tolist()
    want = [
        i
        for i in range(500)
        if t.labels[i] == 1
        and t.split[i] == "train"
        and t.group[i] == "x"
        and not np.isnan(probs[i]).any()
        and probs[i].argmax() == 1
    ]
    assert got == want and len(got) > 0
    wrong = select_rows(t, BrowseFilter(correct=False), probs)
    assert 7 not in wrong and all(probs[i].argmax() != t.labels[i] for i in wrong)
    assert select_rows(t, BrowseFilter(group="")).tolist() == [i for i in range(500) if t.group[i] == ""]
    # a criterion without its data is ignored rather than hiding everything
    assert len(select_rows(t, BrowseFilter(predicted=1))) == 500


def test_sorts():
    t = _table(6)
    rows = np.array([0, 2, 3, 5])
    assert sort_rows(rows, t, "id").tolist() == [0, 2, 3, 5]
    assert sort_rows(rows, t, "id", descending=True).tolist() == [5, 3, 2, 0]
    probs = np.array(
        [[0.5, 0.5, 0], [0.9, 0.1, 0], [0.6, 0.4, 0], [0.99, 0.01, 0], [0.5, 0.5, 0], [np.nan] * 3],
        dtype=np.float32,
    )
    assert sort_rows(rows, t, "confidence", probs=probs).tolist() == [0, 2, 3, 5]  # unknown last
    assert sort_rows(rows, t, "confidence", True, probs).tolist() == [3, 2, 0, 5]
    assert sort_rows(rows, t, "entropy", probs=probs).tolist() == [3, 2, 0, 5]
    assert sort_rows(rows, t, "entropy", True, probs).tolist() == [0, 2, 3, 5]
    ties = np.array([[0.7, 0.3, 0]] * 6, dtype=np.float32)
    assert sort_rows(np.array([5, 1, 3]), t, "confidence", probs=ties).tolist() == [1, 3, 5]  # by id
    assert sort_rows(rows, t, "entropy", probs=None).tolist() == [0, 2, 3, 5]
    with pytest.raises(ValueError, match="unknown sort key"):
        sort_rows(rows, t, "size")


def test_entropy_and_confidence():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(browse.entropy(p), [0.0, np.log(2)], atol=1e-9)
    np.testing.assert_allclose(browse.confidence(p), [1.0, 0.5])


def test_a_deleted_cache_folder_is_made_again(proj):
    """docs say the cache folder's contents are safe to delete; deleting the folder whole is too: the next
    decoding and the next predictions write their caches into a new one."""
    import shutil

    mid = _model(proj)
    shutil.rmtree(proj.root / "cache")
    data = proj.load_split("train")
    assert len(data.sample_ids) > 0 and any((proj.root / "cache").glob("data-train-*.safetensors"))
    shutil.rmtree(proj.root / "cache")
    probs = model_predictions(proj, mid, CPU)
    assert len(probs) > 0 and predictions_cache_path(proj, mid).is_file()
