import math

import torch

from lvlmva_desktop.core.method.metrics import alignment_score, deltas, evaluate_predictions, verdict_accuracy
from lvlmva_desktop.core.method.sampling import SamplingSettings, predictive_entropy, select_alignment_set


def test_entropy_values():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    e = predictive_entropy(p)
    assert e[0].item() == 0.0
    assert math.isclose(e[1].item(), math.log(2), rel_tol=1e-6)


def test_low_high_random_and_per_class_selection():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.99, 0.01], [0.2, 0.8], [0.5, 0.5], [0.01, 0.99]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    low = select_alignment_set(probs, labels, SamplingSettings(n=2))
    assert set(low.tolist()) == {2, 5}
    high = select_alignment_set(probs, labels, SamplingSettings(n=2, strategy="high_entropy"))
    assert set(high.tolist()) == {4, 1}
    per = select_alignment_set(probs, labels, SamplingSettings(n=4, per_class=True))
    assert sorted(labels[per].tolist()) == [0, 0, 1, 1]
    correct = select_alignment_set(probs, labels, SamplingSettings(n=6, correct_only=True))
    assert 4 not in correct.tolist() and (probs[correct].argmax(1) == labels[correct]).all()
    r1 = select_alignment_set(probs, labels, SamplingSettings(n=3, strategy="random", seed=1))
    r2 = select_alignment_set(probs, labels, SamplingSettings(n=3, strategy="random", seed=1))
    assert r1.tolist() == r2.tolist()


def test_group_accuracy_and_wga():
    preds = torch.tensor([0, 0, 1, 1, 0, 1])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    groups = ["a", "b", "b", "a", "a", "b"]
    ev = evaluate_predictions(preds, labels, groups, ["neg", "pos"])
    acc = {(g.label, g.group): g.accuracy for g in ev.groups}
    assert acc == {("neg", "a"): 1.0, ("neg", "b"): 0.5, ("pos", "a"): 0.5, ("pos", "b"): 1.0}
    assert ev.worst_group_accuracy == 0.5
    assert math.isclose(ev.accuracy, 4 / 6)
    ev2 = evaluate_predictions(labels, labels, groups, ["neg", "pos"])
    d = deltas(ev, ev2)
    assert math.isclose(d["dWGA"], 0.5) and math.isclose(d["dAGA"], 2 / 6)


def test_min_group_size_ignores_tiny_groups():
    preds = torch.tensor([1, 0, 0, 0])
    labels = torch.tensor([0, 0, 0, 0])
    ev = evaluate_predictions(preds, labels, ["x", "y", "y", "y"], ["c"], min_group_size=2)
    assert ev.worst_group_accuracy == 1.0


def test_alignment_score():
    a = torch.zeros(2, 4, 4)
    a[0, 0, 0] = 3.0
    a[0, 3, 3] = -1.0
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[0, 0, 0] = True  # image 1 has no artefact: ignored
    assert math.isclose(alignment_score(a, m), 0.25)
    assert math.isnan(alignment_score(a, torch.zeros_like(m)))


def test_verdict_accuracy_counts_undecided_as_wrong():
    assert verdict_accuracy([True, False, None, True], [True, False, False, False]) == 0.5
