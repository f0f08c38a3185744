"""Any torchvision classifier: built attribution-safe, with its preprocessing inside, explained by
DeepLIFT-SHAP where captum has rules for its operations and by integrated gradients (said in words) where
it has not."""

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from lvlmva_desktop.core.method.align import rrr_penalty
from lvlmva_desktop.core.method.architectures import (
    Preprocessed,
    all_architectures,
    check_architecture,
    default_preprocessing,
    guess_architectures,
    make_attribution_safe,
)
from lvlmva_desktop.core.method.explain import ExplainSettings, attribute, median_references
from lvlmva_desktop.core.method.models import (
    build_model,
    check_no_reused_modules,
    load_pretrained_weights,
    spec_for,
)

REQUIRED = (
    "densenet121",
    "efficientnet_b0",
    "convnext_tiny",
    "mobilenet_v3_large",
    "resnet18",
    "resnet34",
    "resnet50",
    "vit_b_16",
    "swin_t",
)


def test_every_torchvision_classifier_is_an_architecture_and_a_typo_gets_the_close_names():
    names = all_architectures()
    assert set(REQUIRED) <= set(names)
    assert set(torchvision.models.list_models(module=torchvision.models)) <= set(names)
    with pytest.raises(ValueError, match="Did you mean densenet121"):
        check_architecture("densenet12")


# (architecture, method expected, words the note must hold)
FAMILIES = [
    ("resnet34", "deeplift_shap", ""),
    ("densenet121", "deeplift_shap", ""),  # its last ReLU is a function call there: made a module here
    ("vgg11_bn", "deeplift_shap", ""),  # ReLU straight into max-pool: separated
    ("mobilenet_v2", "deeplift_shap", ""),
    ("efficientnet_b0", "integrated_gradients", "SiLU"),
    ("convnext_tiny", "integrated_gradients", "GELU"),
    ("mobilenet_v3_large", "integrated_gradients", "Hardswish"),
    ("swin_t", "integrated_gradients", "attention"),
    pytest.param("vit_b_16", "integrated_gradients", "attention", marks=pytest.mark.slow),  # 224 px
]


@pytest.mark.parametrize("arch,method,words", FAMILIES)
def test_attributions_for_each_family_on_a_grey_project(arch, method, words):
    torch.manual_seed(0)
    size = (32, 32)
    spec = spec_for(arch, 2, 1, size, origin="finetune")  # ImageNet normalisation, grey repeated
    model = build_model(spec).eval()
    assert isinstance(model, Preprocessed)
    for m in model.modules():  # torchvision starts some heads at zero: no gradient reaches the input
        if isinstance(m, torch.nn.Linear) and not m.weight.abs().sum():
            torch.nn.init.normal_(m.weight, std=0.1)
    x = torch.rand(2, 1, *size)
    refs = median_references(torch.rand(8, 1, *size))
    attr = attribute(model, x, torch.tensor([0, 1]), refs, ExplainSettings(), torch.device("cpu"))
    assert attr.method == method
    assert words in attr.note
    if method == "deeplift_shap":
        assert attr.note == ""
    else:
        assert attr.note.startswith("DeepLIFT-SHAP cannot explain this network correctly")
    assert attr.maps.shape == (2, *size)  # at the project's size, whatever the network's input
    assert torch.isfinite(attr.maps).all() and attr.maps.abs().sum() > 0
    # both methods are complete: the attributions add up to the change of the output from the reference
    rel = attr.deltas / attr.target_gap.clamp_min(1e-6)
    assert rel.max() < (1e-3 if method == "deeplift_shap" else 0.05), rel


def test_a_network_that_calls_one_relu_twice_falls_back_in_words():
    model = torchvision.models.resnet18(weights=None, num_classes=2).eval()  # torchvision's own blocks
    assert check_no_reused_modules(model, torch.rand(1, 3, 32, 32))
    attr = attribute(
        model,
        torch.rand(2, 3, 32, 32),
        torch.tensor([0, 1]),
        torch.rand(2, 3, 32, 32),
        ExplainSettings(),
        torch.device("cpu"),
    )
    assert attr.method == "integrated_gradients" and "used more than once" in attr.note


def test_attribution_safety_changes_no_weight_and_no_output():
    for arch in ("densenet121", "vgg11_bn", "resnet50", "mobilenet_v2"):
        torch.manual_seed(0)
        plain = torchvision.models.get_model(arch, weights=None, num_classes=3).eval()
        safe = make_attribution_safe(torchvision.models.get_model(arch, weights=None, num_classes=3)).eval()
        safe.load_state_dict(plain.state_dict())  # the same names and shapes: a site's file loads into it
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(plain(x), safe(x), atol=1e-5), arch
        assert check_no_reused_modules(safe, x) == []


def test_preprocessing_is_recorded_and_applied_inside_the_model(tmp_path):
    from lvlmva_desktop.core.store.project import Project

    spec = spec_for("efficientnet_b0", 2, 1, (48, 40), origin="imported")
    pre = spec.preprocessing()
    assert pre.input_size == (224, 224) and pre.grey_to_colour
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406)) and pre.std == pytest.approx(
        (0.229, 0.224, 0.225)
    )
    model = build_model(spec).eval()
    x = torch.rand(3, 1, 48, 40)
    by_hand = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(224, 224), mode="bilinear")
    by_hand = (by_hand - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(by_hand), atol=1e-5)
    # stored with the model version and rebuilt from it
    with Project.create(tmp_path / "p", "t", ["a", "b"], (48, 40), 1) as p:
        mid = p.save_model(model, spec, "m", "imported", None, None)
        loaded, spec2 = p.load_model(mid)
        assert spec2.preprocessing() == pre
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    # the user's own values win over the defaults; one mean/std per channel or one for all
    mine = spec_for(
        "resnet34",
        2,
        3,
        (64, 64),
        origin="imported",
        preprocess={"input_size": (96, 96), "mean": [0.5], "std": [0.25]},
    )
    assert mine.preprocessing().input_size == (96, 96) and mine.preprocessing().mean == (0.5,)
    with pytest.raises(ValueError, match="takes 1 channel"):
        spec_for("small_cnn", 2, 1, (32, 32), preprocess={"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]})
    # our own networks trained here see the images as stored: no wrapper, as before
    own = spec_for("small_cnn", 2, 3, (32, 32))
    assert own.preprocessing().is_identity((32, 32)) and not isinstance(build_model(own), Preprocessed)


def test_rrr_differentiates_twice_through_the_preprocessing():
    torch.manual_seed(0)
    spec = spec_for("resnet34", 2, 1, (32, 32), origin="finetune", preprocess={"input_size": (64, 64)})
    model = build_model(spec).train()
    x = torch.rand(4, 1, 32, 32, requires_grad=True)
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, :8, :8] = True
    pen = rrr_penalty(model(x), x, masks)
    pen.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert pen.item() > 0 and grads and all(torch.isfinite(g).all() for g in grads)


def test_default_preprocessing_by_origin():
    assert default_preprocessing("small_cnn", (64, 64), 3, "imported").is_identity((64, 64))
    scratch = default_preprocessing("resnet34", (64, 64), 3, "scratch")
    assert scratch.is_identity((64, 64))
    fine = default_preprocessing("densenet121", (64, 64), 3, "finetune")
    assert fine.input_size == (64, 64) and fine.mean == pytest.approx((0.485, 0.456, 0.406))
    assert default_preprocessing("vit_b_16", (64, 64), 3, "scratch").input_size == (224, 224)  # fixed size


def test_a_file_of_another_architecture_is_named_in_the_message(tmp_path):
    torch.manual_seed(0)
    src = torchvision.models.densenet121(weights=None, num_classes=2)
    path = tmp_path / "site_model.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    spec = spec_for("resnet50", 2, 3, (64, 64), origin="imported")
    with pytest.raises(ValueError) as e:
        load_pretrained_weights(build_model(spec), spec, path, complete=True)
    text = str(e.value)
    assert "do not fit a resnet50" in text and "not in the file (first conv1.weight" in text
    assert "tensors in the file are not in a resnet50 (first classifier.bias, classifier.weight" in text
    assert "They look like a densenet121 (--arch densenet121)" in text
    assert guess_architectures(src.state_dict()) == ["densenet121"]


def test_relu6_gets_deeplifts_rescale_rule_where_it_saturates():
    """MobileNetV2's ReLU6: captum has no rule for it; without one the summation-to-delta fails once
    activations pass 6 (as in a trained network)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).eval()
    with torch.no_grad():
        model[0].weight.mul_(40)  # most activations saturate
    x = torch.rand(3, 1, 8, 8)
    attr = attribute(
        model, x, torch.tensor([0, 1, 0]), torch.zeros(2, 1, 8, 8), ExplainSettings(), torch.device("cpu")
    )
    assert attr.method == "deeplift_shap"
    assert (attr.deltas / attr.target_gap.clamp_min(1e-6)).max() < 1e-3
