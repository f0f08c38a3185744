"""Training loops: plain cross-entropy (ERM) and right-for-the-right-reasons fine-tuning (RRR).

Both share one loop; RRR adds mixed batches in which a fixed share of every batch are alignment images
carrying a mask of forbidden input regions, and the input-gradient penalty of ``align.rrr_penalty``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lvlmva_desktop.core.method.align import rrr_penalty
from lvlmva_desktop.core.method.reliance import counterfactual_batch
from lvlmva_desktop.core.method.settings import PENALTIES, AlignSettings, TrainSettings
from lvlmva_desktop.core.runtime.devices import channels_last, in_layout
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.runtime.memory import run_batched, stop_training_on_oom

log = logging.getLogger(__name__)

# At most this many per-step partial results per run (live curves need a few hundred points, not every
# batch of a long run); each averages the batches since the previous one.
MAX_STEP_RECORDS = 200


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    ce: float
    penalty: float
    train_accuracy: float
    seconds: float
    weighted_penalty: float = 0.0  # strength x penalty (the strength may change between rounds)


def _batches(n: int, batch: int, gen: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    return [perm[i : i + batch] for i in range(0, n, batch)]


@stop_training_on_oom
def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    weight_decay: float = 0.0,
    align_x: torch.Tensor | None = None,
    align_y: torch.Tensor | None = None,
    align_masks: torch.Tensor | None = None,
    align_ratio: float = 0.25,
    lambda_: float = 0.0,
    penalty: str = "gradient",
    normalise_gradient: bool = False,
    gamma: float = 0.0,
    state: TaskState | None = None,
) -> list[EpochRecord]:
    """Train ``model`` in place. With an alignment set, each batch holds ``align_ratio`` alignment images
    (drawn with replacement, so small sets are oversampled) and the rest ordinary images (empty masks).

    ``penalty`` (with ``lambda_`` > 0): "gradient", the input-gradient penalty on the alignment images
    (``align.rrr_penalty``; ``normalise_gradient``: its scale-free form); "counterfactual", the
    cross-entropy of counterfactual images made by exchanging the masked content of each alignment image
    with an ordinary image of the batch (``reliance.counterfactual_batch``); "both", their sum. In a mixed
    batch, batch-norm layers normalise every image with the statistics of the ordinary images: the
    alignment set is a skewed sample (the model's most confident images), and letting it shift the
    statistics harmed models that had nothing to unlearn (docs/benchmarks.md, "Batch-norm statistics").

    The data tensors stay on the CPU; batches move to ``device``. Progress is reported per batch, a
    cancel request is honoured between batches (raising Cancelled with the model partly trained: callers
    keep the original untouched by training a copy).

    Partial results: ``{"kind": "step", ...}`` (loss, ce, penalty and training accuracy averaged over the
    batches since the previous step record; at most ``MAX_STEP_RECORDS`` a run, always one for the last
    step) and ``{"kind": "epoch", ...}`` (an EpochRecord) after every epoch.

    GPU out-of-memory stops training with a GPUOutOfMemory that suggests a smaller batch size.
    """
    if penalty not in PENALTIES:
        raise ValueError(f"Unknown penalty '{penalty}'; choose one of {PENALTIES}.")
    state = ensure_state(state)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    last = channels_last(model)  # before the optimiser: the parameters change layout in place
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    use_align = align_x is not None and len(align_x) > 0 and align_ratio > 0
    n_align_per_batch = max(1, round(batch_size * align_ratio)) if use_align else 0
    n_plain_per_batch = batch_size - n_align_per_batch
    n_steps = math.ceil(len(x) / n_plain_per_batch)
    history: list[EpochRecord] = []
    total_steps = epochs * n_steps
    step_every = max(1, math.ceil(total_steps / MAX_STEP_RECORDS))
    window = {"loss": 0.0, "ce": 0.0, "pen": 0.0, "wpen": 0.0, "correct": 0, "n": 0}
    step = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "ce": 0.0, "pen": 0.0, "wpen": 0.0, "correct": 0, "n": 0}
        for idx in _batches(len(x), n_plain_per_batch, gen):
            state.check()
            xb, yb = x[idx], y[idx]
            n_plain = len(idx)
            mb = None
            if use_align:
                a_idx = torch.randint(len(align_x), (n_align_per_batch,), generator=gen)
                xb = torch.cat([xb, align_x[a_idx]])
                yb = torch.cat([yb, align_y[a_idx]])
                mb = align_masks[a_idx].to(device)
            xb, yb = in_layout(xb.to(device), last), yb.to(device)
            loss, ce, pen, logits = batch_loss(
                model, xb, yb, mb, n_plain, lambda_=lambda_, penalty=penalty, normalise=normalise_gradient
            )
            if gamma > 0:
                loss = loss + gamma * sum((p**2).sum() for p in model.parameters())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bs = len(yb)
            batch = {
                "loss": float(loss.detach()) * bs,
                "ce": float(ce.detach()) * bs,
                "pen": float(pen.detach()) * bs,
                "wpen": lambda_ * float(pen.detach()) * bs,
                "correct": int((logits.detach().argmax(1) == yb).sum()),
                "n": bs,
            }
            for k, v in batch.items():
                sums[k] += v
                window[k] += v
            step += 1
            if step % step_every == 0 or step == total_steps:
                state.partial(_step_record(window, step, total_steps, n_steps, epoch + 1))
                window = dict.fromkeys(window, 0)
            state.progress(step, total_steps, f"epoch {epoch + 1}/{epochs}")
        n = max(sums["n"], 1)
        rec = EpochRecord(
            epoch=epoch + 1,
            loss=sums["loss"] / n,
            ce=sums["ce"] / n,
            penalty=sums["pen"] / n,
            train_accuracy=sums["correct"] / n,
            weighted_penalty=sums["wpen"] / n,
            seconds=time.perf_counter() - t0,
        )
        history.append(rec)
        log.info(
            "epoch %d: loss %.4f ce %.4f penalty %.4g acc %.3f",
            rec.epoch,
            rec.loss,
            rec.ce,
            rec.penalty,
            rec.train_accuracy,
        )
        state.partial({"kind": "epoch", **asdict(rec)})
    recompute_batchnorm_stats(model, x, device, state=state)
    model.eval()
    return history


def batch_loss(
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    mb: torch.Tensor | None,
    n_plain: int,
    *,
    lambda_: float = 0.0,
    penalty: str = "gradient",
    normalise: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, cross-entropy, penalty, logits of ``xb``) of one training batch: ``xb[:n_plain]`` ordinary
    images, ``xb[n_plain:]`` alignment images with masks ``mb`` (None: a plain ERM batch).

    The ordinary images (with any counterfactual images) and the alignment images go through the model in
    two passes, the second normalised with the batch-norm statistics of the first pass's ordinary rows
    (``_reference_batchnorm``): the same numbers as one pass over the whole batch, since those statistics
    never depended on the alignment images. The input gradient of the RRR penalty, and its second
    back-propagation, then run through the alignment rows only (a quarter of the batch) instead of through
    every row (benchmarks/rrr_step.py, CPU: 6.1x and 4.5x an ERM step before, 1.3x and 1.45x now, for
    small_cnn and resnet18)."""
    device = xb.device
    pen = torch.zeros((), device=device)
    if mb is None:
        logits = model(xb)
        ce = nn.functional.cross_entropy(logits, yb)
        return ce, ce, pen, logits
    use_gradient = lambda_ > 0 and penalty in ("gradient", "both")
    use_counterfactual = lambda_ > 0 and penalty in ("counterfactual", "both")
    extra_x, extra_y = xb[:0], yb[:0]
    if use_counterfactual:
        # donors: the ordinary images of this batch (random training images)
        d = torch.arange(len(mb), device=device) % max(n_plain, 1)
        extra_x, extra_y = counterfactual_batch(xb[n_plain:], yb[n_plain:], mb, xb[d], yb[d])
    extra_x = extra_x.detach()
    if use_gradient:
        x_align = xb[n_plain:].detach().requires_grad_(True)
        with _reference_batchnorm(model, n_plain) as ref:
            out = model(torch.cat([xb[:n_plain], extra_x]))
            ref.reuse()
            logits_align = model(x_align)
        logits = torch.cat([out[:n_plain], logits_align])
        extra_logits = out[n_plain:]
        pen = pen + rrr_penalty(logits_align, x_align, mb, 0, normalise=normalise)
    else:
        with _reference_batchnorm(model, n_plain):
            out = model(torch.cat([xb, extra_x]))
        logits, extra_logits = out[: len(xb)], out[len(xb) :]
    ce = nn.functional.cross_entropy(logits, yb)
    if len(extra_y):
        pen = pen + nn.functional.cross_entropy(extra_logits, extra_y)
    return ce + lambda_ * pen, ce, pen, logits


class _reference_batchnorm:
    """Batch-norm layers in training mode normalise the whole batch with the statistics of its first
    ``n_ref`` rows (the ordinary training images), so that the alignment and counterfactual images, a
    skewed set, neither shift the statistics nor are normalised differently from the rest. The running
    statistics follow the same rows.

    After ``reuse()``, further forward passes (of the alignment images alone) are normalised with the
    statistics the first pass computed, layer by layer and call by call, and update nothing: two passes
    give the numbers of one pass over the concatenated batch."""

    def __init__(self, model: nn.Module, n_ref: int) -> None:
        self.bns = [
            m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        ]
        self.n_ref = n_ref
        self._stats: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._replay: dict[int, int] | None = None

    def reuse(self) -> None:
        self._replay = dict.fromkeys(self._stats, 0)

    def __enter__(self) -> _reference_batchnorm:
        n_ref = self.n_ref

        def make(m):
            saved = self._stats.setdefault(id(m), [])
            mom = 0.1 if m.momentum is None else m.momentum

            def forward(x):
                if self._replay is not None:
                    k = self._replay[id(m)]
                    self._replay[id(m)] = k + 1
                    return torch.addcmul(*_normalisation(m, saved[k]), x)
                ref = x if n_ref >= len(x) else x[:n_ref]
                if ref.numel() <= ref.shape[1]:  # one value a channel: the fused kernel refuses it
                    stats = ref
                    with torch.no_grad():
                        var, mean = torch.var_mean(ref, [0] + list(range(2, x.ndim)), unbiased=False)
                        m.running_mean.mul_(1 - mom).add_(mom * mean)
                        m.running_var.mul_(1 - mom).add_(mom * var)
                    out_ref = None
                else:
                    # the layer's own fused kernel on the reference rows: the same numbers and the same
                    # running-statistics update as the layer in training mode; it also gives their mean and
                    # 1/std, from which the other rows' (and a replay's) normalisation is derived
                    out_ref, mean, invstd = torch.native_batch_norm(
                        ref, m.weight, m.bias, m.running_mean, m.running_var, True, mom, m.eps
                    )
                    stats = (ref, mean, invstd)
                saved.append(stats)
                if out_ref is not None and ref is x:
                    return out_ref
                rest = torch.addcmul(*_normalisation(m, stats), x if out_ref is None else x[n_ref:])
                return rest if out_ref is None else torch.cat([out_ref, rest])

            return forward

        for m in self.bns:
            m.forward = make(m)
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.bns:
            del m.forward
        self._stats.clear()


def _normalisation(
    m: nn.modules.batchnorm._BatchNorm, ref: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale), broadcastable over a batch, such that shift + x * scale is ``m`` normalising ``x``
    with the statistics of the reference rows ``ref`` (or ``(ref, mean, invstd)``, their statistics
    already computed), differentiable through them: (x - mean) / sqrt(var + eps) * weight + bias as one
    multiply-add with per-channel factors, since the double back-propagation of the RRR penalty runs
    through every big elementwise operation here."""
    if isinstance(ref, tuple):
        mean, invstd = _ReferenceStatistics.apply(*ref)
        shape = [1, ref[0].shape[1]] + [1] * (ref[0].ndim - 2)
    else:
        var, mean = torch.var_mean(ref, [0] + list(range(2, ref.ndim)), unbiased=False)
        invstd = torch.rsqrt(var + m.eps)
        shape = [1, ref.shape[1]] + [1] * (ref.ndim - 2)
    scale = invstd * m.weight if m.affine else invstd
    shift = -mean * scale
    if m.affine:
        shift = shift + m.bias
    return shift.view(shape), scale.view(shape)


class _ReferenceStatistics(torch.autograd.Function):
    """The per-channel mean and 1/sqrt(var + eps) of ``x`` over every dimension but the channels, given
    their values (from the fused batch-norm kernel, which does not differentiate them), as differentiable
    functions of ``x``. The backward is one multiply-add over ``x``; Welford's var_mean in autograd costs
    about seven times the fused kernel on a CPU."""

    @staticmethod
    def forward(ctx, x, mean, invstd):
        ctx.save_for_backward(x, mean, invstd)
        return mean.clone(), invstd.clone()

    @staticmethod
    def backward(ctx, g_mean, g_invstd):
        x, mean, invstd = ctx.saved_tensors
        n = x.numel() / x.shape[1]
        g_mean = torch.zeros_like(mean) if g_mean is None else g_mean
        g_var = torch.zeros_like(mean) if g_invstd is None else g_invstd * (-0.5) * invstd**3
        # d mean / dx = 1/n; d var / dx = 2 (x - mean) / n; so g = x * a + b with per-channel a and b
        a = g_var * (2.0 / n)
        b = g_mean / n - mean * a
        shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
        return torch.addcmul(b.view(shape), x, a.view(shape)), None, None


def _step_record(window: dict, step: int, total_steps: int, steps_per_epoch: int, epoch: int) -> dict:
    n = max(window["n"], 1)
    return {
        "kind": "step",
        "step": step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "epoch": epoch,
        "loss": window["loss"] / n,
        "ce": window["ce"] / n,
        "penalty": window["pen"] / n,
        "weighted_penalty": window["wpen"] / n,
        "train_accuracy": window["correct"] / n,
    }


@torch.no_grad()
def recompute_batchnorm_stats(
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
    state: TaskState | None = None,
) -> bool:
    """Set batch-norm running statistics to the exact mean/variance over ``x`` with the final weights.

    The exponential running averages lag behind weights that moved fast in a short training run, and in
    eval mode the model then behaves very differently from training (seen here: 98% vs 72% training
    accuracy). One forward pass over the data with cumulative averaging fixes that.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    old = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(x), batch_size):
        if state is not None:
            state.check()
        model(x[i : i + batch_size].to(device))
    for m, mom in zip(bns, old):
        m.momentum = mom
    model.eval()
    return True


def train_erm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    device: torch.device,
    state: TaskState | None = None,
) -> list[EpochRecord]:
    """The original model f: plain cross-entropy from the model's current weights."""
    return fit(
        model,
        x,
        y,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=settings.seed,
        device=device,
        weight_decay=settings.weight_decay,
        state=state,
    )


def fine_tune_rrr(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    align_x: torch.Tensor,
    align_y: torch.Tensor,
    align_masks: torch.Tensor,
    settings: AlignSettings,
    device: torch.device,
    state: TaskState | None = None,
    strength: float | None = None,
    epochs: int | None = None,
) -> tuple[nn.Module, list[EpochRecord]]:
    """RRR fine-tuning of a COPY of the original model (the audited original is never touched).

    ``strength``/``epochs`` override the settings' (``strength.align_with_strength`` chooses them when
    ``align.lambda`` is "auto"); with "auto" the input-gradient penalty takes its scale-free form."""
    tuned = copy.deepcopy(model)
    hist = fit(
        tuned,
        x,
        y,
        epochs=settings.epochs if epochs is None else epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=settings.seed,
        device=device,
        align_x=align_x,
        align_y=align_y,
        align_masks=align_masks,
        align_ratio=settings.align_ratio,
        lambda_=settings.strength_value() if strength is None else strength,
        penalty=settings.penalty,
        normalise_gradient=settings.strength_is_auto(),
        gamma=settings.gamma,
        state=state,
    )
    return tuned, hist


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
    state: TaskState | None = None,
    what: str = "predicting",
) -> torch.Tensor:
    """Softmax probabilities (N, K) on the CPU, computed in eval mode in batches (halved on GPU
    out-of-memory, finished batches kept; ``state`` gets progress, cancel checks and that message)."""
    model.eval().to(device)
    last = channels_last(model)
    out = run_batched(
        lambda a, b: torch.softmax(model(in_layout(x[a:b].to(device), last)), dim=1).cpu(),
        len(x),
        batch_size,
        state,
        what=what,
        progress_message=lambda done, n: what,
    )
    return torch.cat(out) if out else torch.empty(0)
