import pytest
import torch

from lvlmva_desktop.core.method.explain import ExplainSettings, attribute
from lvlmva_desktop.core.method.models import ModelSpec, build_model


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


def one_pixel_model(n_pixels: int, pixel: int, weight: float) -> torch.nn.Module:
    """A linear two-class model whose class 1 reads one pixel with ``weight``; nothing else counts."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_pixels, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[1, pixel] = weight
    return model


def test_attributions_point_at_the_feature_the_model_uses():
    # a linear model that only looks at the top-left pixel: all attribution must be there
    model = one_pixel_model(16, 0, 5.0)
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

    from lvlmva_desktop.core.runtime.devices import exact_fp32

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


def test_reference_images_of_each_kind():
    from lvlmva_desktop.core.method.explain import MEDIAN_SAMPLE, background_set, reference_images

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(300, 3, 6, 6, generator=gen)
    train = reference_images(x, ExplainSettings(background="train", n_background=5, seed=3))
    assert torch.equal(train, background_set(x, 5, 3))
    black = reference_images(x, ExplainSettings(background="black"))
    assert black.shape == (2, 3, 6, 6) and not black.any()
    med = reference_images(x, ExplainSettings(background="median", seed=3))
    want = background_set(x, MEDIAN_SAMPLE, 3).median(0).values
    assert med.shape == (2, 3, 6, 6) and torch.equal(med[0], want) and torch.equal(med[1], want)
    with pytest.raises(ValueError, match="reference images 'mean'"):
        reference_images(x, ExplainSettings(background="mean"))


def test_median_reference_explains_how_an_image_differs_from_the_typical_one():
    # a linear model reading one pixel: against the typical (median) image the attribution is the
    # weight times the difference from the median, also where that difference is negative
    model = one_pixel_model(4, 3, 2.0)
    from lvlmva_desktop.core.method.explain import reference_images

    train = torch.full((9, 1, 2, 2), 0.6)
    train[:3] = 0.1  # a minority of darker images: the median stays 0.6
    s = ExplainSettings(background="median")
    res = attribute(
        model,
        torch.full((1, 1, 2, 2), 0.2),
        torch.tensor([1]),
        reference_images(train, s),
        s,
        torch.device("cpu"),
    )
    assert abs(float(res.maps[0, 1, 1]) - 2.0 * (0.2 - 0.6)) < 1e-5
    assert res.maps[0].flatten()[:3].abs().max() < 1e-6


def test_recorded_settings_from_before_a_setting_existed_keep_its_old_value():
    from lvlmva_desktop.core.method.settings import PipelineSettings

    # a run or explanation recorded before "background" and "evidence" existed ran with the paper's choices
    old = PipelineSettings.from_record({"explain": {"n_background": 8}, "segment": {"n_components": 4}})
    assert old.explain.background == "train" and old.explain.n_background == 8
    assert old.segment.evidence == "positive"
    # recorded values win; sections a record lacks, and settings files the user writes, get today's defaults
    new = PipelineSettings.from_record({"explain": {"background": "black"}})
    assert new.explain.background == "black" and new.segment.evidence == "absolute"
    user = PipelineSettings.from_dict({"explain": {"n_background": 8}})
    assert user.explain.background == "median" and user.segment.evidence == "absolute"


def test_one_reference_image_is_enough_and_none_is_told():
    from lvlmva_desktop.core.method.explain import reference_images

    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", 2, 1, (4, 4))).eval()
    x = torch.rand(5, 1, 4, 4)
    one = reference_images(x, ExplainSettings(background="train", n_background=1))
    assert one.shape == (2, 1, 4, 4) and torch.equal(one[0], one[1])  # captum wants two: the same one twice
    res = attribute(model, x[:2], torch.tensor([0, 1]), one, ExplainSettings(), torch.device("cpu"))
    assert torch.isfinite(res.maps).all()
    for kind in ("train", "median"):
        with pytest.raises(ValueError, match="no training images to compare"):
            reference_images(x[:0], ExplainSettings(background=kind))
