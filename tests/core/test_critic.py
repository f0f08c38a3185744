import torch

from lvlmva_desktop.core.method.critic import (
    RELEVANT,
    SPURIOUS,
    UNDECIDED,
    Critic,
    CritiqueRequest,
    ExpertCritic,
    GroundTruthCritic,
    SegmentVerdict,
    critique_each,
    ground_truth_segment_labels,
    segment_mask,
)


def _request(sample_id=0):
    seg = torch.zeros(8, 8, dtype=torch.long)
    seg[:, 4:] = 1
    seg[:2, :2] = 2  # the artefact corner
    attr = torch.zeros(8, 8)
    attr[:2, :2] = 1.0
    attr[4:, 5:] = 2.0
    attr[5, 1] = -3.0  # negative evidence is ignored
    gt = torch.zeros(8, 8, dtype=torch.bool)
    gt[:3, :3] = True
    return CritiqueRequest(
        sample_id, torch.rand(3, 8, 8), 1, "pos", "judge by the blob", attr, seg, [0.0, 0.9, 0.1], gt
    )


def test_ground_truth_labels_follow_the_evidence_inside_the_mask():
    r = _request()
    assert ground_truth_segment_labels(r.attribution, r.segments, r.gt_mask, 3) == [False, False, True]


def test_ground_truth_critic_is_exact_without_errors_and_named_as_simulated():
    c = GroundTruthCritic()
    assert isinstance(c, Critic)
    assert "simulated" in c.name and "benchmark" in c.name
    assert c.identity()["benchmark_only"] is True
    (crit,) = list(c.critique([_request()]))
    assert [v.verdict for v in crit.verdicts] == [RELEVANT, RELEVANT, SPURIOUS]
    assert "no LVLM" in crit.text


def test_simulated_error_rate_flips_the_expected_share_deterministically():
    reqs = [_request(i) for i in range(400)]
    c = GroundTruthCritic(error_rate=0.13, seed=3)
    out = list(c.critique(reqs))
    truth = [SPURIOUS if t else RELEVANT for t in (False, False, True)]
    wrong = sum(v.verdict != truth[v.segment] for crit in out for v in crit.verdicts)
    assert abs(wrong / (400 * 3) - 0.13) < 0.03
    again = list(GroundTruthCritic(error_rate=0.13, seed=3).critique(reqs))
    assert [[v.verdict for v in c.verdicts] for c in out] == [[v.verdict for v in c.verdicts] for c in again]


def test_one_sided_error_kinds_flip_only_their_side():
    reqs = [_request(i) for i in range(300)]
    truth = [RELEVANT, RELEVANT, SPURIOUS]
    for kind, side in (("missed", SPURIOUS), ("false_spurious", RELEVANT)):
        c = GroundTruthCritic(error_rate=0.5, seed=1, errors=kind)
        assert kind.replace("_", " ") in c.name and c.identity()["errors"] == kind
        wrong = [v for crit in c.critique(reqs) for v in crit.verdicts if v.verdict != truth[v.segment]]
        assert wrong and all(truth[v.segment] == side for v in wrong)


def test_expert_critic_uses_stored_verdicts_and_leaves_the_rest_undecided():
    c = ExpertCritic({5: {2: SPURIOUS}})
    (a,) = list(c.critique([_request(5)]))
    (b,) = list(c.critique([_request(6)]))
    assert [v.verdict for v in a.verdicts] == [UNDECIDED, UNDECIDED, SPURIOUS]
    assert all(v.verdict == UNDECIDED for v in b.verdicts)


def test_mask_is_the_union_of_spurious_segments_only():
    r = _request()
    m = segment_mask(
        r.segments, [SegmentVerdict(0, UNDECIDED), SegmentVerdict(2, SPURIOUS), SegmentVerdict(1, RELEVANT)]
    )
    assert torch.equal(m, r.segments == 2)


def test_ground_truth_critic_judges_by_the_evidence_the_segments_follow():
    # segment 2 spans the artefact corner and some background; the corner holds only negative attribution
    # ("darker than the reference"), the background a little positive attribution
    r = _request()
    r.segments = r.segments.clone()
    r.segments[:2, :7] = 2
    r.attribution = r.attribution.clone()
    r.attribution[:2, :7] = 0.01
    r.attribution[:2, :2] = -1.0
    assert ground_truth_segment_labels(r.evidence(), r.segments, r.gt_mask, 3)[2] is False
    r.evidence_kind = "absolute"
    assert ground_truth_segment_labels(r.evidence(), r.segments, r.gt_mask, 3)[2] is True
    crit = next(iter(GroundTruthCritic().critique([r])))
    assert crit.verdicts[2].verdict == SPURIOUS


def test_critique_each_checks_before_and_reports_after_each_image():
    import pytest

    from lvlmva_desktop.core.method.critic import Critique
    from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState

    events = []
    state = TaskState(on_progress=lambda frac, msg: events.append(("progress", frac, msg)))
    reqs = [_request(0), _request(1)]

    def one(r):
        events.append(("judge", r.sample_id))
        return Critique(r.sample_id, "test", "", [])

    out = critique_each(reqs, state, one)
    assert events == []  # lazy: nothing runs before the first critique is taken
    assert next(out).sample_id == 0
    assert events == [("judge", 0)]  # progress comes once the caller has taken the critique
    assert next(out).sample_id == 1
    assert events == [("judge", 0), ("progress", 0.5, "critique"), ("judge", 1)]
    assert list(out) == []
    assert events[-1] == ("progress", 1.0, "critique")
    state.cancel()
    with pytest.raises(Cancelled):  # checked before each image
        next(critique_each(reqs, state, one))
    assert len(events) == 4
