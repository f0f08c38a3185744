"""The review queue (issue 13): the critic's least certain verdicts first, reviewed images last.

A small synthetic project holds an explanation made by hand: every image has a brownish "lesion" on its
left (segment 1, most of the evidence), a green "patch" in a corner (segment 2) and the rest (segment 3);
the critic's verdicts are stored as critiques, some of them wrong on purpose.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
import torch
from PIL import Image

from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method.consistency import ConsistencyResult
from lvlmva_desktop.core.method.critic import RELEVANT, SPURIOUS, UNDECIDED, Critique, SegmentVerdict
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.store.integrity import verdict_problems
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.core.views.review import (
    MISSED_COST,
    Doubt,
    ReviewItem,
    doubt_scores,
    image_doubts,
    order_of,
    priorities,
    review_queue,
)

N, S = 14, 16  # images, side
CORRECT = [RELEVANT, SPURIOUS, RELEVANT]


def _image(i: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(i)
    x = torch.full((3, S, S), 0.85) + 0.05 * torch.rand(3, S, S, generator=g)  # pale skin
    x[:, :, : S // 2] = torch.tensor([0.45, 0.28, 0.15])[:, None, None] + 0.08 * torch.rand(
        3, S, S // 2, generator=g
    )  # the lesion
    x[:, :4, -4:] = torch.tensor([0.1, 0.9, 0.2])[:, None, None]  # the patch
    return x.clamp(0, 1)


def _segments() -> torch.Tensor:
    seg = torch.full((S, S), 2, dtype=torch.long)
    seg[:, : S // 2] = 0
    seg[:4, -4:] = 1
    return seg


@pytest.fixture
def made(tmp_path):
    """(project, explanation id, sample ids): N images with their lesion, patch and rest segments."""
    d = tmp_path / "data"
    d.mkdir()
    rows = ["path,label,split"]
    for i in range(N):
        a = (_image(i).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(a).save(d / f"i{i}.png")
        rows.append(f"i{i}.png,{'ab'[i % 2]},train")
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    rep = import_csv_manifest(d / "m.csv")
    p = Project.create(tmp_path / "proj", "review", rep.classes, (S, S), 3)
    p.add_samples(rep)
    sids = [r["id"] for r in p.samples("train")]
    spec = ModelSpec("mlp", 2, 3, (S, S))
    mid = p.save_model(build_model(spec), spec, "m", "erm", None, None)
    set_id = p.save_alignment_set(None, mid, {}, sids, [0.1] * N)
    seg = _segments()
    maps = torch.zeros(N, S, S)
    maps[:, seg == 0] = 1.0
    maps[:, seg == 1] = 2.0
    maps[:, seg == 2] = 0.05
    mass = torch.stack([maps[:, seg == j].sum(1) for j in range(3)], 1)
    tensors = {
        "sample_ids": torch.tensor(sids),
        "maps": maps,
        "segments": seg.expand(N, S, S).clone().to(torch.int32),
        "evidence": mass / mass.sum(1, keepdim=True),
    }
    eid = p.save_explanation(None, mid, set_id, {"segment": {"evidence": "positive"}}, tensors)
    yield p, eid, sids
    p.close()


def _critique(p, eid, sid, verdicts, confidences=(None, None, None)):
    vs = [SegmentVerdict(j, v, "", c) for j, (v, c) in enumerate(zip(verdicts, confidences))]
    p.save_critique(None, eid, Critique(sid, "judge", "text", vs))


def _by_id(queue: list[ReviewItem]) -> dict[int, tuple[int, ReviewItem]]:
    return {it.sample_id: (rank, it) for rank, it in enumerate(queue)}


def test_undecided_first_then_doubted_spurious_then_the_rest_and_reviewed_last(made):
    p, eid, sids = made
    undecided, flipped, missed, reviewed = sids[3], sids[5], sids[8], sids[1]
    for sid in sids:
        v = list(CORRECT)
        if sid == undecided:
            v[2] = UNDECIDED
        if sid == flipped:
            v[0] = SPURIOUS  # the lesion judged spurious: the costly error
        if sid == missed:
            v[1] = RELEVANT  # the patch judged relevant: a missed artefact
        _critique(p, eid, sid, v)
    for j, v in enumerate(CORRECT):
        p.set_expert_verdict(eid, reviewed, j, v)
    queue = review_queue(p, eid)
    assert sorted(it.sample_id for it in queue) == sorted(sids)
    rank = _by_id(queue)
    assert queue[0].sample_id == undecided and queue[0].reason == "1 undecided segment"
    assert queue[1].sample_id == flipped
    assert queue[1].reason.startswith("a 'spurious' verdict the consistency check doubts (segment 1:")
    assert "judged 'relevant'" in queue[1].reason
    # the missed artefact is doubted too, but it costs less: after the false "spurious"
    assert (
        queue[2].sample_id == missed
        and "a 'relevant' verdict the consistency check doubts" in queue[2].reason
    )
    assert (
        queue[-1].sample_id == reviewed
        and queue[-1].reviewed
        and queue[-1].reason == "reviewed by the expert"
    )
    assert not any(it.reviewed for it in queue[:-1])
    correct = [rank[s][1] for s in sids if s not in (undecided, flipped, missed, reviewed)]
    assert all(it.priority < rank[missed][1].priority for it in correct)
    assert all(it.reason == "look-alikes agree with every verdict" for it in correct)
    assert [it.priority for it in queue] == sorted((it.priority for it in queue), reverse=True)


def test_confidences_order_what_the_look_alikes_do_not(made):
    p, eid, sids = made
    conf = {sids[2]: 0.54, sids[6]: 0.99, sids[9]: 0.8}
    for sid in sids:
        c = conf.get(sid)
        _critique(p, eid, sid, CORRECT, (0.97, c if c is not None else 0.97, 0.98))
    queue = review_queue(p, eid)
    assert [it.sample_id for it in queue[:2]] == [sids[2], sids[9]]
    assert queue[0].reason == "judge 54% sure (segment 2: 'spurious')"
    assert _by_id(queue)[sids[6]][0] > _by_id(queue)[sids[0]][0]  # 0.97 is less sure than 0.99
    # equal confidences keep the alignment set's order
    ties = [it.sample_id for it in queue if it.sample_id not in conf]
    assert ties == [s for s in sids if s not in conf]


def test_the_checks_held_back_verdicts_come_before_the_rest(made):
    p, eid, sids = made
    for sid in sids:
        _critique(p, eid, sid, CORRECT)
    held = torch.zeros(N, 3, dtype=torch.bool)
    held[7, 1] = True
    queue = review_queue(p, eid, ConsistencyResult(held, torch.full((N, 3), float("nan"))))
    assert queue[0].sample_id == sids[7]
    assert queue[0].reason == "a 'spurious' verdict the consistency check held back (segment 2)"
    with pytest.raises(ValueError, match="verdicts"):
        review_queue(p, eid, ConsistencyResult(held[:3], torch.zeros(3, 3)))


def test_a_set_without_verdicts_is_all_undecided(made):
    p, eid, sids = made
    queue = review_queue(p, eid)
    assert [it.sample_id for it in queue] == sids
    assert {it.reason for it in queue} == {"3 undecided segments"}


def test_doubt_is_the_share_of_disagreeing_look_alikes_times_the_cost():
    # two kinds of segment (descriptor near 0 or near 10), six images of one of each
    n = 6
    desc = torch.zeros(n, 2, 1)
    desc[:, 1, 0] = 10.0
    desc += 0.01 * torch.arange(n * 2, dtype=torch.float).reshape(n, 2, 1)
    spurious = torch.zeros(n, 2, dtype=torch.bool)
    spurious[:, 1] = True
    spurious[0, 0] = True  # a "near 0" segment judged spurious: its look-alikes all say relevant
    spurious[1, 1] = False  # a "near 10" segment judged relevant: its look-alikes all say spurious
    decided = torch.ones(n, 2, dtype=torch.bool)
    evidence = torch.tensor([[0.6, 0.4]]).expand(n, 2)
    d = doubt_scores(desc, spurious, decided, evidence, k=3)
    assert d.disagree[0, 0] == pytest.approx(1.0) and d.weighted[0, 0] == pytest.approx(0.6)
    assert d.disagree[1, 1] == pytest.approx(1.0) and d.weighted[1, 1] == pytest.approx(MISSED_COST * 0.4)
    assert d.disagree[2, 0] < 0.5 and d.disagree[3, 1] < 0.5
    assert int(d.compared[2, 0]) == 3
    # the expert's verdicts are never doubted, but they are look-alikes for the others
    protected = torch.zeros(n, 2, dtype=torch.bool)
    protected[0, 0] = True
    d2 = doubt_scores(desc, spurious, decided, evidence, protected, k=3)
    assert torch.isnan(d2.disagree[0, 0]) and d2.weighted[0, 0] == 0
    # undecided segments are neither doubted nor look-alikes
    decided[2:, 0] = False
    d3 = doubt_scores(desc, spurious, decided, evidence, k=3)
    assert torch.isnan(d3.disagree[2:, 0]).all() and d3.disagree[0, 0] == pytest.approx(1.0)
    # k is capped at half the "spurious" verdicts on other images (4 -> 2): the other decided "near 0"
    # segment and the nearest "near 10" one, which is image 1's (judged relevant) again
    assert int(d3.compared[0, 0]) == 2
    with pytest.raises(ValueError):
        doubt_scores(desc, spurious, decided, evidence, k=0)


def test_priorities_put_the_tiers_in_order():
    n, j = 4, 2
    spurious = torch.tensor([[False, True]] * n)
    decided = torch.ones(n, j, dtype=torch.bool)
    decided[3, 0] = False
    expert = torch.zeros(n, j, dtype=torch.bool)
    expert[0] = True
    considered = torch.ones(n, j, dtype=torch.bool)
    evidence = torch.tensor([[0.7, 0.3]] * n)
    disagree = torch.zeros(n, j)
    disagree[2, 1] = 0.8
    doubt = Doubt(disagree, disagree * evidence, torch.full((n, j), 5))
    prios = priorities(spurious, decided, expert, considered, evidence, doubt)
    assert order_of(prios) == [3, 2, 1, 0]
    assert prios[0] == (-1.0, "reviewed by the expert", True)
    assert prios[3][1] == "1 undecided segment" and 3.0 <= prios[3][0] < 4.0
    assert (
        prios[2][1]
        == "a 'spurious' verdict the consistency check doubts (segment 2: 4 of 5 look-alikes judged 'relevant')"
    )
    # a doubt on a segment with almost no evidence is no reason to look first
    ev = evidence.clone()
    ev[2] = torch.tensor([0.99, 0.01])
    doubt = Doubt(disagree, disagree * ev, torch.full((n, j), 5))
    assert priorities(spurious, decided, expert, considered, ev, doubt)[2][0] < 2.0


def test_two_hundred_images_are_ordered_in_seconds():
    n, j, side = 200, 4, 64
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, side, side, generator=g)
    maps = torch.rand(n, side, side, generator=g)
    seg = torch.randint(0, j, (n, side, side), generator=g)
    spurious = torch.rand(n, j, generator=g) < 0.3
    evidence = torch.rand(n, j, generator=g)
    evidence = evidence / evidence.sum(1, keepdim=True)
    ones = torch.ones(n, j, dtype=torch.bool)
    t = time.perf_counter()
    doubt = image_doubts(images, maps, seg, spurious, ones, evidence)
    prios = priorities(spurious, ones, ~ones, ones, evidence, doubt)
    assert len(order_of(prios)) == n
    assert time.perf_counter() - t < 5.0


def test_a_project_made_before_confidences_opens_and_gets_them(made, tmp_path):
    p, eid, sids = made
    _critique(p, eid, sids[0], CORRECT)
    p.close()
    # the database as an older version left it: no confidence column
    db = sqlite3.connect(tmp_path / "proj" / "project.sqlite")
    db.execute("ALTER TABLE verdicts DROP COLUMN confidence")
    db.commit()
    db.close()
    with Project.open(tmp_path / "proj", read_only=True) as ro:  # read-only: no migration, still readable
        assert ro.effective_verdicts(eid)[sids[0]][1] == {
            "verdict": SPURIOUS,
            "source": "critic",
            "author": "judge",
        }
        last = review_queue(ro, eid)[-1]  # the others have no verdict yet: they come first
        assert (last.sample_id, last.reason) == (sids[0], "no look-alikes to compare with")
    with Project.open(tmp_path / "proj") as q:
        cols = {r[1] for r in q.db.execute("PRAGMA table_info(verdicts)")}
        assert "confidence" in cols
        _critique(q, eid, sids[1], CORRECT, (0.9, 0.6, 0.7))
        eff = q.effective_verdicts(eid)
        assert "confidence" not in eff[sids[0]][1] and eff[sids[1]][1]["confidence"] == pytest.approx(0.6)
        assert verdict_problems(q, eid) == []  # the old entries still verify
