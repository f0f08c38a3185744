"""The three pictures the critic sees (METHOD.md step 5): the image, the segment map, a numbered overlay.

Small classifier inputs (28-64 px) are enlarged with nearest-neighbour sampling so that an LVLM's vision
encoder sees the same pixels the classifier saw, only bigger; segment numbers are drawn at each segment's
evidence centre. Pillow only, so the same pictures appear in the GUI, the report and the prompts.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lvlmva_desktop.core.data.pictures import scale_for, to_pil

# Distinct, colour-blind-friendly segment colours (Okabe-Ito), repeated if J > 8.
PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (120, 120, 120),
)


def segment_colours(segments: torch.Tensor) -> Image.Image:
    seg = segments.long().cpu().numpy()
    pal = np.array([PALETTE[i % len(PALETTE)] for i in range(max(int(seg.max()) + 1, 1))], dtype=np.uint8)
    return Image.fromarray(pal[seg], "RGB")


def centres(
    segments: torch.Tensor, attribution: torch.Tensor | None = None
) -> dict[int, tuple[float, float]]:
    """(row, col) per segment: its centre of evidence (the map's positive part: pass
    ``CritiqueRequest.evidence()``), or of its pixels if it has none."""
    out = {}
    seg = segments.long().cpu()
    pos = attribution.detach().float().cpu().clamp_min(0) if attribution is not None else None
    rows, cols = torch.meshgrid(
        torch.arange(seg.shape[0], dtype=torch.float32),
        torch.arange(seg.shape[1], dtype=torch.float32),
        indexing="ij",
    )
    for s in torch.unique(seg).tolist():
        sel = seg == s
        w = pos * sel if pos is not None else sel.float()
        if float(w.sum()) <= 0:
            w = sel.float()
        tot = float(w.sum())
        out[int(s)] = (float((rows * w).sum()) / tot, float((cols * w).sum()) / tot)
    return out


def where(rc: tuple[float, float], h: int, w: int) -> str:
    """A position in words ("the top left", "the centre") for the prompt."""
    r, c = rc[0] / max(h - 1, 1), rc[1] / max(w - 1, 1)
    vert = "top" if r < 1 / 3 else ("bottom" if r > 2 / 3 else "")
    horiz = "left" if c < 1 / 3 else ("right" if c > 2 / 3 else "")
    if not vert and not horiz:
        return "the centre"
    return "the " + " ".join(p for p in (vert, horiz) if p)


def segment_context(
    segments: torch.Tensor, attribution: torch.Tensor | None, evidence: list[float]
) -> list[dict]:
    """What the prompts say about each segment: its number (from 1), evidence share and position."""
    h, w = segments.shape[-2:]
    cs = centres(segments, attribution)
    return [
        {"number": s + 1, "evidence": float(e), "where": where(cs.get(s, (h / 2, w / 2)), h, w)}
        for s, e in enumerate(evidence)
    ]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def render_views(
    image: torch.Tensor,
    segments: torch.Tensor,
    attribution: torch.Tensor | None = None,
    min_side: int = 336,
    alpha: float = 0.45,
) -> tuple[Image.Image, Image.Image, Image.Image]:
    """(image, segment map, numbered overlay), enlarged so that the short side is at least ``min_side``."""
    base = to_pil(image)
    h, w = base.height, base.width
    if tuple(segments.shape[-2:]) != (h, w):  # a map at another resolution: nearest, like the pixels
        segments = torch.nn.functional.interpolate(segments[None, None].float(), size=(h, w), mode="nearest")[
            0, 0
        ]
        if attribution is not None:
            attribution = torch.nn.functional.interpolate(attribution[None, None].float(), size=(h, w))[0, 0]
    segments = segments.long().clamp_min(0)
    k = scale_for(h, w, min_side)
    size = (w * k, h * k)
    big = base.resize(size, Image.NEAREST)
    seg_map = segment_colours(segments).resize(size, Image.NEAREST)
    overlay = Image.blend(big, seg_map, alpha)
    draw = ImageDraw.Draw(overlay)
    # outline segment borders so the numbers' regions are readable
    seg = segments.long().cpu().numpy().repeat(k, 0).repeat(k, 1)
    edge = np.zeros_like(seg, dtype=bool)
    edge[:-1, :] |= seg[:-1, :] != seg[1:, :]
    edge[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    ov = np.array(overlay)
    ov[edge] = (255, 255, 255)
    overlay = Image.fromarray(ov, "RGB")
    draw = ImageDraw.Draw(overlay)
    font = _font(max(14, size[1] // 14))
    for s, (r, c) in centres(segments, attribution).items():
        x, y = (c + 0.5) * k, (r + 0.5) * k
        label = str(s + 1)
        box = draw.textbbox((x, y), label, font=font, anchor="mm")
        pad = max(2, k // 2)
        draw.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=(0, 0, 0))
        draw.text((x, y), label, fill=(255, 255, 255), font=font, anchor="mm")
    return big, seg_map, overlay
