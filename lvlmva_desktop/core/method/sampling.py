"""Choosing the alignment set (METHOD.md step 2): low predictive entropy finds shortcut images.

Shortcuts are learnt first and make the model confident, so the N training images with the lowest
entropy H(x) = -sum_k p_k log p_k hold more shortcut images than a random set. No group labels needed.
"""

from __future__ import annotations

import torch

from lvlmva_desktop.core.method.settings import STRATEGIES, SamplingSettings


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    p = probs.clamp_min(1e-12)
    return -(probs * p.log()).sum(dim=1)


def select_alignment_set(
    probs: torch.Tensor, labels: torch.Tensor, settings: SamplingSettings
) -> torch.Tensor:
    """Indices (into the rows of ``probs``) of the alignment set, ordered by the strategy's priority."""
    if settings.strategy not in STRATEGIES:
        raise ValueError(f"Unknown sampling strategy '{settings.strategy}'; choose one of {STRATEGIES}.")
    if settings.n <= 0:
        raise ValueError("The alignment set size N must be positive.")
    ent = predictive_entropy(probs)
    eligible = torch.ones(len(ent), dtype=torch.bool)
    if settings.correct_only:
        eligible &= probs.argmax(1) == labels
    gen = torch.Generator().manual_seed(settings.seed)

    def order(idx: torch.Tensor) -> torch.Tensor:
        if settings.strategy == "random":
            return idx[torch.randperm(len(idx), generator=gen)]
        e = ent[idx]
        # stable sort keeps ties in data order, so the selection is deterministic
        key = e if settings.strategy == "low_entropy" else -e
        return idx[torch.sort(key, stable=True).indices]

    idx_all = torch.nonzero(eligible).flatten()
    if not settings.per_class:
        return order(idx_all)[: settings.n]
    classes = torch.unique(labels[idx_all])
    per = [order(idx_all[labels[idx_all] == c]) for c in classes]
    quota = settings.n // len(classes)
    extra = settings.n - quota * len(classes)
    chosen = [p[: quota + (1 if i < extra else 0)] for i, p in enumerate(per)]
    return torch.cat(chosen)
