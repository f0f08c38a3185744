"""Attributions toward the true label (METHOD.md step 3): DeepLIFT-SHAP with captum, batched.

The references (``ExplainSettings.background``) are, by default, the typical training image: the per-pixel
median of up to 256 random training images, so an image's evidence is how it differs from the typical one,
also where it is darker (a faint or missing mark). METHOD.md's default, a small random set of training images
(16), and black images are the other choices (docs/method.md, step 3, says why the default departs). The
result is summed over colour channels, giving one (H, W) map per image; the convergence delta (DeepLIFT's
summation-to-delta error) is returned so callers can check and record it.
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

from .devices import exact_fp32
from .jobs import TaskState, ensure_state
from .memory import run_batched
from .models import check_no_reused_modules
from .settings import METHODS, ExplainSettings

log = logging.getLogger(__name__)

# captum announces on every call that it sets hooks on non-linear modules; that is expected here.
warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)


@dataclass
class Attributions:
    maps: torch.Tensor  # (N, H, W) summed over channels
    deltas: torch.Tensor  # (N,) mean absolute convergence delta per image (0 for gradient methods)
    target_gap: torch.Tensor  # (N,) |f_y(x) - mean_b f_y(b)|, to put deltas into scale


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
    from captum.attr._core import deep_lift

    old = deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d]
    deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d] = _maxpool2d_rule
    try:
        yield
    finally:
        deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d] = old


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
    from captum.attr import DeepLiftShap, InputXGradient

    state = ensure_state(state)
    if settings.method not in METHODS:
        raise ValueError(f"Unknown attribution method '{settings.method}'; choose one of {METHODS}.")
    model = model.to(device).eval()
    reused = check_no_reused_modules(model, x[:1].to(device))
    if reused and settings.method == "deeplift_shap":
        raise ValueError(f"Model reuses modules {reused}; DeepLIFT would give wrong attributions.")
    bg = background.to(device)

    def one_batch(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xb = x[start:stop].to(device)
        tb = targets[start:stop].to(device)
        if settings.method == "deeplift_shap":
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

    # On GPU out-of-memory the batch is halved and the finished batches kept (core/memory.py).
    with exact_fp32(device):  # TF32 convolutions on CUDA break DeepLIFT's summation-to-delta
        parts = run_batched(
            one_batch,
            len(x),
            settings.batch_size,
            state,
            what="computing attributions",
            progress_message=lambda done, n: "attributions",
        )
    if not parts:
        h, w = x.shape[-2:]
        return Attributions(torch.empty(0, h, w), torch.empty(0), torch.empty(0))
    maps, deltas, gaps = (torch.cat(p) for p in zip(*parts))
    return Attributions(maps, deltas, gaps)
