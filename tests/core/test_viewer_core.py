"""The viewer's core: images decoded one by one, attributions on demand, verdict rows per segment."""

from __future__ import annotations

import pytest
import torch

from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.explain import ExplainSettings
from lvlmva_desktop.core.method.pipeline import alignment_masks, explain_alignment_set, run_critique
from lvlmva_desktop.core.method.segment import SegmentSettings
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store.project import Project, ProjectError
from lvlmva_desktop.core.views.viewer import explain_samples, load_samples, segment_verdict_rows

CPU = torch.device("cpu")
EXPLAIN = ExplainSettings(n_background=4, background="train")


@pytest.fixture(scope="module")
def template(new_small_demo, explained_alignment_set):
    root = new_small_demo("viewer")
    with Project.open(root) as p:
        _mid, _sid, eid = explained_alignment_set(p, TrainSettings(epochs=1), 8, EXPLAIN)
        run_critique(p, eid, GroundTruthCritic(error_rate=0.0))
    return root


@pytest.fixture
def project(template, copy_of_project):
    with Project.open(copy_of_project(template, "p")) as p:
        yield p


def _ids(p: Project) -> tuple[int, int, list[int], dict]:
    eid = p.latest_id("explanations")
    row, t = p.explanation(eid)
    return eid, int(row["model_id"]), t["sample_ids"].tolist(), t


def test_load_samples_matches_load_split(project):
    test = project.load_split("test")
    picked = [test.sample_ids[5], test.sample_ids[0]]
    got = load_samples(project, picked)
    assert got.sample_ids == picked and got.splits == ["test", "test"]
    assert torch.equal(got.x, test.x[[5, 0]])
    assert torch.equal(got.y, test.y[[5, 0]])
    assert torch.equal(got.masks, test.masks[[5, 0]]) and torch.equal(got.has_mask, test.has_mask[[5, 0]])
    with pytest.raises(ProjectError, match="No image 99999"):
        load_samples(project, [99999])


def test_explain_samples_agrees_with_the_stored_explanation(project):
    _, mid, ids, t = _ids(project)
    got = explain_samples(project, mid, ids[:3], EXPLAIN, CPU, segment=SegmentSettings())
    scale = float(t["maps"][:3].abs().max())
    assert scale > 0
    assert torch.allclose(got.maps, t["maps"][:3], atol=1e-5 * scale, rtol=1e-4)
    agree = (got.segments == t["segments"][:3].long()).float().mean().item()
    assert agree > 0.99
    assert torch.allclose(got.evidence.sum(1), torch.ones(3), atol=1e-4)


def test_explain_samples_for_test_images_and_other_method(project):
    _, mid, _, _ = _ids(project)
    test_ids = [r["id"] for r in project.samples("test")][:2]
    dl = explain_samples(project, mid, test_ids, EXPLAIN, CPU)
    ixg = explain_samples(project, mid, test_ids, ExplainSettings(method="input_x_gradient"), CPU)
    assert dl.maps.shape == (2, 32, 32) and dl.segments is None
    assert torch.isfinite(dl.maps).all() and dl.maps.abs().sum() > 0
    assert not torch.allclose(dl.maps, ixg.maps)  # the method is really used
    assert torch.equal(ixg.deltas, torch.zeros(2))


def test_verdict_rows_keep_critic_and_expert_apart_and_take_back(project):
    eid, _, ids, t = _ids(project)
    sid = ids[0]
    before = segment_verdict_rows(project, eid, sid)
    assert [r.segment for r in before] == list(range(t["evidence"].shape[1]))
    assert all(r.source == "critic" and r.expert is None and r.critic == r.effective for r in before)
    assert sum(r.evidence for r in before) == pytest.approx(1.0, abs=1e-4)
    flipped = "relevant" if before[1].critic == "spurious" else "spurious"
    project.set_expert_verdict(eid, sid, 1, flipped)
    rows = segment_verdict_rows(project, eid, sid, t)
    assert rows[1].expert == flipped and rows[1].effective == flipped and rows[1].source == "expert"
    assert rows[1].critic == before[1].critic  # the critic's word stays visible
    assert rows[0] == before[0]
    _, _, stats = alignment_masks(project, eid)
    assert stats["expert_overrides"] == 1
    # taking the expert's word back returns to the critic's verdict, the critic's rows untouched
    assert project.clear_expert_verdict(eid, sid, 1) == 1
    assert segment_verdict_rows(project, eid, sid) == before
    assert project.clear_expert_verdict(eid, sid, 1) == 0
    _, _, stats = alignment_masks(project, eid)
    assert stats["expert_overrides"] == 0
    test_id = project.samples("test")[0]["id"]
    with pytest.raises(ProjectError, match="not in the alignment set"):
        segment_verdict_rows(project, eid, test_id)


@pytest.mark.parametrize("background", ["median", "black"])
def test_other_references_and_absolute_evidence_reach_the_viewer_the_critic_and_the_masks(
    project, background
):
    from lvlmva_desktop.core.method.pipeline import critique_requests
    from lvlmva_desktop.core.method.segment import evidence_map

    _, mid, ids, t = _ids(project)
    explain = ExplainSettings(n_background=4, background=background)
    segment = SegmentSettings(evidence="absolute")
    eid = explain_alignment_set(project, mid, project.latest_id("alignment_sets"), explain, segment, CPU)
    row, t2 = project.explanation(eid)
    assert '"evidence": "absolute"' in row["settings"] and f'"background": "{background}"' in row["settings"]
    assert not torch.allclose(t2["maps"], t["maps"])  # other references: other maps
    # the viewer recomputes the same maps and segments from the recorded settings
    got = explain_samples(project, mid, ids[:3], explain, CPU, segment=segment)
    scale = float(t2["maps"][:3].abs().max())
    assert torch.allclose(got.maps, t2["maps"][:3], atol=1e-5 * scale, rtol=1e-4)
    assert (got.segments == t2["segments"][:3].long()).float().mean().item() > 0.99
    # the segments' evidence shares are shares of the absolute attribution
    ev = evidence_map(t2["maps"], "absolute")
    seg = t2["segments"].long()
    share = (
        torch.stack([(ev * (seg == j)).flatten(1).sum(1) for j in range(4)], 1)
        / ev.flatten(1).sum(1)[:, None]
    )
    assert torch.allclose(share, t2["evidence"].to(share.dtype), atol=1e-4)
    # critique requests carry the kind, the simulated critic and the masks use it
    reqs = critique_requests(project, eid)
    assert {r.evidence_kind for r in reqs} == {"absolute"}
    run_critique(project, eid, GroundTruthCritic(error_rate=0.0))
    got_ids, masks, _ = alignment_masks(project, eid)
    assert got_ids == t2["sample_ids"].tolist() and masks.shape[0] == len(got_ids)


def test_cached_images_read_single_rows_of_the_decoded_split(project):
    rows = project.samples("train")
    ids = [int(rows[i]["id"]) for i in (5, 0, 17)]
    train = project.load_split("train")  # writes the cache (the template's training did too)
    got = project.cached_images("train", [5, 0, 17])
    assert got is not None and torch.equal(got, train.x[[5, 0, 17]])
    assert torch.equal(got, load_samples(project, ids).x)
    for f in (project.root / "cache").glob("data-train-*.safetensors"):
        f.write_bytes(b"not safetensors")  # a damaged cache: None, and the caller decodes instead
    assert project.cached_images("train", [5]) is None
    for f in (project.root / "cache").glob("data-train-*.safetensors"):
        f.unlink()
    assert project.cached_images("train", [5]) is None  # not decoded yet
