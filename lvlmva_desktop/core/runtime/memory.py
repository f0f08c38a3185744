"""Running out of GPU memory is a setting problem, not a crash: batched steps halve the batch and go on.

``run_batched`` drives every batched step that has no state between batches (attributions, predictions,
segmentation, LVLM generation): when a batch raises CUDA out-of-memory it frees the cache, says so (state
message and log warning), and retries the SAME items with half as many per batch; the results of finished
batches are kept, never recomputed. Training cannot do that honestly (a smaller batch changes the
optimisation), so ``stop_training_on_oom`` stops it with advice; the caller saves nothing, so the project
keeps no half-trained model.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from lvlmva_desktop.core.runtime.errors import PlainError
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

log = logging.getLogger(__name__)

T = TypeVar("T")

# Allocation failures that a smaller batch can cure: PyTorch's OutOfMemoryError (CUDA, also raised as a
# RuntimeError by older builds and other back-ends) and the cuBLAS/cuDNN workspace allocations.
_OOM_TEXTS = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")
_NOTICE = "GPU memory ran out at batch "


class GPUOutOfMemory(PlainError, RuntimeError):
    """The device has too little memory for a step even at the smallest batch; the message says what to do."""

    kind = "memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device allocation failure (torch.OutOfMemoryError, or a RuntimeError that says so)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXTS)


def is_memory_notice(message: str) -> bool:
    """True for run_batched's notice that it went on with smaller batches (the GUI keeps these)."""
    return message.startswith(_NOTICE)


def collect_garbage() -> None:
    """``gc.collect()``, except in a worker thread of a program that turned automatic collection off.

    The desktop program collects on its GUI thread only (gui/gc_guard.py): a collection in a worker would
    finalise a closed window's widgets off the GUI thread, which crashes Qt. There the GUI thread's timer
    does the collecting soon after; everywhere else (the command line, tests) this collects at once.
    """
    if gc.isenabled() or threading.current_thread() is threading.main_thread():
        gc.collect()


def free_device_memory() -> None:
    """Drop unreachable tensors and return cached blocks, so that a retry starts from a clean allocator."""
    collect_garbage()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def run_batched(
    fn: Callable[[int, int], T],
    n: int,
    batch_size: int,
    state: TaskState | None = None,
    *,
    what: str,
    report_progress: bool = True,
    progress_message: Callable[[int, int], str] | None = None,
) -> list[T]:
    """``[fn(0, b), fn(b, 2b), ...]`` over ``n`` items; on out-of-memory, the failed range is retried in halves.

    ``fn(start, stop)`` computes items ``start:stop`` and must not depend on how items are grouped (the
    callers' results are per item). ``state.check()`` runs before every batch; progress (``done/n``) after
    each one unless ``report_progress`` is False. ``what`` names the step in messages ("computing
    attributions"). Raises GPUOutOfMemory when a batch of one item does not fit either.
    """
    state = ensure_state(state)
    size = int(batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    out: list[T] = []
    start = 0
    while start < n:
        state.check()
        stop = min(start + size, n)
        failed: str | None = None
        try:
            result = fn(start, stop)
        except Exception as exc:  # noqa: BLE001 - only allocation failures are handled; the rest re-raised
            if not is_out_of_memory(exc):
                raise
            failed = _first_line(exc)
        if failed is not None:  # outside the except block: the failed batch's tensors are unreachable now
            free_device_memory()
            tried = stop - start
            if tried <= 1:
                raise GPUOutOfMemory(
                    f"GPU memory ran out while {what}, even with one item at a time ({failed}). Close other "
                    "programs that use the GPU, use a smaller image size or model, or run on the CPU."
                )
            size = max(1, tried // 2)
            msg = f"{_NOTICE}{tried} while {what}; continuing with batch {size}."
            log.warning(msg)
            state.info(msg)
            continue
        out.append(result)
        start = stop
        if report_progress:
            state.progress(stop, n, progress_message(stop, n) if progress_message else f"{what} ({stop}/{n})")
    return out


def stop_training_on_oom(fit: Callable[..., T]) -> Callable[..., T]:
    """Decorate a training loop taking ``batch_size=`` so that out-of-memory stops it with advice in words.

    Training is not retried with a smaller batch: that would silently change the optimisation the user
    chose. The caller saves a model only after the loop returns, so nothing half-trained is kept.
    """

    @functools.wraps(fit)
    def guarded(*args: Any, **kwargs: Any) -> T:
        try:
            return fit(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only allocation failures are turned into advice
            if not is_out_of_memory(exc):
                raise
            failed = _first_line(exc)
        free_device_memory()  # after the except block, so the failed step's tensors can go
        batch = kwargs.get("batch_size")
        smaller = f" (for example {max(1, batch // 2)} instead of {batch})" if isinstance(batch, int) else ""
        raise GPUOutOfMemory(
            f"GPU memory ran out during training ({failed}). Training stopped and no model was saved; "
            f"start it again with a smaller batch size{smaller}, a smaller image size or model, or on the CPU."
        )

    return guarded
