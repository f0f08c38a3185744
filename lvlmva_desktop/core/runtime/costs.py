"""How long a step will take, measured on a trial batch before the work starts.

A ViT or a ResNet at 224x224 on a CPU can need hours where the demo needs seconds. Before the long part of
a step starts, ``estimate_*`` times one forward and backward pass of the model on a few of the step's own
images (after a warm-up pass) and scales it to the step's work; ``warn_if_slow`` tells the user in words
when a CPU would need more than half an hour, and suggests the GPU. The user can cancel at any time.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from lvlmva_desktop.core.runtime.jobs import TaskState

log = logging.getLogger(__name__)

#: steps estimated to take longer than this on a CPU are announced before they start
SLOW_CPU_SECONDS = 30 * 60
_NOTICE = "This step will take about"
#: images in the timed trial batch
TRIAL_IMAGES = 4


def is_slow_notice(message: str) -> bool:
    """True for ``warn_if_slow``'s notice (the window keeps it in Messages)."""
    return message.startswith(_NOTICE)


def seconds_per_image(
    model: nn.Module, x: torch.Tensor, device: torch.device, backward: bool = True
) -> float:
    """Seconds of one forward (and backward) pass per image, timed on up to TRIAL_IMAGES of ``x``
    after a warm-up; the model's weights, gradients and batch-norm statistics are left as they were."""
    if len(x) == 0:
        return 0.0
    was_training = model.training
    model.eval()  # no batch-norm statistics are updated by the trial
    try:
        xb = x[:TRIAL_IMAGES].to(device)

        def one() -> None:
            inp = xb.clone().requires_grad_(backward)
            out = model(inp)
            if backward:
                (g,) = torch.autograd.grad(out.sum(), inp)

        one()  # warm-up: allocation, kernel selection
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        one()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / len(xb)
    except RuntimeError as e:  # out of memory, or anything else: no estimate; the step itself will tell
        log.info("no time estimate (%s)", str(e).splitlines()[0][:200])
        return 0.0
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)


def estimate_training(
    model: nn.Module, x: torch.Tensor, batch_size: int, epochs: int, device: torch.device, factor: float = 1.0
) -> float:
    """Seconds to train ``epochs`` over ``x`` (``factor``: the cost of a step relative to plain
    cross-entropy, e.g. about 2 for RRR's second backward pass)."""
    del batch_size  # the cost per image hardly depends on it on a CPU
    return seconds_per_image(model, x, device) * len(x) * epochs * factor


def estimate_passes(
    model: nn.Module, x: torch.Tensor, n_images: int, passes: float, device: torch.device
) -> float:
    """Seconds for ``passes`` forward and backward passes over ``n_images`` images like ``x``'s."""
    return seconds_per_image(model, x, device) * n_images * passes


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} minutes"
    return f"{seconds / 3600:.1f} hours"


def warn_if_slow(state: TaskState, device: torch.device, seconds: float, what: str) -> bool:
    """Tell the user (job message, log) when ``what`` would take over SLOW_CPU_SECONDS on a CPU; returns
    whether it did."""
    if device.type != "cpu" or seconds <= SLOW_CPU_SECONDS:
        return False
    msg = (
        f"{_NOTICE} {duration(seconds)} ({what}, estimated from a trial batch on this computer's CPU). "
        "A GPU does it in a fraction of that: on a workstation with an NVIDIA GPU the program uses it by "
        "itself (on the command line: --device cuda). You can cancel at any time; finished steps are kept."
    )
    log.warning("%s", msg)
    state.info(msg)
    return True
