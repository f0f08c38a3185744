"""ELPV-tags: real electroluminescence images of solar cells with an injected corner tag as shortcut.

Like the laterality or hospital tags burnt into X-rays, a small bright label with a dark letter is
placed in a corner of most defective training cells and of no functional ones; at test time half of each
class carries it. The cells are the real ELPV images (Buerhop-Lutz et al.) shipped in the
``elpv-dataset`` package, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lvlmva_desktop.core.data.benchsets._common import BenchWriter, check_counts, exact_fraction_flags
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

log = logging.getLogger(__name__)

NAME = "elpv-tags"
CLASSES: tuple[str, ...] = ("functional", "defective")
GROUPS: tuple[str, ...] = ("no_tag", "tag")
DESCRIPTION = (
    "Real ELPV solar-cell electroluminescence images (grey): functional vs defective; a bright corner "
    "tag with a letter on most defective training cells is the shortcut."
)
CLASS_DESCRIPTIONS: dict[str, str] = {
    "functional": (
        "a solar cell that glows evenly between its thin grid lines, with no dark cracks, broken fingers or "
        "dark inactive areas; a bright label with a letter in a corner is irrelevant"
    ),
    "defective": (
        "a solar cell with dark cracks, dark lines across the cell, broken fingers or dark inactive "
        "(unlit) areas; a bright label with a letter in a corner is irrelevant"
    ),
}

# 3x5 pixel glyphs for the tag letters (1 = dark stroke), like the "L"/"R" laterality markers on X-rays.
GLYPHS: dict[str, np.ndarray] = {
    "L": np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], dtype=bool),
    "R": np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0], [1, 0, 1], [1, 0, 1]], dtype=bool),
}
TAG_SIDE = (0.12, 0.16)  # tag height as a fraction of the image side

_SOURCE = {
    "images": "ELPV dataset: 2,624 electroluminescence images (300x300, 8-bit) of mono- and polycrystalline "
    "solar cells with defect probabilities 0, 1/3, 2/3, 1, read from the elpv-dataset package",
    "licence": "CC BY-NC-SA 4.0 (images); used here for testing and benchmarks only, non-commercial",
    "reference": "Buerhop-Lutz et al., 'A Benchmark for Visual Identification of Defective Solar Cells in "
    "Electroluminescence Imagery', EU PVSEC 2018; Deitsch et al., Solar Energy 2019/2021",
}


def _elpv_dir() -> Path:
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "ELPV-tags needs the ELPV solar-cell images; install them with `pip install elpv-dataset`"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (data / "labels.csv").is_file():
        raise RuntimeError(
            f"elpv-dataset is installed but {data / 'labels.csv'} is missing; reinstall it "
            "(`pip install elpv-dataset`)"
        )
    return data


@functools.lru_cache(maxsize=1)
def load_elpv_labels() -> tuple[tuple[str, float, str], ...]:
    """(relative image path, defect probability, cell type) for every ELPV cell, in file order."""
    data = _elpv_dir()
    rows = []
    # Same format that elpv_dataset.utils.load_dataset parses: whitespace-separated path, probability, type.
    for line in (data / "labels.csv").read_text(encoding="ascii").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        rows.append((parts[0], float(parts[1]), parts[2]))
    if not rows:
        raise RuntimeError(f"no cells listed in {data / 'labels.csv'}")
    return tuple(rows)


def _load_cell(rel: str, size: int) -> np.ndarray:
    with Image.open(_elpv_dir() / rel) as im:
        im = im.convert("L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.LANCZOS)  # antialiased downscale
        return np.array(im, dtype=np.uint8)


def _allocate(sizes: Sequence[int], k: int) -> list[int]:
    """Split ``k`` over strata proportionally to ``sizes`` (largest remainder), never above a stratum size."""
    total = sum(sizes)
    if k > total:
        raise ValueError(f"asked for {k} images but only {total} are available")
    exact = [k * s / total if total else 0.0 for s in sizes]
    quota = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - quota[i]), i))
    for i in order[: k - sum(quota)]:
        quota[i] += 1
    return quota


def add_tag(
    rng: np.random.Generator, image: np.ndarray, letter: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Burn a bright tag with a dark letter into a random corner; returns (image, bool mask of the tag)."""
    size_y, size_x = image.shape
    side = min(size_y, size_x)
    h = max(7, int(round(rng.uniform(*TAG_SIDE) * side)))
    w = max(5, int(round(h * rng.uniform(0.75, 0.95))))
    max_off = max(1, int(round(0.05 * side)))
    off_y, off_x = (int(v) for v in rng.integers(1, max_off + 1, size=2))
    corner = int(rng.integers(4))
    y0 = off_y if corner in (0, 1) else size_y - h - off_y
    x0 = off_x if corner in (0, 2) else size_x - w - off_x
    if letter is None:
        letter = "LR"[int(rng.integers(2))]
    glyph = GLYPHS[letter]
    bright = rng.uniform(232, 250)
    dark = rng.uniform(0, 40)
    tag = np.clip(bright + rng.normal(0.0, 2.0, (h, w)), 0, 255)
    scale = max(1, min((w - 2) // glyph.shape[1], (h - 2) // glyph.shape[0]))
    g = np.kron(glyph, np.ones((scale, scale), dtype=bool))
    gy, gx = (h - g.shape[0]) // 2, (w - g.shape[1]) // 2
    tag[gy : gy + g.shape[0], gx : gx + g.shape[1]][g] = dark
    out = image.copy()
    out[y0 : y0 + h, x0 : x0 + w] = np.rint(tag).astype(np.uint8)
    mask = np.zeros(image.shape, dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return out, mask


def generate_elpv_tags(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    state: TaskState | None = None,
    *,
    size: int = 64,
    test_fraction: float = 0.35,
    n_train: int | None = None,
    n_test: int | None = None,
    drop_ambiguous: bool = True,
    p_defective_tag: float = 0.85,
    p_functional_tag: float = 0.0,
    p_test_tag: float = 0.5,
) -> Path:
    """Write ELPV-tags into ``out_dir`` and return the manifest path.

    "functional" = defect probability 0, "defective" = probability >= 2/3; the ambiguous 1/3 cells are
    dropped unless ``drop_ambiguous`` is False, in which case they count as defective. The split is
    stratified by class and cell type (mono/poly); by default all cells are used with ``test_fraction``
    held out, or a stratified subset of exactly ``n_train`` / ``n_test`` cells when given.
    """
    state = ensure_state(state)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if size < 16:
        raise ValueError("size must be at least 16 px")
    rows = load_elpv_labels()
    cells: list[tuple[str, str, str]] = []  # (path, class, type)
    for rel, prob, ctype in rows:
        if prob == 0.0:
            cells.append((rel, CLASSES[0], ctype))
        elif prob >= 2 / 3 - 1e-6 or not drop_ambiguous:
            cells.append((rel, CLASSES[1], ctype))
    n_all = len(cells)
    if n_test is None:
        n_test = int(round(test_fraction * n_all)) if n_train is None else n_all - n_train
    if n_train is None:
        n_train = n_all - n_test
    check_counts(n_train, n_test)
    if n_train + n_test > n_all:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {n_all} usable cells")

    rng = np.random.default_rng(seed)
    strata_keys = sorted({(c, t) for _, c, t in cells}, key=lambda k: (CLASSES.index(k[0]), k[1]))
    strata = [[i for i, (_, c, t) in enumerate(cells) if (c, t) == key] for key in strata_keys]
    strata = [[s[j] for j in rng.permutation(len(s))] for s in strata]
    test_quota = _allocate([len(s) for s in strata], n_test)
    rest = [s[q:] for s, q in zip(strata, test_quota)]
    train_quota = _allocate([len(s) for s in rest], n_train)
    split_idx = {
        "train": sorted(i for s, q in zip(rest, train_quota) for i in s[:q]),
        "test": sorted(i for s, q in zip(strata, test_quota) for i in s[:q]),
    }

    plan: list[tuple[str, int, bool]] = []
    for split, p_by_class in (
        ("train", {CLASSES[0]: p_functional_tag, CLASSES[1]: p_defective_tag}),
        ("test", {CLASSES[0]: p_test_tag, CLASSES[1]: p_test_tag}),
    ):
        idx = np.array(split_idx[split], dtype=int)
        idx = idx[rng.permutation(len(idx))]
        flags = np.zeros(len(idx), dtype=bool)
        for cname in CLASSES:
            sel = np.nonzero(np.array([cells[i][1] == cname for i in idx], dtype=bool))[0]
            flags[sel] = exact_fraction_flags(rng, len(sel), p_by_class[cname])
        plan.extend((split, int(i), bool(f)) for i, f in zip(idx, flags))

    writer = BenchWriter(out_dir, NAME)
    total = len(plan)
    type_counts: dict[str, dict[str, int]] = {}
    for k, (split, i, tagged) in enumerate(plan):
        state.check()
        rel, cname, ctype = cells[i]
        img = _load_cell(rel, size)
        mask = None
        if tagged:
            img, mask = add_tag(rng, img)
        stem = Path(rel).stem
        writer.add(img, cname, GROUPS[1] if tagged else GROUPS[0], split, stem, mask)
        tc = type_counts.setdefault(split, {})
        tc[f"{cname}/{ctype}"] = tc.get(f"{cname}/{ctype}", 0) + 1
        state.progress(k + 1, total, f"{NAME}: image {k + 1}/{total}")

    return writer.finish(
        seed=seed,
        parameters={
            "size": size,
            "test_fraction": test_fraction,
            "n_train": n_train,
            "n_test": n_test,
            "drop_ambiguous": drop_ambiguous,
            "p_defective_tag": p_defective_tag,
            "p_functional_tag": p_functional_tag,
            "p_test_tag": p_test_tag,
        },
        classes=CLASSES,
        groups=GROUPS,
        artefact=(
            "A bright rectangular tag (height 12-16% of the side, grey 232-250) with a dark 'L' or 'R' "
            "letter, burnt into a random corner 1-3 px from the edge, like the laterality tags on X-rays. "
            "Training: on p_defective_tag of defective and p_functional_tag of functional cells; test: on "
            "p_test_tag of each class. The mask covers the whole tag."
        ),
        source=_SOURCE,
        class_descriptions=CLASS_DESCRIPTIONS,
        extra={
            "image_size": [size, size],
            "channels": 1,
            "class_definition": {
                "functional": "defect probability 0",
                "defective": "defect probability >= 2/3" if drop_ambiguous else "defect probability > 0",
            },
            "cell_types": {s: dict(sorted(c.items())) for s, c in sorted(type_counts.items())},
        },
    )
