"""The penalty strength that chooses itself (METHOD.md step 8; docs/method.md, "How strong").

The counterfactual penalty (``train.fit``) is in the units of the loss: at strength 1 every exchanged image
counts as much as an ordinary one, on any data set, model and image size, so its strength needs no
calibration. What still depends on the data is whether there is anything to remove and whether it went, and
both are measured directly, as the model's reliance on the masked regions (``reliance.masked_reliance``:
how much its prediction moves when their content is exchanged with other training images):

1. No masked image, or a reliance of the original model below ``AlignSettings.reliance_floor``: there is
   nothing to remove, and fine-tuning could only do harm; the aligned version keeps the original weights
   (strength 0).
2. Otherwise fine-tune at strength 1 for ``epochs`` epochs.
3. If the reliance is still above the target (a quarter of the reliance before, and at least the floor),
   go on at twice the strength for half the epochs, at most twice (strength 4); a round whose reliance is
   not lower than the one before is undone.

Everything above is recorded (``StrengthChoice``), with the reason in words, so the expert and the auditor
see what was chosen and why. A strength set by hand is used as it is (one round, no escalation), and so is
the paper's input-gradient penalty, whose scale depends on the data (docs/method.md).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from lvlmva_desktop.core.method.reliance import Reliance, masked_reliance
from lvlmva_desktop.core.method.settings import AlignSettings
from lvlmva_desktop.core.method.train import EpochRecord, fine_tune_rrr
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

#: target for the reliance after alignment, as a share of the reliance before
TARGET_SHARE = 0.25
#: the strength never goes above this (two doublings)
MAX_STRENGTH = 4.0
#: masked images on which reliance is measured (a fixed subset: the same before and after)
MAX_RELIANCE_IMAGES = 128


@dataclass
class StrengthChoice:
    """What strength alignment used, and why (recorded with the run and the model version)."""

    mode: str  # "auto" or "set"
    penalty: str
    strength: float  # the final strength (0 = not fine-tuned: nothing to remove)
    reason: str
    reliance_before: dict | None = None  # Reliance.to_dict() of the original model
    reliance_after: dict | None = None  # ... of the aligned model
    target: float | None = None
    rounds: list[dict] = field(default_factory=list)  # {"strength", "epochs", "reliance", "kept"}
    masked_images: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def fine_tuned(self) -> bool:
        return self.strength > 0

    def short(self) -> str:
        """A few words for a status line: the strength, how it was chosen, the reliance before -> after."""
        how = "automatic" if self.mode == "auto" else "set by hand"
        b = self.reliance_before["mean"] if self.reliance_before else None
        a = self.reliance_after["mean"] if self.reliance_after else None
        text = f"strength {self.strength:g} ({how})"
        if b is not None and a is not None and self.fine_tuned:
            text += f", reliance on the masked regions {b:.0%} → {a:.0%}"
        elif b is not None and not self.fine_tuned:
            text += f": nothing to remove (reliance {b:.0%})"
        return text

    def summary(self) -> str:
        """One line for the CLI, the Messages pane and the report."""
        b = self.reliance_before["mean"] if self.reliance_before else None
        a = self.reliance_after["mean"] if self.reliance_after else None
        rel = ""
        if b is not None and a is not None:
            rel = f"; reliance on the masked regions {b:.3f} -> {a:.3f}"
        elif b is not None:
            rel = f"; reliance on the masked regions {b:.3f}"
        how = "chosen automatically" if self.mode == "auto" else "set by hand"
        return f"strength {self.strength:g} ({how}, {self.penalty} penalty){rel}. {self.reason}"


def _measure(model: nn.Module, x, masks, pool, device, seed) -> Reliance | None:
    return masked_reliance(model, x, masks, pool, device, seed=seed)


def align_with_strength(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    align_x: torch.Tensor,
    align_y: torch.Tensor,
    align_masks: torch.Tensor,
    settings: AlignSettings,
    device: torch.device,
    state: TaskState | None = None,
) -> tuple[nn.Module, list[EpochRecord], StrengthChoice]:
    """Fine-tune a copy of ``model`` against the masks with the strength of ``settings.lambda_`` ("auto":
    chosen as the module docstring says). Returns the aligned copy, its epoch records and the choice."""
    state = ensure_state(state)
    settings.validate()
    auto = settings.strength_is_auto()
    masked = align_masks.flatten(1).any(1)
    n_masked = int(masked.sum())
    # a fixed subset of the masked images, so that before and after are measured on the same pairs
    pick = torch.nonzero(masked).flatten()[:MAX_RELIANCE_IMAGES]
    rx, rm = align_x[pick], align_masks[pick]
    seed = settings.seed

    def measure(m: nn.Module) -> Reliance | None:
        return _measure(m, rx, rm, x, device, seed)

    choice = StrengthChoice(
        mode="auto" if auto else "set",
        penalty=settings.penalty,
        strength=0.0,
        reason="",
        masked_images=n_masked,
    )
    state.progress(0.0, None, "measuring the reliance on the masked regions")
    before = measure(model) if n_masked else None
    choice.reliance_before = before.to_dict() if before else None
    if auto and n_masked == 0:
        choice.reason = "No segment is judged spurious, so there is nothing to remove; the weights are kept."
        return copy.deepcopy(model).eval(), [], choice
    if auto and before is not None and before.mean < settings.reliance_floor:
        choice.reason = (
            f"The original model hardly relies on the masked regions (its prediction moves by "
            f"{before.mean:.3f} on average when they are exchanged with other training images, below "
            f"{settings.reliance_floor:g}); there is nothing to remove, so the weights are kept."
        )
        choice.reliance_after = choice.reliance_before
        return copy.deepcopy(model).eval(), [], choice

    strength = settings.strength_value()
    epochs = settings.epochs
    target = None
    if auto and before is not None:
        target = max(settings.reliance_floor, TARGET_SHARE * before.mean)
        choice.target = target
    current, history, last = model, [], before
    share = (0.05, 0.75)
    while True:
        sub = _continued(state.child(share[0], share[1]), len(history))
        tuned, hist = fine_tune_rrr(
            current, x, y, align_x, align_y, align_masks, settings, device, sub, strength, epochs
        )
        after = measure(tuned) if n_masked else None
        kept = last is None or after is None or after.mean < last.mean or not choice.rounds
        choice.rounds.append(
            {
                "strength": strength,
                "epochs": epochs,
                "reliance": after.mean if after else None,
                "kept": kept,
            }
        )
        if not kept:  # the stronger round did not lower the reliance: undo it
            break
        current, last = tuned, after
        done = len(history)
        history.extend([replace(h, epoch=h.epoch + done) for h in hist])
        choice.strength = strength
        if not auto or target is None or after is None or after.mean <= target or strength >= MAX_STRENGTH:
            break
        strength *= 2
        epochs = max(1, math.ceil(epochs / 2))
        share = (share[1], min(0.95, share[1] + 0.1))
    choice.reliance_after = last.to_dict() if last else None
    choice.reason = _reason(choice, auto)
    return current, history, choice


def _continued(state: TaskState, epochs_done: int) -> TaskState:
    """``state`` whose partial results (live curves) continue after ``epochs_done`` epochs of an earlier
    round instead of starting again at epoch 1."""
    forward = state._on_partial
    if not epochs_done or forward is None:
        return state

    def shifted(record):
        if isinstance(record, dict) and record.get("kind") in ("step", "epoch"):
            record = {**record, "epoch": record["epoch"] + epochs_done}
            if record["kind"] == "step":
                record["step"] = record["step"] + epochs_done * record.get("steps_per_epoch", 0)
        forward(record)

    state._on_partial = shifted
    return state


def _reason(c: StrengthChoice, auto: bool) -> str:
    if not auto:
        return "The strength was set by hand (align.lambda); it is used as it is."
    steps = "; ".join(
        f"strength {r['strength']:g} for {r['epochs']} epoch{'s' * (r['epochs'] != 1)}: reliance "
        f"{r['reliance']:.3f}{'' if r['kept'] else ' (not lower: undone)'}"
        for r in c.rounds
        if r["reliance"] is not None
    )
    met = c.reliance_after is not None and c.target is not None and c.reliance_after["mean"] <= c.target
    end = (
        f"the target ({c.target:.3f}: a quarter of the reliance before, at least the floor) is met."
        if met
        else f"the target ({c.target:.3f}) is not met: what the penalty could not remove is listed in the "
        "report; check the masks (verdicts) and the reliance there."
    )
    return (
        f"Started at strength 1, where each exchanged image counts as much as an ordinary one; {steps}; {end}"
    )
