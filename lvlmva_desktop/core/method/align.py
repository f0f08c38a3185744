"""The right-for-the-right-reasons penalty (Ross et al. 2017; METHOD.md step 8).

penalty = mean over masked images of sum_i (A_i * d/dx_i sum_k log softmax_k(f(x)))^2

The input gradient is taken with create_graph=True so that the penalty itself can be back-propagated
(double back-propagation). Masks are (B, H, W) and broadcast over colour channels.
"""

from __future__ import annotations

import torch


def rrr_penalty(
    logits: torch.Tensor, inputs: torch.Tensor, masks: torch.Tensor, offset: int = 0, normalise: bool = False
) -> torch.Tensor:
    """Penalty for ``logits`` = f(inputs[offset:offset+len(logits)]) given masks of forbidden regions.

    ``inputs`` must require grad and be the tensor the logits were computed from (it may hold more rows,
    e.g. the ordinary images of a mixed batch, which carry no mask).
    """
    if not inputs.requires_grad:
        raise ValueError("inputs must require grad for the RRR penalty")
    n = len(logits)
    if n == 0:
        return logits.sum() * 0.0
    log_p_sum = torch.log_softmax(logits, dim=1).sum()
    (grad,) = torch.autograd.grad(log_p_sum, inputs, create_graph=True)
    g = grad[offset : offset + n]
    m = masks.to(g.dtype)
    if m.ndim == g.ndim - 1:
        m = m.unsqueeze(1)
    per_image = ((m * g) ** 2).flatten(1).sum(1)
    if normalise:
        energy = (g.detach() ** 2).flatten(1).sum(1)
        per_image = per_image / (energy + 1e-12 * g[0].numel())
    return per_image.mean()
