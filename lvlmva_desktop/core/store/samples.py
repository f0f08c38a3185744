"""The project's images: importing them (with a ledger of the rows each import added), listing them,
and decoding a split into tensors, cached and checked against the audit log."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from lvlmva_desktop.core.data.images import mask_to_tensor, read_image, read_mask, to_tensor
from lvlmva_desktop.core.data.importing import ImportReport
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.store.files import (
    ProjectError,
    atomic_write_json,
    read_project_image,
    sha256_file,
    write_tensors,
)

#: decoded-images files found to be (or not to be) the ones this program wrote: (path, mtime, size) -> bool
_VERIFIED_CACHES: dict[tuple[str, int, int], bool] = {}

#: where the rows each import added are kept (one JSON file per import, its sha256 in the audit log)
LEDGER_DIR = "ledger"
LEDGER_COLUMNS = ("id", "path", "label", "split", "grp", "mask_path", "height", "width", "sha256")


@dataclass
class SplitData:
    """Decoded images of one split, ready for a model: rows align across all fields."""

    sample_ids: list[int]
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64
    groups: list[str | None]
    masks: torch.Tensor  # (N, H, W) bool ground-truth artefact masks (all False where unknown / none)
    has_mask: torch.Tensor  # (N,) bool


log = logging.getLogger(__name__)


class SampleStore:
    """Part of Project (core/store/project.py): the samples table, the ledger and the decoded-images cache."""

    def add_samples(self, report: ImportReport) -> int:
        """Add the good rows of an import report; unknown classes are refused by the report's importer."""
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({s.label for s in report.samples} - set(index))
        if unknown:
            raise ProjectError(f"Labels {unknown} are not classes of this project ({self.classes}).")
        added = 0
        ledger: list[list] = []  # every row this import added, as written (core/store/integrity.py reads it)
        with self.transaction() as db:
            for s in report.samples:
                row = (
                    self.rel(s.path),
                    index[s.label],
                    s.split,
                    s.group,
                    self.rel(s.mask_path) if s.mask_path else None,
                    s.height,
                    s.width,
                    s.sha256,
                )
                cur = db.execute(
                    "INSERT OR IGNORE INTO samples (path, label, split, grp, mask_path, height, width, sha256) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    row,
                )
                if cur.rowcount:
                    ledger.append([int(cur.lastrowid), *row])
                added += cur.rowcount
            cur = db.execute(
                "INSERT INTO imports (created, source, n_imported, n_skipped, report) VALUES (?,?,?,?,?)",
                (time.time(), report.source, added, len(report.skipped), json.dumps(report.to_dict())),
            )
            path = self.root / LEDGER_DIR / f"import-{int(cur.lastrowid):04d}.json"
            path.parent.mkdir(exist_ok=True)
            atomic_write_json(path, {"columns": list(LEDGER_COLUMNS), "rows": ledger})
            self.audit(
                "import",
                {
                    "source": str(report.source),
                    "imported": added,
                    "skipped": len(report.skipped),
                    "ledger": self.rel(path),
                },
                {"data": self.data_hash(), "ledger": sha256_file(path)},
            )
        return added

    def samples(self, split: str | None = None) -> list[sqlite3.Row]:
        """The rows of every image (of ``split``), ascending id."""
        if split is None:
            return self.db.execute("SELECT * FROM samples ORDER BY id").fetchall()
        return self.db.execute("SELECT * FROM samples WHERE split=? ORDER BY id", (split,)).fetchall()

    def count_samples(self, split: str | None = None) -> int:
        """How many images the project has (of ``split``; every split with None)."""
        if split is None:
            return int(self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM samples WHERE split=?", (split,)).fetchone()[0])

    def has_samples(self, split: str | None = None) -> bool:
        """Whether the project has any image (of ``split``; of any split with None)."""
        return self.count_samples(split) > 0

    def split_counts(self) -> dict[str, int]:
        """Images per split, the splits in alphabetical order (only splits that have images)."""
        rows = self.db.execute("SELECT split, COUNT(*) n FROM samples GROUP BY split ORDER BY split")
        return {r["split"]: int(r["n"]) for r in rows}

    def sample_splits(self) -> list[str]:
        """The splits that have images, in alphabetical order."""
        return list(self.split_counts())

    def count_with_masks(self) -> int:
        """How many images have a ground-truth artefact mask."""
        return int(self.db.execute("SELECT COUNT(*) FROM samples WHERE mask_path IS NOT NULL").fetchone()[0])

    def has_masks(self) -> bool:
        """Whether any image has a ground-truth artefact mask (then verdict accuracy and the simulated
        critic apply)."""
        return self.count_with_masks() > 0

    def sample_row(self, sample_id: int) -> sqlite3.Row | None:
        """One image's samples-table row; None when the project has no image ``sample_id``."""
        return self.db.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()

    def sample_rows(self, sample_ids: list[int]) -> dict[int, sqlite3.Row]:
        """The rows of the given images by id (ids the project lacks are missing from the result)."""
        ids = [int(s) for s in sample_ids]
        rows: dict[int, sqlite3.Row] = {}
        for start in range(0, len(ids), 500):  # SQLite limits the number of bound parameters
            part = ids[start : start + 500]
            q = f"SELECT * FROM samples WHERE id IN ({','.join('?' * len(part))})"
            rows.update({r["id"]: r for r in self.db.execute(q, part)})
        return rows

    def sample_labels(self, sample_ids: list[int]) -> dict[int, int]:
        """Class index of each of the given images by id (ids the project lacks are missing)."""
        return {i: int(r["label"]) for i, r in self.sample_rows(sample_ids).items()}

    def first_sample_id(self) -> int | None:
        """The lowest image id; None without images."""
        row = self.db.execute("SELECT id FROM samples ORDER BY id LIMIT 1").fetchone()
        return int(row[0]) if row is not None else None

    def sample_ids(self) -> list[int]:
        """Every image id, ascending."""
        cur = self.db.cursor()
        cur.row_factory = None  # plain tuples: fast at 50,000 rows
        return [r[0] for r in cur.execute("SELECT id FROM samples ORDER BY id")]

    def sample_columns(self) -> list[tuple[int, int, str, str, str]]:
        """Every image as a plain tuple (id, label, split, group or "", path), ascending id: one query
        without Row objects, fast at 50,000 rows (core/views/browse.py)."""
        cur = self.db.cursor()
        cur.row_factory = None
        return cur.execute(
            "SELECT id, label, split, COALESCE(grp, ''), path FROM samples ORDER BY id"
        ).fetchall()

    def imports(self) -> list[sqlite3.Row]:
        """Every import (created, source, n_imported, n_skipped, report), oldest first."""
        return self.db.execute("SELECT * FROM imports ORDER BY id").fetchall()

    def data_hash(self) -> str:
        """Hash of the data manifest (paths, labels, splits, groups, masks, content hashes)."""
        h = hashlib.sha256()
        for r in self.samples():
            h.update(
                json.dumps(
                    [r["path"], r["label"], r["split"], r["grp"], r["mask_path"], r["sha256"]]
                ).encode()
            )
        return h.hexdigest()

    def _split_cache(self, split: str, rows: list[sqlite3.Row]) -> Path:
        """Where ``load_split`` keeps the decoded split (its name changes with any change of the data)."""
        key = hashlib.sha256(
            json.dumps(
                [self.image_size, self.channels, [(r["id"], r["sha256"], r["mask_path"]) for r in rows]]
            ).encode()
        ).hexdigest()[:16]
        return self.root / "cache" / f"data-{split}-{key}.safetensors"

    def cached_images(self, split: str, positions: list[int]) -> torch.Tensor | None:
        """Images at ``positions`` (rows of ``samples(split)``) read from the decoded split's cache, without
        loading the rest of it; None when the split has not been decoded (or its cache cannot be read)."""
        from safetensors import safe_open

        cache = self._split_cache(split, self.samples(split))
        if not cache.is_file() or not self.cache_verified(cache):
            return None
        try:
            with safe_open(str(cache), framework="pt") as f:
                x = f.get_slice("x")
                return torch.cat([x[i : i + 1] for i in positions]) if positions else None
        except Exception as e:  # noqa: BLE001 - a damaged cache (SafetensorError too): decode them instead
            log.warning("could not read the decoded %s images (%s); decoding them", split, e)
            return None

    def check_data(self) -> None:
        """Refuse images and labels that are not those imported: the data hash of the samples table against
        the one the audit log recorded at the latest import (one edited label, path or split changes it)."""
        logged = self._latest_import_hash()
        if logged is not None and logged != self.data_hash():
            raise ProjectError(
                "The project's list of images (their labels, splits, groups, masks or content hashes) is not "
                "the one recorded in the audit log at the latest import: it was changed afterwards. Refusing "
                "to use it; `lvlmva audit PROJ --verify` names the changed images."
            )

    def _latest_import_hash(self) -> str | None:
        try:
            row = self.db.execute(
                "SELECT hashes FROM audit_log WHERE action='import' ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:
            return None
        try:
            return json.loads(row["hashes"]).get("data") if row is not None else None
        except (TypeError, ValueError, AttributeError):
            return "unreadable"

    def cache_verified(self, cache: Path) -> bool:
        """Whether a decoded-images file is the one this program wrote (its sha256 as the audit log
        recorded it); remembered per file state, so it is hashed once."""
        try:
            st = cache.stat()
        except OSError:
            return False
        key = (str(cache), st.st_mtime_ns, st.st_size)
        if key not in _VERIFIED_CACHES:
            logged = self.logged_hash("decoded_images", "file", self.rel(cache), "cache")
            _VERIFIED_CACHES[key] = logged is not None and logged == sha256_file(cache)
        return _VERIFIED_CACHES[key]

    def decode_sample(self, row) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One samples-table row at the project's image size and channels: the image (C, H, W) and its
        artefact mask (H, W), None without one; a file that cannot be read is one ProjectError."""
        h, w = self.image_size
        x = to_tensor(read_project_image(self.abs(row["path"]), row["id"], read_image), (h, w), self.channels)
        if not row["mask_path"]:
            return x, None
        return x, mask_to_tensor(read_project_image(self.abs(row["mask_path"]), row["id"], read_mask), (h, w))

    def load_split(self, split: str, state: TaskState | None = None) -> SplitData:
        """Decode a split at the project's image size and channels, cached as safetensors.

        Checked first: the image list against the audit log (``check_data``), a cached decoding against the
        hash logged when it was written (an unrecorded or changed one is decoded again), and while decoding
        every image file against its content hash from the import."""
        state = ensure_state(state)
        self.check_data()
        rows = self.samples(split)
        cache = self._split_cache(split, rows)
        ids = [r["id"] for r in rows]
        groups = [r["grp"] for r in rows]
        y = torch.tensor([r["label"] for r in rows], dtype=torch.int64)
        if cache.is_file():
            if self.cache_verified(cache):
                t = load_file(str(cache))
                return SplitData(ids, t["x"], y, groups, t["masks"], t["has_mask"])
            log.warning("%s is not the decoding this program recorded; decoding the images again", cache.name)
        h, w = self.image_size
        x = torch.zeros(len(rows), self.channels, h, w)
        masks = torch.zeros(len(rows), h, w, dtype=torch.bool)
        has_mask = torch.zeros(len(rows), dtype=torch.bool)
        changed: list[str] = []
        from lvlmva_desktop.core.data.images import file_sha256

        for i, r in enumerate(rows):
            state.check()
            x[i], mask = self.decode_sample(r)
            if file_sha256(self.abs(r["path"])) != r["sha256"]:
                changed.append(f"{r['id']} ({r['path']})")
            if mask is not None:
                masks[i], has_mask[i] = mask, True
            if i % 64 == 0:
                state.progress(i, len(rows), f"decoding {split} images")
        if changed:
            raise ProjectError(
                f"{len(changed)} {split} image file(s) changed after they were imported (their content is not "
                f"the one recorded), e.g. {', '.join(changed[:5])}. Refusing to use them: restore the files, "
                "or import the changed images as new ones."
            )
        state.progress(1.0, None, f"decoded {len(rows)} {split} images")
        if self.read_only and self.read_only_reason != "held":
            # an archive (or a project opened --read-only) is left exactly as it is
            log.info("read-only project: the decoded %s images are not cached", split)
            return SplitData(ids, x, y, groups, masks, has_mask)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # a reader beside the writer may cache the decoding
        try:
            cache.parent.mkdir(exist_ok=True)  # cache/ may have been emptied, or deleted whole (docs say so)
            write_tensors({"x": x, "masks": masks, "has_mask": has_mask}, tmp, self.root)
            os.replace(tmp, cache)
            if not self.read_only:  # a reader cannot log: the writer decodes again rather than trust it
                self.audit(
                    "decoded_images",
                    {"split": split, "file": self.rel(cache), "n": len(rows)},
                    {"cache": sha256_file(cache)},
                )
        except (OSError, ProjectError):
            if not self.read_only:
                raise
            log.info("read-only project: the decoded %s images are not cached", split)
        return SplitData(ids, x, y, groups, masks, has_mask)
