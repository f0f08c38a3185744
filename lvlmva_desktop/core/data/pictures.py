"""Picture primitives shared by the critic's pictures (lvlm/render.py), the audit report's figures
(report/figures.py) and the spot check's pictures (core/method/spotcheck.py): numpy and Pillow only, no Qt."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

MASK_COLOUR = (255, 200, 0)  # outline of the segments judged spurious, and of the one a spot check asks about


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> RGB PIL image."""
    x = image.detach().float().clamp(0, 1).cpu()
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.shape[0] < 3:  # grey (or grey + alpha): show the first channel
        x = x[:1].expand(3, -1, -1)
    arr = (x[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def scale_for(h: int, w: int, min_side: int) -> int:
    """The whole-number enlargement that brings an h x w image's shorter side to at least ``min_side``."""
    return max(1, -(-min_side // max(1, min(h, w))))


def outline(rgb: np.ndarray, mask: np.ndarray, k: int, colour: tuple[int, int, int]) -> np.ndarray:
    """Draw the pixel-edge outline of ``mask`` (at the original resolution) on an image enlarged k times."""
    big = mask.repeat(k, 0).repeat(k, 1)
    edge = np.zeros_like(big)
    edge[:-1, :] |= big[:-1, :] != big[1:, :]
    edge[1:, :] |= big[:-1, :] != big[1:, :]
    edge[:, :-1] |= big[:, :-1] != big[:, 1:]
    edge[:, 1:] |= big[:, :-1] != big[:, 1:]
    edge &= big
    out = rgb.copy()
    out[edge] = colour
    return out
