"""Pictures for the audit report, drawn with numpy and Pillow only (the report is made without Qt).

Attribution overlays follow the heatmap viewer: a signed blue-white-red map (the viewer's CET-D1 colours),
symmetric levels clipped at the 99th percentile of |attribution|, and an opacity that grows with the
magnitude so the image stays visible under weak evidence. Every picture is returned as PNG bytes, which
the HTML embeds as data: URIs and the PDF places directly. ``representative_heatmaps`` picks the images
worth showing before and after alignment and computes both models' attributions for them.
"""

from __future__ import annotations

import base64
import io
import json
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw

from lvlmva_desktop.core.data.pictures import MASK_COLOUR, outline, scale_for, to_pil
from lvlmva_desktop.core.runtime.jobs import TaskState
from lvlmva_desktop.lvlm.render import render_views

if TYPE_CHECKING:
    from lvlmva_desktop.core.store.project import Project

# CET-D1 (the viewer's default signed colour map) sampled at 9 points, blue (negative) to red (positive).
_D1 = np.array(
    [
        [33, 81, 219],
        [111, 116, 225],
        [159, 155, 231],
        [201, 196, 236],
        [237, 231, 233],
        [240, 189, 177],
        [231, 139, 118],
        [214, 87, 62],
        [192, 2, 6],
    ],
    dtype=np.float64,
)


def signed_colours(t: np.ndarray) -> np.ndarray:
    """RGB (float, 0-255) of values ``t`` in [0, 1] (0 = most negative, 0.5 = zero, 1 = most positive)."""
    pos = np.clip(t, 0.0, 1.0) * (len(_D1) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_D1) - 2)
    frac = (pos - lo)[..., None]
    return _D1[lo] * (1 - frac) + _D1[lo + 1] * frac


def overlay_level(amap: np.ndarray, clip: float = 99.0) -> float:
    """The magnitude that saturates the colour map: a percentile of |attribution| (as in the viewer)."""
    vals = np.abs(amap[np.isfinite(amap)])
    top = float(np.percentile(vals, clip)) if vals.size else 0.0
    if not top > 0:
        top = float(vals.max()) if vals.size and vals.max() > 0 else 1e-12
    return top


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def attribution_overlay(
    image: torch.Tensor,
    attribution: torch.Tensor,
    mask: torch.Tensor | None = None,
    min_side: int = 160,
    threshold: float = 0.1,
    opacity: float = 0.85,
) -> Image.Image:
    """The image (greyed, so colours read as evidence) under its signed attribution, enlarged with nearest
    neighbours; ``mask`` (the segments judged spurious) is outlined in amber."""
    base = np.asarray(to_pil(image), dtype=np.float64)
    grey = base.mean(axis=2, keepdims=True).repeat(3, axis=2)
    base = 0.35 * base + 0.65 * grey
    amap = attribution.detach().float().cpu().numpy()
    top = overlay_level(amap)
    t = np.clip(amap / top, -1.0, 1.0)
    colours = signed_colours((t + 1) / 2)
    ramp = np.clip((np.abs(t) - threshold) / max(1.0 - threshold, 1e-6), 0.0, 1.0) ** 0.8
    alpha = (opacity * ramp)[..., None]
    rgb = base * (1 - alpha) + colours * alpha
    h, w = amap.shape
    k = scale_for(h, w, min_side)
    big = rgb.round().clip(0, 255).astype(np.uint8).repeat(k, 0).repeat(k, 1)
    if mask is not None and bool(mask.any()):
        big = outline(big, mask.bool().cpu().numpy(), k, MASK_COLOUR)
    return Image.fromarray(big, "RGB")


def colour_bar(width: int = 240, height: int = 14) -> Image.Image:
    """The legend of the signed map: negative (blue) to positive (red) evidence."""
    t = np.linspace(0.0, 1.0, width)
    row = signed_colours(t).round().astype(np.uint8)
    bar = np.repeat(row[None], height, axis=0)
    img = Image.fromarray(bar, "RGB")
    ImageDraw.Draw(img).rectangle((0, 0, width - 1, height - 1), outline=(90, 90, 90))
    return img


def thumbnail(image: torch.Tensor, segments: torch.Tensor | None, attribution: torch.Tensor | None) -> bytes:
    """A small numbered segment overlay of one alignment image (the picture the critic saw), as PNG.

    The numbers need about 100 px to be legible, so the image is enlarged to that and no further.
    """
    if segments is None:
        img = to_pil(image)
        k = scale_for(img.height, img.width, 96)
        return png_bytes(img.resize((img.width * k, img.height * k), Image.NEAREST))
    _, _, overlay = render_views(image, segments, attribution, min_side=96)
    if max(overlay.size) > 160:
        overlay.thumbnail((160, 160), Image.LANCZOS)
    return png_bytes(overlay.quantize(colors=128))  # a palette keeps 200 thumbnails small


# -- representative images: attributions of both models ---------------------------------------------
def _share_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    a = maps.abs().flatten(1)
    return (a * masks.flatten(1).float()).sum(1) / a.sum(1).clamp_min(1e-12)


def representative_heatmaps(
    project: Project,
    expl_id: int | None,
    before: int | None,
    after: int | None,
    device: torch.device,
    state: TaskState,
    n_images: int,
    n_candidates: int,
) -> dict:
    """Attributions of both models for a few representative alignment images: those with an expert
    override first, then those whose share of evidence inside the spurious segments fell the most."""
    out: dict = {
        "items": [],
        "note": "",
        "before": before,
        "after": after,
        "colour_bar": png_bytes(colour_bar()),
    }
    if expl_id is None or before is None or after is None:
        out["note"] = "No aligned model yet: there is nothing to compare."
        return out
    from lvlmva_desktop.core.method.pipeline import alignment_masks
    from lvlmva_desktop.core.method.settings import PipelineSettings
    from lvlmva_desktop.core.views.viewer import explain_samples, load_samples

    row, t = project.explanation(expl_id)
    es = json.loads(row["settings"] or "{}").get("explain", {})
    settings = PipelineSettings.from_record({"explain": es}).explain  # as the explanation was made
    # the masks as the aligned model was trained with them: the plain masks of the verdicts, less the
    # segments the consistency check held back then (recorded with the model; none for older models)
    from lvlmva_desktop.core.method.settings import AlignSettings

    ids, masks, _ = alignment_masks(project, expl_id, AlignSettings(consistency_check=False))
    info = json.loads(project.model_row(after)["info"] or "{}")
    position = {sid: k for k, sid in enumerate(ids)}
    for sid, seg in info.get("mask_stats", {}).get("held_back_segments", []):
        if sid in position:
            k = position[sid]
            masks[k] &= t["segments"][k].long() != int(seg)
    overridden = {int(s) for s in project.expert_verdicts(expl_id)}
    has_mask = masks.flatten(1).any(1)
    candidates = [i for i, s in enumerate(ids) if s in overridden or bool(has_mask[i])]
    # rank by the stored share inside the spurious mask: the most to lose, bounded for slow models
    stored = _share_inside(t["maps"], masks)
    candidates.sort(key=lambda i: (ids[i] not in overridden, -float(stored[i])))
    candidates = candidates[:n_candidates]
    rest = [i for i in range(len(ids)) if i not in candidates]  # too few: show others for comparison
    candidates += rest[: max(0, n_images - len(candidates))]
    if not candidates:
        out["note"] = "The alignment set is empty."
        return out
    cand_ids = [ids[i] for i in candidates]
    b = explain_samples(project, before, cand_ids, settings, device, state.child(0.0, 0.5))
    a = explain_samples(project, after, cand_ids, settings, device, state.child(0.5, 1.0))
    m = masks[candidates]
    sb, sa = _share_inside(b.maps, m), _share_inside(a.maps, m)
    change = sb - sa
    by_change = sorted(range(len(candidates)), key=lambda j: -float(change[j]))
    chosen = [j for j in by_change if cand_ids[j] in overridden][: max(1, n_images // 2)]
    chosen += [j for j in by_change if j not in chosen][: n_images - len(chosen)]
    pics = load_samples(project, [cand_ids[j] for j in chosen])
    names = {r["id"]: r["name"] for r in project.models()}
    out["before_name"], out["after_name"] = names.get(before, str(before)), names.get(after, str(after))
    for n, j in enumerate(chosen):
        sid = cand_ids[j]
        has = bool(m[j].any())
        why = "expert override" if sid in overridden else ("largest change" if has else "no spurious segment")
        out["items"].append(
            {
                "sample_id": sid,
                "class": project.classes[int(pics.y[n])],
                "why": why,
                "before_png": png_bytes(attribution_overlay(pics.x[n], b.maps[j], m[j])),
                "after_png": png_bytes(attribution_overlay(pics.x[n], a.maps[j], m[j])),
                "before_share": float(sb[j]) if has else None,
                "after_share": float(sa[j]) if has else None,
            }
        )
    return out
