import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18 as tv_resnet18

from lvlmva_desktop.core.method.models import (
    ModelSpec,
    build_model,
    check_no_reused_modules,
    load_pretrained_weights,
)


@pytest.mark.parametrize("arch", ["mlp", "small_cnn", "resnet18", "resnet50"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_builds_and_has_no_reused_modules(arch, channels):
    spec = ModelSpec(arch=arch, num_classes=3, in_channels=channels, image_size=(32, 32))
    model = build_model(spec).eval()
    x = torch.rand(2, channels, 32, 32)
    assert model(x).shape == (2, 3)
    assert check_no_reused_modules(model, x) == []


def test_reuse_check_catches_torchvision_resnet_relu_trap():
    model = tv_resnet18(weights=None, num_classes=2).eval()
    reused = check_no_reused_modules(model, torch.rand(1, 3, 32, 32))
    assert any(name.endswith("relu") for name in reused)


def test_local_weights_load_and_head_for_other_classes_is_skipped(tmp_path):
    src = tv_resnet18(weights=None, num_classes=1000)
    path = tmp_path / "imagenet_like.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    spec = ModelSpec(arch="resnet18", num_classes=2, in_channels=1, image_size=(32, 32))
    model = build_model(spec)
    skipped = load_pretrained_weights(model, spec, path)
    assert set(skipped) == {"fc.weight", "fc.bias"}
    # grayscale stem = RGB kernels summed over colour
    assert torch.allclose(model.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.layer1[0].conv1.weight, src.layer1[0].conv1.weight)


def test_pth_weights_are_read_without_unpickling_code(tmp_path):
    src = build_model(ModelSpec("small_cnn", 2, 3, (16, 16)))
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    dst = build_model(ModelSpec("small_cnn", 2, 3, (16, 16)))
    assert load_pretrained_weights(dst, ModelSpec("small_cnn", 2, 3, (16, 16)), path) == []
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(src.eval()(x), dst.eval()(x))


def test_missing_weights_file_is_a_clear_error(tmp_path):
    spec = ModelSpec("mlp", 2, 1, (8, 8))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained_weights(build_model(spec), spec, tmp_path / "nope.safetensors")


def _save(state, path):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_an_imported_classifier_must_be_complete_and_finite(tmp_path):
    """import-model uses the file as the audited model, so a partial or broken checkpoint is refused in
    words, naming the first tensors, instead of becoming a model version with random parts."""
    spec = ModelSpec("small_cnn", 2, 3, (16, 16))
    full = build_model(spec).state_dict()
    only_bias = _save({"head.bias": full["head.bias"]}, tmp_path / "bias.safetensors")
    with pytest.raises(
        ValueError,
        match=r"do not fit a small_cnn for this project \(2 classes, 3 channels\): 19 of the model's 20 "
        r"tensors are not in the file \(first features\.0\.weight",
    ):
        load_pretrained_weights(build_model(spec), spec, only_bias, complete=True)
    no_stats = {k: v for k, v in full.items() if "running_" not in k}
    with pytest.raises(
        ValueError, match=r"not in the file \(first features\.1\.running_mean, features\.1\.running_var"
    ):
        load_pretrained_weights(
            build_model(spec), spec, _save(no_stats, tmp_path / "nostats.safetensors"), complete=True
        )
    broken = dict(full)
    broken["features.5.weight"] = full["features.5.weight"].clone()
    broken["features.5.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"not finite numbers \(NaN or infinity\) in features\.5\.weight"):
        load_pretrained_weights(build_model(spec), spec, _save(broken, tmp_path / "nan.safetensors"))
    wrong = dict(full)
    wrong["head.weight"] = torch.zeros(5, 64)
    with pytest.raises(
        ValueError,
        match=r"head\.weight \(the file has \(5, 64\), a small_cnn here \(2, 64\)\)\)\. Were they trained "
        r"for another number of classes\?",
    ):
        load_pretrained_weights(
            build_model(spec), spec, _save(wrong, tmp_path / "wrong.safetensors"), complete=True
        )
    ok = load_pretrained_weights(
        build_model(spec), spec, _save(full, tmp_path / "ok.safetensors"), complete=True
    )
    assert ok == []
    # starting ERM from a backbone may leave the head random: not complete, and allowed there
    backbone = _save(
        {k: v for k, v in full.items() if not k.startswith("head.")}, tmp_path / "bb.safetensors"
    )
    assert load_pretrained_weights(build_model(spec), spec, backbone) == []
    # but a file that is mostly something else is refused there too
    with pytest.raises(ValueError, match=r"19 of the model's 20 tensors are not in the file"):
        load_pretrained_weights(build_model(spec), spec, only_bias)


def test_import_model_refuses_a_partial_checkpoint_from_the_command_line(tmp_path, capsys):
    from lvlmva_desktop.cli import main
    from lvlmva_desktop.core.store.project import Project

    path = _save({"head.bias": torch.zeros(2)}, tmp_path / "bias.safetensors")
    Project.create(tmp_path / "p", "p", ["a", "b"], (16, 16), 3).close()
    assert main(["import-model", str(tmp_path / "p"), str(path), "--arch", "small_cnn"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ") and "do not fit a small_cnn for this project (2 classes, 3 channels)" in err
    )
    with Project.open(tmp_path / "p") as p:
        assert p.models() == []
        assert (
            p.db.execute("SELECT status FROM runs WHERE kind='import_model'").fetchone()["status"] == "failed"
        )
