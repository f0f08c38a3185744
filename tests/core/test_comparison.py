"""The before/after comparison read back from the project's metrics table."""

import pytest
import torch

from lvlmva_desktop.core.method.metrics import (
    Evaluation,
    GroupAccuracy,
    comparison,
    deltas,
    stored_evaluations,
)
from lvlmva_desktop.core.method.pipeline import EvalSettings, evaluate_models, train_original
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store.project import Project

CPU = torch.device("cpu")
EVAL = EvalSettings(n_attribution_images=6, n_background=2, min_group_size=1)


@pytest.fixture(scope="module")
def project(new_small_demo):
    """Three models of two architectures on one small demo, kept open for the whole module (no copy per test,
    unlike the other users of the shared builders): its tests only add evaluations, one after another."""
    with Project.open(new_small_demo("cmp")) as p:
        a = train_original(p, "small_cnn", TrainSettings(epochs=1, batch_size=32), CPU)
        b = train_original(p, "mlp", TrainSettings(epochs=2, batch_size=32, seed=1), CPU)
        c = train_original(p, "mlp", TrainSettings(epochs=1, batch_size=32, seed=2), CPU)
        yield p, a, b, c


def test_evaluation_round_trips_through_a_dict():
    ev = Evaluation(0.5, 0.25, "a / x", [GroupAccuracy("a", "x", 4, 0.25), GroupAccuracy("b", "", 2, 1.0)], 6)
    ev.alignment = 0.75
    assert Evaluation.from_dict(ev.to_dict()) == ev


def test_comparison_matches_the_evaluation_and_prefers_a_joint_run(project):
    p, a, b, c = project
    assert comparison(p, a, b)["missing"] == [a, b]  # nothing evaluated yet
    evals = evaluate_models(p, [a, b], EVAL, CPU)
    joint_run = p.latest_id("runs")
    cmp = comparison(p, a, b)
    assert cmp["missing"] == [] and cmp["same_run"]
    assert cmp["before"]["model_id"] == a and cmp["after"]["model_id"] == b
    assert cmp["before"]["run_id"] == cmp["after"]["run_id"] == joint_run
    for side, mid in (("before", a), ("after", b)):
        ev = evals[mid]
        assert cmp[side]["accuracy"] == pytest.approx(ev.accuracy)
        assert cmp[side]["worst_group_accuracy"] == pytest.approx(ev.worst_group_accuracy)
        assert cmp[side]["worst_group"] == ev.worst_group
        assert cmp[side]["alignment"] == pytest.approx(ev.alignment)
        assert cmp[side]["n"] == 48
    assert cmp["deltas"] == pytest.approx(deltas(evals[a], evals[b]))
    assert set(cmp["deltas"]) == {"dAGA", "dWGA", "dAlignment"}
    expected = {(g.label, g.group): g for g in evals[a].groups}
    assert [(r["label"], r["group"]) for r in cmp["groups"]] == sorted(expected)
    for r in cmp["groups"]:
        after = next(g for g in evals[b].groups if (g.label, g.group) == (r["label"], r["group"]))
        assert r["n"] == expected[(r["label"], r["group"])].n
        assert r["before"] == pytest.approx(expected[(r["label"], r["group"])].accuracy)
        assert r["after"] == pytest.approx(after.accuracy)
        assert r["change"] == pytest.approx(after.accuracy - r["before"])

    # a newer evaluation of one model alone does not break the pairing of the joint run...
    evaluate_models(p, [b], EVAL, CPU)
    assert stored_evaluations(p, [a, b])[b][0] == joint_run
    # ...but is what that model shows on its own
    assert stored_evaluations(p, [b])[b][0] == p.latest_id("runs")


def test_one_model_alone_and_models_never_evaluated(project):
    p, a, b, c = project
    evaluate_models(p, [a], EVAL, CPU)
    alone = comparison(p, a)
    assert alone["after"] is None and alone["deltas"] == {} and alone["missing"] == []
    assert all(r["after"] is None and r["change"] is None for r in alone["groups"])
    half = comparison(p, a, c)  # c was never evaluated
    assert half["missing"] == [c] and not half["after"]["evaluated"]
    assert half["after"]["accuracy"] is None and half["deltas"] == {}
    assert half["before"]["accuracy"] is not None and half["groups"]
