"""Steps that would take over half an hour on a CPU say so before the work starts, from a timed trial
batch of the step's own model and images."""

import pytest
import torch

from lvlmva_desktop.core.data.benchsets import GENERATORS
from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method.models import build_model, spec_for
from lvlmva_desktop.core.method.pipeline import train_original
from lvlmva_desktop.core.method.settings import TrainSettings
from lvlmva_desktop.core.runtime import costs
from lvlmva_desktop.core.runtime.jobs import TaskState
from lvlmva_desktop.core.store.project import Project

CPU = torch.device("cpu")


def test_the_trial_leaves_the_model_as_it_was(monkeypatch):
    model = build_model(spec_for("resnet34", 2, 3, (32, 32))).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    per_image = costs.seconds_per_image(model, torch.rand(6, 3, 32, 32), CPU)
    assert per_image > 0 and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert all(p.grad is None for p in model.parameters())
    # the estimate: the trial's time per image, times the images, the epochs and the step's relative cost
    monkeypatch.setattr(costs, "seconds_per_image", lambda *a, **k: 0.5)
    assert costs.estimate_training(model, torch.rand(40, 3, 32, 32), 64, 3, CPU, factor=2.0) == 120.0


def test_warning_only_for_a_slow_cpu_step():
    seen = []
    state = TaskState(on_message=seen.append)
    assert not costs.warn_if_slow(state, CPU, 29 * 60, "training")
    assert not costs.warn_if_slow(state, torch.device("cuda"), 10 * 3600, "training")
    assert costs.warn_if_slow(state, CPU, 2.5 * 3600, "training")
    assert len(seen) == 1 and costs.is_slow_notice(seen[0])
    assert "about 2.5 hours (training" in seen[0] and "--device cuda" in seen[0]


def test_training_announces_a_long_run_before_it_starts(tmp_path, monkeypatch):
    manifest = GENERATORS["isic-like"](tmp_path / "data", seed=0, n_train=24, n_test=8, size=32)
    rep = import_csv_manifest(manifest)
    monkeypatch.setattr(costs, "SLOW_CPU_SECONDS", 1e-6)  # any step is "long" here
    events = []
    state = TaskState(
        on_message=lambda m: events.append(("message", m)),
        on_progress=lambda f, m: events.append(("progress", f)),
    )
    with Project.create(tmp_path / "p", "t", rep.classes, (32, 32), 3) as p:
        p.add_samples(rep)
        train_original(p, "small_cnn", TrainSettings(epochs=1), CPU, state)
    notices = [i for i, e in enumerate(events) if e[0] == "message" and costs.is_slow_notice(e[1])]
    assert len(notices) == 1
    training_progress = [i for i, e in enumerate(events) if e[0] == "progress" and e[1] > 0.1]
    assert notices[0] < training_progress[0]  # told before the epochs run


@pytest.mark.parametrize("seconds,words", [(600, "10 minutes"), (5400, "1.5 hours")])
def test_durations_read_as_people_say_them(seconds, words):
    assert costs.duration(seconds) == words
