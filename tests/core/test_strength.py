"""The penalty strength that chooses itself (core/method/strength.py) and the counterfactual penalty behind it:
nothing is changed where the model does not rely on the masked regions, a real shortcut is removed and
the reliance measured, a strength set by hand is used as it is, and every choice is recorded in words."""

import pytest
import torch
from torch import nn

from lvlmva_desktop.core.method import strength as strength_mod
from lvlmva_desktop.core.method.reliance import Reliance, masked_reliance
from lvlmva_desktop.core.method.settings import AlignSettings
from lvlmva_desktop.core.method.strength import StrengthChoice, align_with_strength
from lvlmva_desktop.core.method.train import TrainSettings, predict_proba, train_erm

CPU = torch.device("cpu")
H = W = 8


def shortcut_data(n: int, seed: int, correlated: bool):
    """Class 1 = a bright bar in rows 3-4 (the real feature, faint); a bright corner square (rows 0-1,
    cols 0-1) marks class 1 in training when ``correlated`` (the shortcut), at random otherwise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.3 * torch.rand(n, 1, H, W, generator=g)
    x[y == 1, 0, 3:5, 1:7] += 0.25
    corner = (y == 1) if correlated else (torch.rand(n, generator=g) < 0.5)
    x[corner, 0, :2, :2] = 1.0
    masks = torch.zeros(n, H, W, dtype=torch.bool)
    masks[corner, :2, :2] = True
    return x, y, masks, corner


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * H * W, 2),
    )


@pytest.fixture(scope="module")
def shortcut_model():
    x, y, masks, _ = shortcut_data(400, 0, correlated=True)
    model = tiny_cnn()
    train_erm(model, x, y, TrainSettings(epochs=6, lr=3e-3, batch_size=32), CPU)
    return model, x, y, masks


def _accuracy_on_mismatched(model) -> float:
    """Accuracy on test images whose corner square disagrees with the class (the worst group)."""
    x, y, _, corner = shortcut_data(400, 5, correlated=False)
    mismatch = corner != (y == 1)
    pred = predict_proba(model, x[mismatch], CPU).argmax(1)
    return float((pred == y[mismatch]).float().mean())


def test_the_shortcut_model_relies_on_the_corner(shortcut_model):
    model, x, _, masks = shortcut_model
    r = masked_reliance(model, x[:64], masks[:64], x, CPU)
    assert r is not None and r.mean > 0.2
    assert _accuracy_on_mismatched(model) < 0.5


def test_auto_strength_removes_a_shortcut_and_records_why(shortcut_model):
    model, x, y, masks = shortcut_model
    aidx = torch.arange(64)
    settings = AlignSettings(epochs=4, lr=3e-3, batch_size=32)
    before = _accuracy_on_mismatched(model)
    tuned, history, choice = align_with_strength(model, x, y, x[aidx], y[aidx], masks[aidx], settings, CPU)
    assert choice.mode == "auto" and choice.penalty == "counterfactual"
    assert choice.fine_tuned and choice.strength >= 1
    assert choice.reliance_before["mean"] > 0.2
    assert choice.reliance_after["mean"] < choice.reliance_before["mean"] / 2
    assert choice.rounds[0]["strength"] == 1.0 and choice.rounds[0]["epochs"] == 4
    assert len(history) == sum(r["epochs"] for r in choice.rounds if r["kept"])
    assert [h.epoch for h in history] == list(range(1, len(history) + 1))  # numbered across rounds
    assert "reliance" in choice.summary() and "automatically" in choice.summary()
    assert _accuracy_on_mismatched(tuned) > before + 0.3
    # the original model is untouched
    assert masked_reliance(model, x[:64], masks[:64], x, CPU).mean == pytest.approx(
        choice.reliance_before["mean"]
    )


def test_auto_strength_keeps_the_weights_where_there_is_nothing_to_remove():
    x, y, _, _ = shortcut_data(200, 1, correlated=False)
    model = tiny_cnn()
    train_erm(model, x, y, TrainSettings(epochs=2, batch_size=32), CPU)
    masks = torch.zeros(200, H, W, dtype=torch.bool)
    masks[:40, 6:, 6:] = True  # a corner where nothing is drawn: the model cannot rely on it
    tuned, history, choice = align_with_strength(
        model, x, y, x[:40], y[:40], masks[:40], AlignSettings(), CPU
    )
    assert choice.strength == 0 and not choice.fine_tuned and history == []
    assert choice.reliance_before["mean"] < 0.05
    assert "nothing to remove" in choice.reason
    for a, b in zip(model.state_dict().values(), tuned.state_dict().values()):
        assert torch.equal(a, b)
    # without any mask, the same
    _, _, none = align_with_strength(
        model, x, y, x[:40], y[:40], torch.zeros(40, H, W, dtype=torch.bool), AlignSettings(), CPU
    )
    assert none.strength == 0 and none.reliance_before is None and "No segment" in none.reason


def test_a_strength_set_by_hand_is_used_as_it_is(shortcut_model):
    model, x, y, masks = shortcut_model
    settings = AlignSettings(lambda_=0.5, epochs=1, batch_size=32)
    _, history, choice = align_with_strength(model, x, y, x[:32], y[:32], masks[:32], settings, CPU)
    assert choice.mode == "set" and choice.strength == 0.5 and len(choice.rounds) == 1 and len(history) == 1
    assert "by hand" in choice.summary()


def test_escalation_doubles_the_strength_and_undoes_a_round_that_does_not_help(shortcut_model, monkeypatch):
    """The control flow with scripted reliance measurements: above the target after strength 1, so
    strength 2 is tried; it does not lower the reliance, so it is undone and strength 1 stays."""
    model, x, y, masks = shortcut_model
    values = iter([0.4, 0.2, 0.25])  # before, after strength 1, after strength 2

    def scripted(*args, **kwargs):
        return Reliance(next(values), 0.0, 0.0, 0.0, 8, 4)

    monkeypatch.setattr(strength_mod, "_measure", scripted)
    settings = AlignSettings(epochs=2, batch_size=32)
    _, history, choice = align_with_strength(model, x, y, x[:32], y[:32], masks[:32], settings, CPU)
    assert [r["strength"] for r in choice.rounds] == [1.0, 2.0]
    assert [r["kept"] for r in choice.rounds] == [True, False]
    assert choice.rounds[1]["epochs"] == 1  # half the epochs
    assert choice.strength == 1.0 and choice.reliance_after["mean"] == 0.2
    assert len(history) == 2
    assert "undone" in choice.reason and "not met" in choice.reason
    assert choice.target == pytest.approx(0.1)


def test_choices_round_trip_through_their_record(shortcut_model):
    model, x, y, masks = shortcut_model
    _, _, choice = align_with_strength(
        model, x, y, x[:32], y[:32], masks[:32], AlignSettings(lambda_=1.0, epochs=1), CPU
    )
    again = StrengthChoice(**choice.to_dict())
    assert again.summary() == choice.summary()


def test_wrong_settings_are_refused_before_any_work(shortcut_model):
    model, x, y, masks = shortcut_model
    for bad in (AlignSettings(lambda_="strong"), AlignSettings(lambda_=-1.0), AlignSettings(penalty="l2")):
        with pytest.raises(ValueError):
            align_with_strength(model, x, y, x[:8], y[:8], masks[:8], bad, CPU)
