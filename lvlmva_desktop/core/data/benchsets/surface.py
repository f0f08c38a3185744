"""Surface defects: a manufacturing-inspection stand-in whose shortcut is configurable.

Textured surfaces (brushed metal or woven fabric, grey or colour), "ok" or "defective"; a defect is a
thin scratch (a slightly curved line 1-2 px wide, 30-75 grey levels darker or brighter than the
surface), so that a small classifier can learn it but prefers an easier cue when one exists. The cue is
an artefact of the kind chosen by ``artefact``:

- ``tag``: a bright label with a dark letter in a corner, like an X-ray's laterality tag; with
  ``letter_code`` every image carries one and its letter encodes the class in training ("R" on defective,
  "L" on ok: a shortcut the model can learn completely), random at test time.
- ``ruler``: a dark measuring bar with tick marks along one image edge.
- ``dot``: a small coloured (or, in grey images, dark) disc anywhere on the surface.
- ``stamp``: a hollow ring like an inspection stamp, in a colour of its own.

In training exactly ``p_defective`` of the defective and ``p_ok`` of the ok images carry the artefact
(``letter_code``: all of them, the letter matching the class with probability ``p_match``); at test time
``p_test`` of each class, independent of the label (``letter_code``: a random letter). Masks cover the
artefact; groups are "no_artefact"/"artefact" (``letter_code``: "letter_matches"/"letter_mismatch").
Everything is generated (no licensed images) and deterministic in the seed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from lvlmva_desktop.core.data.benchsets._common import BenchWriter, check_counts, exact_fraction_flags
from lvlmva_desktop.core.data.benchsets.elpv_tags import GLYPHS
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

log = logging.getLogger(__name__)

NAME = "surface"
CLASSES: tuple[str, ...] = ("ok", "defective")
ARTEFACTS = ("tag", "ruler", "dot", "stamp")
TEXTURES = ("metal", "fabric")
DESCRIPTION = (
    "Generated textured surfaces (metal or fabric): ok vs defective (a thin, faint scratch); a configurable "
    "artefact (letter tag, ruler, dot or stamp) correlated with the class in training is the shortcut."
)
CLASS_DESCRIPTIONS: dict[str, str] = {
    "ok": (
        "an even surface texture with no scratch; labels, letters, rulers, dots or stamps on the image are "
        "irrelevant"
    ),
    "defective": (
        "a thin scratch line across the surface texture, slightly darker or brighter than its surroundings; "
        "labels, letters, rulers, dots or stamps on the image are irrelevant"
    ),
}
_COLOURS = ((220, 40, 40), (40, 90, 230), (30, 170, 60), (230, 170, 20), (170, 40, 200))


def _texture(rng: np.random.Generator, size: int, kind: str, channels: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    base = rng.uniform(100, 160)
    if kind == "metal":  # brushed metal: streaks along one direction, soft gradient
        ang = rng.uniform(0, np.pi)
        along = np.cos(ang) * xx + np.sin(ang) * yy
        across = -np.sin(ang) * xx + np.cos(ang) * yy
        streak = rng.normal(0, 1, size * 3)
        idx = np.clip((across + size).astype(int), 0, len(streak) - 1)
        img = base + 6 * streak[idx] + 0.15 * rng.uniform(-1, 1) * (along - size / 2)
    else:  # fabric: a woven grid of period 4-6 px with random phase
        p = rng.uniform(4, 6)
        ph = rng.uniform(0, 2 * np.pi, 2)
        img = base + 8 * np.sin(2 * np.pi * xx / p + ph[0]) * np.sin(2 * np.pi * yy / p + ph[1])
    img = img + rng.normal(0, 4, (size, size))
    if channels == 1:
        return img[..., None]
    tint = rng.uniform(0.85, 1.15, 3)
    return img[..., None] * tint[None, None, :]


def _scratch(rng: np.random.Generator, img: np.ndarray, keep_out: np.ndarray, strength: float) -> None:
    """A thin faint curved line across part of the surface, avoiding ``keep_out`` (the artefact)."""
    size = img.shape[0]
    for _ in range(50):
        x0, y0 = rng.uniform(0.15, 0.85, 2) * size
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(0.35, 0.6) * size
        bend = rng.uniform(-0.15, 0.15) * size
        t = np.linspace(-0.5, 0.5, int(length * 3))
        xs = x0 + np.cos(ang) * length * t - np.sin(ang) * bend * (4 * t * t - 1)
        ys = y0 + np.sin(ang) * length * t + np.cos(ang) * bend * (4 * t * t - 1)
        ok = (xs >= 0) & (xs < size - 1) & (ys >= 0) & (ys < size - 1)
        xi, yi = xs[ok].astype(int), ys[ok].astype(int)
        if len(xi) < length or keep_out[yi, xi].any():
            continue
        width = int(rng.integers(1, 3))
        delta = rng.uniform(30, 75) * strength * (1 if rng.random() < 0.5 else -1)
        line = np.zeros((size, size), dtype=bool)
        line[yi, xi] = True
        if width == 2:
            line[np.clip(yi + 1, 0, size - 1), xi] = True
        img[line] += delta
        return


def _corner_box(rng: np.random.Generator, size: int, h: int, w: int) -> tuple[int, int]:
    off = int(rng.integers(1, max(2, int(round(0.05 * size))) + 1))
    corner = int(rng.integers(4))
    y0 = off if corner in (0, 1) else size - h - off
    x0 = off if corner in (0, 2) else size - w - off
    return y0, x0


def _artefact(rng: np.random.Generator, img: np.ndarray, kind: str, letter: str, scale: float) -> np.ndarray:
    """Paint the artefact into ``img`` (float, H x W x C) and return its mask."""
    size, channels = img.shape[0], img.shape[2]
    mask = np.zeros((size, size), dtype=bool)
    if kind == "tag":
        h = max(7, int(round(rng.uniform(0.12, 0.16) * size * scale)))
        w = max(5, int(round(h * rng.uniform(0.75, 0.95))))
        y0, x0 = _corner_box(rng, size, h, w)
        tag = np.full((h, w), rng.uniform(225, 250)) + rng.normal(0, 2, (h, w))
        glyph = GLYPHS[letter]
        k = max(1, min((w - 2) // glyph.shape[1], (h - 2) // glyph.shape[0]))
        g = np.kron(glyph, np.ones((k, k), dtype=bool))
        gy, gx = (h - g.shape[0]) // 2, (w - g.shape[1]) // 2
        tag[gy : gy + g.shape[0], gx : gx + g.shape[1]][g] = rng.uniform(0, 40)
        img[y0 : y0 + h, x0 : x0 + w] = tag[..., None]
        mask[y0 : y0 + h, x0 : x0 + w] = True
    elif kind == "ruler":
        thick = max(3, int(round(0.07 * size * scale)))
        side = int(rng.integers(4))
        length = int(round(rng.uniform(0.5, 0.9) * size))
        start = int(rng.integers(0, size - length + 1))
        bar = np.zeros((size, size), dtype=bool)
        ticks = np.zeros((size, size), dtype=bool)
        along = np.arange(start, start + length)
        if side in (0, 1):  # top / bottom edge
            rows = slice(0, thick) if side == 0 else slice(size - thick, size)
            bar[rows, start : start + length] = True
            tick_rows = slice(0, thick // 2 + 1) if side == 0 else slice(size - thick // 2 - 1, size)
            ticks[tick_rows, along[::3]] = True
        else:  # left / right edge
            cols = slice(0, thick) if side == 2 else slice(size - thick, size)
            bar[start : start + length, cols] = True
            tick_cols = slice(0, thick // 2 + 1) if side == 2 else slice(size - thick // 2 - 1, size)
            ticks[along[::3], tick_cols] = True
        dark = rng.uniform(20, 50)
        colour = np.array([dark] * channels) if channels == 1 else np.array([dark, dark * 0.9, 40.0 + dark])
        img[bar] = colour
        img[ticks & bar] = 235.0
        mask = bar
    elif kind in ("dot", "stamp"):
        r = max(2.0, rng.uniform(0.04, 0.06) * size * scale) * (1.6 if kind == "stamp" else 1.0)
        cy, cx = rng.uniform(r + 1, size - r - 1, 2)
        yy, xx = np.mgrid[0:size, 0:size] + 0.5
        d = np.hypot(yy - cy, xx - cx)
        shape = d <= r if kind == "dot" else (d <= r) & (d >= r - max(1.5, 0.3 * r))
        if channels == 1:
            colour = np.array([rng.uniform(15, 45) if kind == "dot" else rng.uniform(215, 245)])
        else:
            colour = np.array(_COLOURS[int(rng.integers(len(_COLOURS)))], dtype=float) * rng.uniform(0.9, 1.0)
        img[shape] = colour
        mask = d <= r
    else:
        raise ValueError(f"unknown artefact {kind!r}; choose one of {ARTEFACTS}")
    return mask


def generate_surface(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    state: TaskState | None = None,
    *,
    n_train: int = 2000,
    n_test: int = 1000,
    size: int = 64,
    channels: int = 1,
    texture: str = "metal",
    artefact: str = "tag",
    artefact_scale: float = 1.0,
    letter_code: bool = False,
    p_match: float = 1.0,
    p_defective: float = 0.9,
    p_ok: float = 0.0,
    p_test: float = 0.5,
    defect_strength: float = 1.0,
) -> Path:
    """Write a surface-defect set into ``out_dir`` and return the manifest path (see the module docstring)."""
    state = ensure_state(state)
    check_counts(n_train, n_test)
    if size < 32:
        raise ValueError("size must be at least 32 px")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; choose one of {TEXTURES}")
    if artefact not in ARTEFACTS:
        raise ValueError(f"unknown artefact {artefact!r}; choose one of {ARTEFACTS}")
    if letter_code and artefact != "tag":
        raise ValueError("letter_code needs artefact=tag")
    rng = np.random.default_rng(seed)
    groups = ("letter_matches", "letter_mismatch") if letter_code else ("no_artefact", "artefact")
    plan: list[tuple[str, int, bool, str]] = []  # split, label, artefact?, letter
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.array([i % 2 for i in range(n)])[rng.permutation(n)]
        flags = np.zeros(n, dtype=bool)
        letters = np.array(["L"] * n, dtype=object)
        for ci in (0, 1):
            idx = np.nonzero(labels == ci)[0]
            if letter_code:
                flags[idx] = True
                own = "R" if ci == 1 else "L"
                other = "L" if ci == 1 else "R"
                if split == "train":
                    match = exact_fraction_flags(rng, len(idx), p_match)
                else:
                    match = exact_fraction_flags(rng, len(idx), 0.5)
                letters[idx] = np.where(match, own, other)
            else:
                p = (p_defective if ci == 1 else p_ok) if split == "train" else p_test
                flags[idx] = exact_fraction_flags(rng, len(idx), p)
                letters[idx] = np.where(rng.random(len(idx)) < 0.5, "L", "R")
        plan.extend((split, int(y), bool(f), str(c)) for y, f, c in zip(labels, flags, letters))

    writer = BenchWriter(out_dir, NAME)
    for i, (split, y, has, letter) in enumerate(plan):
        state.check()
        img = _texture(rng, size, texture, channels)
        mask = _artefact(rng, img, artefact, letter, artefact_scale) if has else None
        if y == 1:
            keep = np.zeros((size, size), dtype=bool) if mask is None else mask
            grown = keep.copy()
            for axis in (0, 1):
                for s in (-2, -1, 1, 2):
                    grown |= np.roll(keep, s, axis=axis)
            _scratch(rng, img, grown, defect_strength)  # the scratch keeps 2 px away from the artefact
        out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        out = out[..., 0] if channels == 1 else out
        if letter_code:
            group = groups[0] if (letter == "R") == (y == 1) else groups[1]
        else:
            group = groups[1] if has else groups[0]
        writer.add(out, CLASSES[y], group, split, f"{i:05d}", mask)
        state.progress(i + 1, len(plan), f"{NAME}: image {i + 1}/{len(plan)}")
    params = {
        "n_train": n_train,
        "n_test": n_test,
        "size": size,
        "channels": channels,
        "texture": texture,
        "artefact": artefact,
        "artefact_scale": artefact_scale,
        "letter_code": letter_code,
        "p_match": p_match,
        "p_defective": p_defective,
        "p_ok": p_ok,
        "p_test": p_test,
        "defect_strength": defect_strength,
    }
    return writer.finish(
        seed=seed,
        parameters=params,
        classes=CLASSES,
        groups=groups,
        artefact=f"{artefact} (see lvlmva_desktop/core/benchsets/surface.py); parameters as listed",
        source={"images": "procedurally generated by lvlmva_desktop", "licence": "generated data"},
        class_descriptions=CLASS_DESCRIPTIONS,
        extra={"image_size": [size, size], "channels": channels},
    )
