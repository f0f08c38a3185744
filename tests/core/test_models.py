import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18 as tv_resnet18

from lvlmva_desktop.core.models import (
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
