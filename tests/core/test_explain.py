import pytest
import torch

from lvlmva_desktop.core.explain import ExplainSettings, attribute
from lvlmva_desktop.core.models import ModelSpec, build_model


@pytest.mark.parametrize("arch,size", [("mlp", 12), ("small_cnn", 16), ("resnet18", 32)])
def test_deeplift_shap_satisfies_summation_to_delta(arch, size):
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, 3, 3, (size, size))).eval()
    if arch == "resnet18":  # give batch norm non-trivial statistics, then freeze (eval is linear)
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.rand(8, 3, size, size))
        model.eval()
    x = torch.rand(5, 3, size, size)
    bg = torch.rand(4, 3, size, size)
    targets = torch.tensor([0, 1, 2, 0, 1])
    res = attribute(model, x, targets, bg, ExplainSettings(batch_size=2), torch.device("cpu"))
    assert res.maps.shape == (5, size, size)
    # sum of attributions = f_t(x) - mean_b f_t(b)
    with torch.no_grad():
        fx = model(x).gather(1, targets[:, None]).squeeze(1)
        fb = model(bg)[:, targets].mean(0)
    total = res.maps.flatten(1).sum(1)
    assert torch.allclose(total, fx - fb, atol=1e-3 + 1e-3 * (fx - fb).abs().max().item())
    assert (res.deltas < 1e-3 + 1e-3 * res.target_gap.max()).all()


def test_model_with_reused_relu_is_refused():
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=2)
    with pytest.raises(ValueError, match="reuses modules"):
        attribute(
            model,
            torch.rand(2, 3, 32, 32),
            torch.tensor([0, 1]),
            torch.rand(2, 3, 32, 32),
            ExplainSettings(),
            torch.device("cpu"),
        )


def test_attributions_point_at_the_feature_the_model_uses():
    # a linear model that only looks at the top-left pixel: all attribution must be there
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[1, 0] = 5.0
    x = torch.ones(3, 1, 4, 4)
    res = attribute(
        model, x, torch.tensor([1, 1, 1]), torch.zeros(2, 1, 4, 4), ExplainSettings(), torch.device("cpu")
    )
    assert torch.allclose(res.maps[:, 0, 0], torch.full((3,), 5.0))
    assert res.maps.flatten(1)[:, 1:].abs().max() < 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attributions_on_cuda_match_cpu():
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 2, 3, (16, 16))).eval()
    x, bg = torch.rand(4, 3, 16, 16), torch.rand(3, 3, 16, 16)
    t = torch.tensor([0, 1, 0, 1])
    a_cpu = attribute(model, x, t, bg, ExplainSettings(), torch.device("cpu")).maps
    a_gpu = attribute(model, x, t, bg, ExplainSettings(), torch.device("cuda")).maps
    assert torch.allclose(a_cpu, a_gpu, atol=1e-4)


def test_attribution_turns_tf32_off_on_cuda_and_restores_it():
    """TF32 convolutions broke summation-to-delta on a ResNet-18 on an H200 (deltas ~5e-4 of the gap)."""
    import threading

    from lvlmva_desktop.core.devices import exact_fp32

    cuda = torch.device("cuda")  # only flags are touched: this runs without a GPU
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        inside = threading.Event()
        release = threading.Event()

        def other():
            with exact_fp32(cuda):
                inside.set()
                release.wait(5)

        t = threading.Thread(target=other)
        t.start()
        inside.wait(5)
        with exact_fp32(cuda):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            with exact_fp32(cuda):
                assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.allow_tf32  # the other thread is still inside
        release.set()
        t.join()
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with exact_fp32(torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32  # no effect on the CPU
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
