"""Partial results of the training loop: per-step records for live curves and per-epoch records."""

import pytest
import torch

from lvlmva_desktop.core.method import train
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.runtime.jobs import TaskState

CPU = torch.device("cpu")


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    return x, y


def _fit(records, **kw):
    x, y = _data()
    model = build_model(ModelSpec("mlp", 2, 1, (8, 8), hidden=16))
    args = dict(epochs=3, batch_size=16, lr=1e-2, seed=0, device=CPU)
    args.update(kw)
    return train.fit(model, x, y, state=TaskState(on_partial=records.append), **args)


def test_every_step_is_recorded_for_short_runs_and_matches_the_epoch_averages():
    records = []
    history = _fit(records)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, 13))  # 64 images / 16 = 4 steps x 3 epochs
    assert all(r["total_steps"] == 12 and r["steps_per_epoch"] == 4 for r in steps)
    assert [r["epoch"] for r in steps] == [1] * 4 + [2] * 4 + [3] * 4
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and len(history) == 3
    # equal batch sizes: the mean of an epoch's step records is the epoch record
    for e, rec in zip((1, 2, 3), history):
        mine = [r for r in steps if r["epoch"] == e]
        assert sum(r["loss"] for r in mine) / 4 == pytest.approx(rec.loss)
        assert sum(r["train_accuracy"] for r in mine) / 4 == pytest.approx(rec.train_accuracy)
    assert all(r["penalty"] == 0.0 and r["ce"] == pytest.approx(r["loss"]) for r in steps)
    # the records come in order: steps of an epoch, then its epoch record
    kinds = [r["kind"] for r in records]
    assert kinds[:5] == ["step"] * 4 + ["epoch"]


def test_step_records_are_throttled_and_average_the_batches_in_between(monkeypatch):
    monkeypatch.setattr(train, "MAX_STEP_RECORDS", 5)
    records = []
    _fit(records)
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [3, 6, 9, 12]  # every ceil(12 / 5) = 3 steps, and the last
    unthrottled = []
    monkeypatch.setattr(train, "MAX_STEP_RECORDS", 1000)
    _fit(unthrottled)
    fine = [r for r in unthrottled if r["kind"] == "step"]
    for r in steps:  # same seed, same batches: each record is the mean of the three steps it covers
        covered = fine[r["step"] - 3 : r["step"]]
        assert r["loss"] == pytest.approx(sum(c["loss"] for c in covered) / 3)


def test_rrr_step_records_carry_the_penalty():
    x, y = _data()
    masks = torch.zeros(8, 8, 8, dtype=torch.bool)
    masks[:, :, :4] = True  # forbid the half the label depends on
    records = []
    _fit(records, align_x=x[:8], align_y=y[:8], align_masks=masks, lambda_=10.0, align_ratio=0.25, epochs=1)
    steps = [r for r in records if r["kind"] == "step"]
    assert steps and all(r["penalty"] > 0 for r in steps)
    assert all(r["loss"] == pytest.approx(r["ce"] + 10.0 * r["penalty"], rel=1e-5) for r in steps)


def test_an_align_run_recorded_before_the_automatic_strength_keeps_its_penalty():
    """A run recorded with only a number for λ ran the paper's input-gradient penalty without a floor;
    read back (resume, the report), it keeps that, not today's defaults."""
    from lvlmva_desktop.core.method.settings import PipelineSettings

    old = PipelineSettings.from_record({"align": {"lambda": 30.0, "epochs": 5}}).align
    assert old.penalty == "gradient" and old.lambda_ == 30.0 and old.reliance_floor == 0.0
    assert old.consistency_enrichment == 0.0 and old.consistency_min_reliance == 0.0
    new = PipelineSettings.from_record({"align": PipelineSettings().align.to_dict()}).align
    assert new.penalty == "counterfactual" and new.strength_is_auto() and new.reliance_floor == 0.1
