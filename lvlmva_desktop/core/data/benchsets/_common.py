"""Shared writer for the benchmark sets: PNGs, the CSV manifest and dataset.json, all byte-deterministic.

Every generator produces the same layout (``images/``, ``masks/``, ``manifest.csv``, ``dataset.json``) so
that the project's CSV importer reads them like any user data set; keeping the writing in one place keeps
the three generators byte-identical in format.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "label", "group", "split", "mask")
FORMAT_VERSION = 1
_MARKER_KEY = "lvlmva_benchset"


def exact_fraction_flags(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Boolean flags with exactly round(fraction * n) True entries at random places.

    Exact counts (instead of independent coin flips) keep small test sets balanced, so every
    class x group cell of the worst-group metric has the intended size for every seed.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    k = int(round(fraction * n))
    flags = np.zeros(n, dtype=bool)
    flags[rng.permutation(n)[:k]] = True
    return flags


def check_counts(n_train: int, n_test: int) -> None:
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise ValueError(f"n_train and n_test must be >= 0 and not both 0, got {n_train}, {n_test}")


class BenchWriter:
    """Writes images, masks and manifest rows of one benchmark set into ``out_dir``.

    The manifest and dataset.json are written last (atomically), so a cancelled run never leaves a
    manifest that points at missing files.
    """

    def __init__(self, out_dir: str | os.PathLike[str], name: str) -> None:
        self.out_dir = Path(out_dir)
        self.name = name
        self.rows: list[dict[str, str]] = []
        self._prepare()

    def _prepare(self) -> None:
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        meta = out / "dataset.json"
        stale = [out / "images", out / "masks"]
        if any(p.exists() for p in stale):
            ours = False
            if meta.is_file():
                try:
                    ours = bool(json.loads(meta.read_text(encoding="utf-8")).get(_MARKER_KEY))
                except (OSError, ValueError):
                    ours = False
            if not ours:
                raise FileExistsError(
                    f"{out} already holds images/ or masks/ that were not written by a benchmark generator; "
                    "choose an empty folder"
                )
            # A previous benchmark run: remove its files so that a smaller re-run leaves no strays.
            for p in stale:
                if p.exists():
                    shutil.rmtree(p)
            for p in (out / "manifest.csv", meta):
                p.unlink(missing_ok=True)
        (out / "images").mkdir()
        (out / "masks").mkdir()

    def add(
        self,
        image: np.ndarray,
        label: str,
        group: str,
        split: str,
        stem: str,
        mask: np.ndarray | None,
    ) -> None:
        """Save one image (and its artefact mask, if any) and record its manifest row."""
        rel_img = f"images/{split}/{stem}.png"
        rel_mask = ""
        _save_png(image, self.out_dir / rel_img)
        if mask is not None:
            if mask.shape != image.shape[:2]:
                raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
            rel_mask = f"masks/{split}/{stem}.png"
            _save_png(np.where(mask, 255, 0).astype(np.uint8), self.out_dir / rel_mask)
        self.rows.append({"path": rel_img, "label": label, "group": group, "split": split, "mask": rel_mask})

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Images per split -> class -> group, in a stable (sorted) order."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for r in self.rows:
            g = out.setdefault(r["split"], {}).setdefault(r["label"], {})
            g[r["group"]] = g.get(r["group"], 0) + 1
        return {
            s: {c: dict(sorted(gs.items())) for c, gs in sorted(cs.items())} for s, cs in sorted(out.items())
        }

    def finish(
        self,
        *,
        seed: int,
        parameters: dict[str, Any],
        classes: Sequence[str],
        groups: Sequence[str],
        artefact: str,
        source: dict[str, str],
        class_descriptions: dict[str, str],
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write manifest.csv and dataset.json; returns the manifest path."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        manifest = self.out_dir / "manifest.csv"
        _atomic_write(manifest, buf.getvalue())
        meta: dict[str, Any] = {
            _MARKER_KEY: FORMAT_VERSION,
            "name": self.name,
            "seed": int(seed),
            "parameters": parameters,
            "classes": list(classes),
            "groups": list(groups),
            "n_images": len(self.rows),
            "counts": self.counts(),
            "artefact": artefact,
            "class_descriptions": class_descriptions,
            "source": source,
            "manifest": "manifest.csv",
            "manifest_columns": list(MANIFEST_COLUMNS),
        }
        if extra:
            meta.update(extra)
        _atomic_write(self.out_dir / "dataset.json", json.dumps(meta, indent=2) + "\n")
        log.info("%s: wrote %d images to %s", self.name, len(self.rows), self.out_dir)
        return manifest


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    # PNG carries no timestamp here, so equal arrays give equal bytes.
    Image.fromarray(arr).save(path, format="PNG", optimize=False, compress_level=6)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)
