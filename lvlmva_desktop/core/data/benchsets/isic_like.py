"""ISIC-like: synthetic dermoscopy-style lesions with coloured patches as shortcut.

A stand-in for ISIC skin-lesion images, where coloured band-aid patches appear almost only beside benign
lesions: here a vivid patch is placed beside most benign training lesions and no malignant ones, and at
test time on half of each class. The class itself is carried by the lesion's border irregularity and
colour variation, with overlapping ranges so that it is learnable but not trivially so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvlmva_desktop.core.data.benchsets._common import BenchWriter, check_counts, exact_fraction_flags
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

log = logging.getLogger(__name__)

NAME = "isic-like"
CLASSES: tuple[str, ...] = ("benign", "malignant")
GROUPS: tuple[str, ...] = ("no_patch", "patch")
DESCRIPTION = (
    "Synthetic skin lesions (RGB): benign = smooth border, even brown; malignant = irregular border, "
    "several colours; vivid coloured patches beside benign training lesions are the shortcut."
)
CLASS_DESCRIPTIONS: dict[str, str] = {
    "benign": (
        "a round or oval lesion with a smooth, regular border and one even brown colour; coloured patches "
        "beside the lesion are irrelevant"
    ),
    "malignant": (
        "an irregular, asymmetric lesion border with several colours (dark brown, black, reddish areas); "
        "coloured patches beside the lesion are irrelevant"
    ),
}

# Vivid patch colours, far from skin and lesion tones.
PATCH_PALETTE: tuple[tuple[int, int, int], ...] = (
    (30, 200, 60),  # green
    (20, 110, 240),  # blue
    (250, 215, 20),  # yellow
    (235, 30, 190),  # magenta
    (20, 210, 220),  # cyan
    (250, 120, 10),  # orange
)

# Lesion colour shades used for the malignant colour variation.
_DARK_BROWN = np.array([85.0, 50.0, 32.0])
_BLACKISH = np.array([40.0, 32.0, 34.0])
_REDDISH = np.array([170.0, 72.0, 62.0])
_BLUE_GREY = np.array([105.0, 105.0, 125.0])


@dataclass(frozen=True)
class LesionStyle:
    """Per-class ranges of the visual features; overlapping ranges make the task non-trivial."""

    irregularity: tuple[float, float]  # total relative amplitude of the border harmonics
    colour_variation: tuple[float, float]  # strength (0..1) of the extra shades inside the lesion
    p_variegated: float  # chance of any extra shade at all
    n_shades: tuple[int, int]  # how many extra shades when variegated (inclusive range)


STYLES: dict[str, LesionStyle] = {
    "benign": LesionStyle(
        irregularity=(0.0, 0.08), colour_variation=(0.1, 0.35), p_variegated=0.15, n_shades=(1, 1)
    ),
    "malignant": LesionStyle(
        irregularity=(0.18, 0.4), colour_variation=(0.7, 1.0), p_variegated=1.0, n_shades=(2, 3)
    ),
}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] (bilinear upsampling of a coarse grid)."""
    grid = rng.random((cells + 1, cells + 1))
    t = np.linspace(0.0, cells, size, endpoint=False)
    i0 = np.floor(t).astype(int)
    f = t - i0
    f = f * f * (3 - 2 * f)  # smoothstep
    a = grid[i0][:, i0]
    b = grid[i0][:, i0 + 1]
    c = grid[i0 + 1][:, i0]
    d = grid[i0 + 1][:, i0 + 1]
    fy, fx = f[:, None], f[None, :]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _skin(rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.array([222.0, 170.0, 138.0]) * rng.uniform(0.82, 1.05) + rng.normal(0, 6, 3)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    ang = rng.uniform(0, 2 * np.pi)
    grad = 1.0 + rng.uniform(0.0, 0.16) * (np.cos(ang) * xx + np.sin(ang) * yy)
    blotch = 1.0 + 0.06 * (_smooth_noise(rng, size, 3) - 0.5)
    img = base[None, None, :] * (grad * blotch)[..., None]
    # Vignette, as seen through a dermatoscope.
    r2 = (xx**2 + yy**2) * 4
    img *= (1.0 - rng.uniform(0.0, 0.12) * np.clip(r2 - 0.4, 0, None))[..., None]
    return img


def _hair(rng: np.random.Generator, img: np.ndarray) -> None:
    """A few thin dark hairs on some images, for both classes (nuisance, not signal)."""
    size = img.shape[0]
    for _ in range(rng.integers(1, 4)):
        x0, y0 = rng.uniform(0, size, 2)
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(0.3, 0.8) * size
        bend = rng.uniform(-0.3, 0.3)
        t = np.linspace(0, 1, int(length * 2))
        xs = x0 + np.cos(ang) * length * t + bend * size * 0.2 * np.sin(np.pi * t)
        ys = y0 + np.sin(ang) * length * t
        ok = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
        xi, yi = xs[ok].astype(int), ys[ok].astype(int)
        shade = rng.uniform(0.35, 0.6)
        img[yi, xi] *= shade


def _lesion(
    rng: np.random.Generator, size: int, style: LesionStyle
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Alpha map (0..1) and RGB colour map of one lesion, plus the sampled feature values."""
    c = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    r0 = rng.uniform(0.16, 0.27) * size
    aspect = rng.uniform(0.72, 1.0)
    rot = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(float) + 0.5
    dx, dy = xx - c[0], yy - c[1]
    theta = np.arctan2(dy, dx)
    dist = np.hypot(dx, dy)

    # Elliptic base radius, modulated by random harmonics for irregular borders.
    ell = 1.0 / np.sqrt((np.cos(theta - rot)) ** 2 + (np.sin(theta - rot) / aspect) ** 2)
    irr = rng.uniform(*style.irregularity)
    # Several low harmonics with 1/k-decaying random amplitudes: lumpy, asymmetric outlines, not stars.
    mod = np.zeros_like(theta)
    for k in range(2, 9):
        mod += rng.normal(0.0, 1.0) / k**0.8 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    mod /= max(float(np.abs(mod).max()), 1e-6)
    radius = r0 * ell * (1.0 + irr * mod)
    edge = rng.uniform(0.8, 2.0)
    alpha = np.clip((radius - dist) / edge + 0.5, 0.0, 1.0)

    base = np.array([150.0, 96.0, 62.0]) * rng.uniform(0.75, 1.1) + rng.normal(0, 5, 3)
    # Slightly darker centre, as in most naevi.
    rel = np.clip(dist / np.maximum(radius, 1e-6), 0, 1)
    colour = base[None, None, :] * (0.86 + 0.14 * rel)[..., None]

    strength = 0.0
    if rng.random() < style.p_variegated:
        strength = rng.uniform(*style.colour_variation)
        shades = [_DARK_BROWN, _BLACKISH, _REDDISH, _BLUE_GREY]
        n = int(rng.integers(style.n_shades[0], style.n_shades[1] + 1))
        for j in rng.choice(len(shades), size=n, replace=False):
            field = _smooth_noise(rng, size, int(rng.integers(3, 6)))
            thr = rng.uniform(0.5, 0.7)
            blob = np.clip((field - thr) / 0.08, 0.0, 1.0) * strength
            colour = colour * (1 - blob[..., None]) + shades[j][None, None, :] * blob[..., None]
    texture = 1.0 + 0.05 * (_smooth_noise(rng, size, 8) - 0.5)
    colour = colour * texture[..., None]
    return alpha, colour, {"irregularity": float(irr), "colour_variation": float(strength)}


def _rounded_rect(size: int, x0: int, y0: int, w: int, h: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float) + 0.5
    # Distance outside the inner rectangle shrunk by r (rounded corners).
    qx = np.maximum(np.abs(xx - (x0 + w / 2)) - (w / 2 - r), 0.0)
    qy = np.maximum(np.abs(yy - (y0 + h / 2)) - (h / 2 - r), 0.0)
    return (qx**2 + qy**2) <= r * r


def _place_patch(rng: np.random.Generator, size: int, lesion: np.ndarray) -> tuple[np.ndarray, int]:
    """A patch mask of 10-14% of the side that keeps at least 2 px away from the lesion."""
    w = max(3, int(round(rng.uniform(0.10, 0.14) * size)))
    h = max(3, int(round(rng.uniform(0.10, 0.14) * size)))
    r = rng.uniform(0.15, 0.45) * min(w, h)
    # Grow the lesion support by 2 px so that the patch never touches it.
    grown = lesion.copy()
    for axis in (0, 1):
        for shift in (-2, -1, 1, 2):
            grown |= np.roll(lesion, shift, axis=axis)
    colour_idx = int(rng.integers(len(PATCH_PALETTE)))
    for _ in range(200):
        x0 = int(rng.integers(1, size - w))
        y0 = int(rng.integers(1, size - h))
        m = _rounded_rect(size, x0, y0, w, h, r)
        if not (m & grown).any():
            return m, colour_idx
    # Fall back to the corner farthest from the lesion (always free for the default lesion sizes).
    ys, xs = np.nonzero(lesion)
    cy, cx = (ys.mean(), xs.mean()) if len(ys) else (size / 2, size / 2)
    x0 = 1 if cx > size / 2 else size - w - 1
    y0 = 1 if cy > size / 2 else size - h - 1
    m = _rounded_rect(size, x0, y0, w, h, r)
    if (m & grown).any():
        raise RuntimeError("could not place the patch beside the lesion; use a larger image size")
    return m, colour_idx


def render_lesion_image(
    rng: np.random.Generator, size: int, label: str, patch: bool
) -> tuple[np.ndarray, np.ndarray | None, dict[str, float]]:
    """One RGB uint8 image of class ``label``, with a coloured patch (and its mask) when ``patch``."""
    img = _skin(rng, size)
    alpha, colour, feats = _lesion(rng, size, STYLES[label])
    img = img * (1 - alpha[..., None]) + colour * alpha[..., None]
    if rng.random() < 0.25:
        _hair(rng, img)
    img = img + rng.normal(0.0, 3.0, img.shape)
    mask = None
    if patch:
        mask, ci = _place_patch(rng, size, alpha > 0.02)
        pc = np.array(PATCH_PALETTE[ci], dtype=float) * rng.uniform(0.9, 1.0)
        shading = 1.0 + rng.normal(0.0, 0.02, (size, size))
        img[mask] = np.clip(pc[None, :] * shading[mask][:, None], 0, 255)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask, feats


def generate_isic_like(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    state: TaskState | None = None,
    *,
    n_train: int = 2000,
    n_test: int = 1000,
    size: int = 64,
    p_benign_patch: float = 0.8,
    p_malignant_patch: float = 0.0,
    p_test_patch: float = 0.5,
) -> Path:
    """Write the ISIC-like set into ``out_dir`` and return the manifest path.

    Classes are balanced per split. In training exactly round(p * n) images of each class carry a patch
    (``p_benign_patch``, ``p_malignant_patch``); at test time ``p_test_patch`` of each class, independent
    of the label.
    """
    state = ensure_state(state)
    check_counts(n_train, n_test)
    if size < 32:
        raise ValueError("size must be at least 32 px")
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, str, bool]] = []
    for split, n, p_by_class in (
        ("train", n_train, {"benign": p_benign_patch, "malignant": p_malignant_patch}),
        ("test", n_test, {"benign": p_test_patch, "malignant": p_test_patch}),
    ):
        labels = np.array([i % 2 for i in range(n)])
        labels = labels[rng.permutation(n)]
        flags = np.zeros(n, dtype=bool)
        for ci, cname in enumerate(CLASSES):
            idx = np.nonzero(labels == ci)[0]
            flags[idx] = exact_fraction_flags(rng, len(idx), p_by_class[cname])
        plan.extend((split, CLASSES[int(y)], bool(f)) for y, f in zip(labels, flags))

    writer = BenchWriter(out_dir, NAME)
    total = len(plan)
    for i, (split, label, patch) in enumerate(plan):
        state.check()
        img, mask, _ = render_lesion_image(rng, size, label, patch)
        writer.add(img, label, GROUPS[1] if patch else GROUPS[0], split, f"{i:05d}", mask)
        state.progress(i + 1, total, f"{NAME}: image {i + 1}/{total}")

    return writer.finish(
        seed=seed,
        parameters={
            "n_train": n_train,
            "n_test": n_test,
            "size": size,
            "p_benign_patch": p_benign_patch,
            "p_malignant_patch": p_malignant_patch,
            "p_test_patch": p_test_patch,
        },
        classes=CLASSES,
        groups=GROUPS,
        artefact=(
            "A vivid coloured rounded rectangle (10-14% of the image side, colour from a palette of six) at a "
            "random place that keeps >= 2 px away from the lesion. Training: on a fraction p_benign_patch of "
            "benign and p_malignant_patch of malignant images; test: on p_test_patch of each class."
        ),
        source={
            "images": "procedurally generated by lvlmva_desktop (no real patient images); a stand-in for "
            "ISIC dermoscopy images with coloured band-aid patches",
            "licence": "generated data, no third-party rights",
        },
        class_descriptions=CLASS_DESCRIPTIONS,
        extra={"image_size": [size, size], "channels": 3},
    )
