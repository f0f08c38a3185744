"""Attributions toward the true label (METHOD.md step 3): DeepLIFT-SHAP with captum, batched.

The references (``ExplainSettings.background``) are, by default, the typical training image: the per-pixel
median of up to 256 random training images, so an image's evidence is how it differs from the typical one,
also where it is darker (a faint or missing mark). METHOD.md's default, a small random set of training images
(16), and black images are the other choices (docs/method.md, step 3, says why the default departs). The
result is summed over colour channels, giving one (H, W) map per image; the convergence delta (DeepLIFT's
summation-to-delta error) is returned so callers can check and record it.

DeepLIFT has rules for ReLU-like activations, pooling and the linear layers only. For a network with
attention, GELU, SiLU, Hardswish, squeeze-and-excitation products or layer norm (ViT, Swin, ConvNeXt,
EfficientNet, MobileNetV3), or one whose summation-to-delta fails on a test image, ``choose_method`` says
so in words and the attributions are integrated gradients from the same reference image (the path
integral of the gradient, exact in the limit for any differentiable network); the method used and why
are recorded with the explanation.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lvlmva_desktop.core.method.models import check_no_reused_modules
from lvlmva_desktop.core.method.settings import METHODS, ExplainSettings
from lvlmva_desktop.core.runtime.costs import estimate_passes, warn_if_slow
from lvlmva_desktop.core.runtime.devices import channels_last, exact_fp32, in_layout
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.runtime.memory import run_batched

log = logging.getLogger(__name__)

# captum announces on every call that it sets hooks on non-linear modules; that is expected here.
warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)


@dataclass
class Attributions:
    maps: torch.Tensor  # (N, H, W) summed over channels
    deltas: torch.Tensor  # (N,) mean absolute convergence delta per image (0 for gradient methods)
    target_gap: torch.Tensor  # (N,) |f_y(x) - mean_b f_y(b)|, to put deltas into scale
    method: str = "deeplift_shap"  # the method the maps were computed with
    note: str = ""  # why it is not the one the settings asked for ("" when it is)


#: steps of integrated gradients (Gauss-Legendre) when DeepLIFT cannot be used
IG_STEPS = 32
#: summation-to-delta error, relative to the output change, above which DeepLIFT is not trusted
DEEPLIFT_TOLERANCE = 0.01
#: module types DeepLIFT has no rule for; captum would treat them as linear and the attributions be wrong
_NO_DEEPLIFT_RULE = {
    nn.GELU: "GELU activations",
    nn.SiLU: "SiLU (swish) activations",
    nn.Hardswish: "Hardswish activations",
    nn.Hardsigmoid: "Hardsigmoid gates",
    nn.Mish: "Mish activations",
    nn.MultiheadAttention: "attention",
    nn.LayerNorm: "layer normalisation",
}


def _maxpool2d_rule(
    module: nn.Module,
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    grad_input: torch.Tensor,
    grad_output: torch.Tensor,
    eps: float = 1e-10,
) -> torch.Tensor:
    """DeepLIFT multipliers of a MaxPool2d (captum's rule, with overlapping windows accumulated).

    captum 0.9 routes the output change back with max_unpool, which assigns instead of adding: when
    windows overlap (ResNet's 3x3/2 stem pool) one input can win several windows and all but one
    contribution is lost. Here the routing is a scatter-add, identical where windows do not overlap.
    """
    with torch.no_grad():
        x, r = inputs.chunk(2)
        o, o_r = outputs.chunk(2)
        delta_in = torch.cat([x - r, x - r])
        xmax = torch.max(o, o_r)
        d_via_x = torch.cat([xmax - o_r] * 2) * grad_output
        d_via_r = torch.cat([o - xmax] * 2) * grad_output
        _, idx = F.max_pool2d(
            inputs, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode, True
        )
        ix, ir = idx.chunk(2)
        routed = torch.zeros_like(inputs).flatten(2)
        routed.scatter_add_(2, torch.cat([ix, ix]).flatten(2), d_via_x.flatten(2))
        routed.scatter_add_(2, torch.cat([ir, ir]).flatten(2), d_via_r.flatten(2))
        routed = routed.view_as(inputs)
        small = delta_in.abs() < eps
        return torch.where(
            small, grad_input, routed / torch.where(small, torch.ones_like(delta_in), delta_in)
        )


@contextlib.contextmanager
def _fixed_maxpool_rule() -> Iterator[None]:
    """captum's DeepLIFT rules while attributing: the max-pool rule above, and the rescale rule for ReLU6
    and Hardtanh (MobileNetV2's activations: elementwise, so the rule captum uses for ReLU is exact for
    them; captum 0.9 has no entry and would treat them as linear)."""
    from captum.attr._core import deep_lift

    table = deep_lift.SUPPORTED_NON_LINEAR
    saved = dict(table)
    table[nn.MaxPool2d] = _maxpool2d_rule
    table.setdefault(nn.ReLU6, deep_lift.nonlinear)
    table.setdefault(nn.Hardtanh, deep_lift.nonlinear)
    try:
        yield
    finally:
        table.clear()
        table.update(saved)


def background_set(x_train: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` training images drawn at random with ``seed`` (DeepLIFT-SHAP's reference distribution)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x_train), generator=gen)[: min(n, len(x_train))]
    return x_train[idx]


def black_references(like: torch.Tensor) -> torch.Tensor:
    """Two black images shaped like ``like``'s images: DeepLIFT-SHAP over them is DeepLIFT with a black
    reference (captum wants at least two references)."""
    return torch.zeros(2, *like.shape[1:], dtype=like.dtype)


#: training images the per-pixel median reference is taken over
MEDIAN_SAMPLE = 256


def median_references(sample: torch.Tensor) -> torch.Tensor:
    """Two copies of the per-pixel median of ``sample`` (N, C, H, W): the typical training image."""
    med = sample.float().median(dim=0).values.to(sample.dtype)
    return torch.stack([med, med])


def reference_draw(n_train: int, settings: ExplainSettings) -> torch.Tensor | None:
    """Indices of the training images the references are made from (None: black references need none)."""
    settings.validate()
    if settings.background == "black":
        return None
    n = MEDIAN_SAMPLE if settings.background == "median" else settings.n_background
    return background_set(torch.arange(n_train), n, settings.seed)


def references_from(
    drawn: torch.Tensor | None, like: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """The reference images from the drawn training images (``reference_draw``); ``like``: any images of
    the data set (their shape and dtype make black references)."""
    if settings.background == "black":
        return black_references(like)
    if drawn is None or len(drawn) == 0:
        raise ValueError("There are no training images to compare the images with (reference images).")
    if settings.background == "median":
        return median_references(drawn)
    # captum's DeepLIFT-SHAP wants at least two references: one image twice is DeepLIFT with that image
    return drawn if len(drawn) > 1 else torch.cat([drawn, drawn])


def reference_images(x_train: torch.Tensor, settings: ExplainSettings) -> torch.Tensor:
    """The references ``settings.background`` asks for: random training images (the paper's choice), black
    images, or the per-pixel median of up to ``MEDIAN_SAMPLE`` random training images."""
    idx = reference_draw(len(x_train), settings)
    return references_from(x_train[idx] if idx is not None else None, x_train, settings)


#: pixels a CPU batch of attributions runs through the network at most (rows: images times references
#: for DeepLIFT-SHAP, at the network's input size): DeepLIFT keeps every row's activations for its
#: backward pass, about 0.1 GB a row for a ResNet-18 at 224x224 and 0.2 GB for a DenseNet-121
CPU_BATCH_PIXELS = 16 * 224 * 224


def cpu_batch(
    batch_size: int, model: nn.Module, x: torch.Tensor, device: torch.device, rows_per_image: int = 1
) -> int:
    """The batch size for ``x`` on ``device``: as set, except that large images on a CPU (which cannot
    fall back to smaller batches when memory runs out, as a GPU does) get as many as CPU_BATCH_PIXELS
    allows. Attributions of an image do not depend on the batch it is in."""
    if device.type != "cpu" or x.ndim < 3:
        return batch_size
    pixels = x.shape[-2] * x.shape[-1]
    size = getattr(getattr(model, "pre", None), "size", None)
    if size is not None:
        pixels = max(pixels, size[0] * size[1])
    return max(1, min(batch_size, CPU_BATCH_PIXELS // (pixels * max(1, rows_per_image))))


def deeplift_obstacles(
    model: nn.Module, x1: torch.Tensor, t1: torch.Tensor, background: torch.Tensor
) -> list[str]:
    """What keeps DeepLIFT-SHAP from explaining ``model`` correctly, in words ([] when nothing does):
    operations it has no rule for, modules called twice, and a failed summation-to-delta check on the
    image ``x1`` (one image, on the model's device) against ``background``."""
    from captum.attr import DeepLiftShap

    found: dict[str, None] = {}
    for mod in model.modules():
        for kind, words in _NO_DEEPLIFT_RULE.items():
            if isinstance(mod, kind):
                found[words] = None
        name = type(mod).__name__
        if "Attention" in name:
            found["attention"] = None
        elif name == "SqueezeExcitation":
            found["squeeze-and-excitation products"] = None
    if found:
        return list(found)
    reused = check_no_reused_modules(model, x1)
    if reused:
        return [f"modules used more than once ({', '.join(reused[:3])})"]
    try:
        with _fixed_maxpool_rule():
            _, delta = DeepLiftShap(model).attribute(
                x1, baselines=background, target=t1, return_convergence_delta=True
            )
        with torch.no_grad():
            gap = (model(x1)[0, t1[0]] - model(background)[:, t1[0]].mean()).abs().item()
    except RuntimeError as e:  # typically an in-place operation on a hooked tensor
        return [f"an operation DeepLIFT's hooks cannot follow ({str(e).splitlines()[0][:120]})"]
    err = delta.abs().mean().item()
    if gap > 1e-6 and err / gap > DEEPLIFT_TOLERANCE:
        return [
            f"its summation-to-delta check fails by {err / gap:.0%} on a test image (operations it has no rule for)"
        ]
    return []


def choose_method(
    model: nn.Module, x1: torch.Tensor, t1: torch.Tensor, background: torch.Tensor, settings: ExplainSettings
) -> tuple[str, str]:
    """The method the attributions are computed with, and a note in words when it is not the one asked."""
    if settings.method != "deeplift_shap":
        return settings.method, ""
    obstacles = deeplift_obstacles(model, x1, t1, background)
    if not obstacles:
        return "deeplift_shap", ""
    return "integrated_gradients", (
        f"DeepLIFT-SHAP cannot explain this network correctly ({'; '.join(obstacles)}): its attributions "
        "are integrated gradients from the same reference image instead."
    )


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    background: torch.Tensor,
    settings: ExplainSettings,
    device: torch.device,
    state: TaskState | None = None,
) -> Attributions:
    """Attributions of ``model`` for ``x`` toward ``targets``, in batches, on ``device``."""
    from captum.attr import DeepLiftShap, InputXGradient, IntegratedGradients

    state = ensure_state(state)
    if settings.method not in METHODS:
        raise ValueError(f"Unknown attribution method '{settings.method}'; choose one of {METHODS}.")
    model = model.to(device).eval()
    last = channels_last(model)
    bg = in_layout(background.to(device), last)
    method, note = "deeplift_shap", ""
    if len(x):
        with exact_fp32(device):
            method, note = choose_method(model, x[:1].to(device), targets[:1].to(device), bg, settings)
    if note:
        log.info("%s", note)
        state.info(note)
    batch = cpu_batch(settings.batch_size, model, x, device, len(bg) if method == "deeplift_shap" else 1)
    if len(x):
        passes = IG_STEPS if method == "integrated_gradients" else len(bg) if method == "deeplift_shap" else 1
        warn_if_slow(state, device, estimate_passes(model, x, len(x), passes, device), "attributions")

    def one_batch(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xb = in_layout(x[start:stop].to(device), last)
        tb = targets[start:stop].to(device)
        if method == "integrated_gradients":
            base = bg.mean(0, keepdim=True).expand_as(xb).contiguous()
            attr, delta = IntegratedGradients(model).attribute(
                xb,
                baselines=base,
                target=tb,
                n_steps=IG_STEPS,
                internal_batch_size=max(len(xb), batch),
                return_convergence_delta=True,
            )
            delta = delta.detach().abs()
        elif method == "deeplift_shap":
            with _fixed_maxpool_rule():
                attr, delta = DeepLiftShap(model).attribute(
                    xb, baselines=bg, target=tb, return_convergence_delta=True
                )
            delta = delta.detach().view(len(xb), -1).abs().mean(1)
        else:
            attr = InputXGradient(model).attribute(xb.clone().requires_grad_(True), target=tb)
            delta = torch.zeros(len(xb), device=device)
        with torch.no_grad():
            fx = model(xb).gather(1, tb[:, None]).squeeze(1)
            fb = model(bg).mean(0)[tb]
        return attr.detach().sum(dim=1).cpu(), delta.cpu(), (fx - fb).abs().cpu()

    # On GPU out-of-memory the batch is halved and the finished batches kept (core/runtime/memory.py).
    with exact_fp32(device):  # TF32 convolutions on CUDA break DeepLIFT's summation-to-delta
        parts = run_batched(
            one_batch,
            len(x),
            batch,
            state,
            what="computing attributions",
            progress_message=lambda done, n: "attributions",
        )
    if not parts:
        h, w = x.shape[-2:]
        return Attributions(torch.empty(0, h, w), torch.empty(0), torch.empty(0), method, note)
    maps, deltas, gaps = (torch.cat(p) for p in zip(*parts))
    return Attributions(maps, deltas, gaps, method, note)
