"""Importing a labelled image data set, with a validation report instead of a crash.

Two sources are supported: a folder with one subfolder per class (optionally under ``train/`` and
``test/``), and a CSV manifest (``path,label[,group,split,mask]``). Each row is checked independently:
the image is decoded completely (so truncated files are caught now, not in the middle of training), the
optional artefact mask is read and compared with the image size, and anything wrong is recorded as a
``SkippedRow`` with a reason from ``REASONS``. Only a CSV without the required columns fails as a whole.

Rows without a split get one from a hash of (seed, relative path): stable across runs, machines and
row order, and an image keeps its split when others are added or removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lvlmva_desktop.core.data.csvtext import decode_csv, pick_delimiter, read_records
from lvlmva_desktop.core.data.images import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    ImageLoadError,
    check_image,
    file_sha256,
    is_dicom_file,
    read_mask,
)
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

log = logging.getLogger(__name__)

SPLITS = ("train", "test", "val")
REASONS = (
    "empty_path",
    "missing",
    "unreadable",
    "truncated",
    "too_large",
    "unsupported",
    "unsupported_transfer_syntax",
    "multi_frame",
    "unknown_label",
    "empty_label",
    "bad_split",
    "mask_missing",
    "mask_unreadable",
    "mask_size_mismatch",
    "duplicate",
)
_SPLIT_ALIASES = {"train": "train", "test": "test", "val": "val", "validation": "val"}
_INT_RE = re.compile(r"[+-]?\d+")


@dataclass
class SampleRecord:
    """One usable image: where it is, what it is, and what was verified about it at import."""

    path: str  # absolute, resolved path of the image
    label: str  # class name
    split: str  # "train" | "test" | "val"
    group: str | None  # spurious attribute (e.g. "patch"/"no_patch"); None if unknown
    mask_path: str | None  # absolute path of a ground-truth artefact mask; None = no artefact / unknown
    height: int
    width: int
    sha256: str


@dataclass
class SkippedRow:
    """One row (or file) that was not imported, and why."""

    row: int | None  # 1-based data row number in the CSV (header not counted), None for folder import
    path: str  # as written in the source
    reason: str  # one of REASONS
    detail: str


@dataclass
class ImportReport:
    """The outcome of an import: the good samples, every skipped row, and the class list (index order)."""

    samples: list[SampleRecord] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    source: str = ""

    def counts(self) -> dict:
        """Counts per split, per class, per (split, class), and of skipped rows per reason."""
        by_split = Counter(s.split for s in self.samples)
        by_class = Counter(s.label for s in self.samples)
        by_split_class: dict[str, dict[str, int]] = {}
        for s in self.samples:
            d = by_split_class.setdefault(s.split, {c: 0 for c in self.classes})
            d[s.label] = d.get(s.label, 0) + 1
        reasons = Counter(r.reason for r in self.skipped)
        return {
            "total": len(self.samples),
            "by_split": {sp: by_split[sp] for sp in SPLITS if by_split[sp]},
            "by_class": {c: by_class.get(c, 0) for c in self.classes},
            "by_split_class": {sp: by_split_class[sp] for sp in SPLITS if sp in by_split_class},
            "skipped": len(self.skipped),
            "skipped_by_reason": {r: reasons[r] for r in REASONS if reasons[r]},
            "by_split_class_group": self.class_group_counts(),
        }

    def summary(self) -> str:
        """Human-readable report: one headline, then one line per skipped row, then the warnings."""
        n, k = len(self.samples), len(self.classes)
        head = f"Imported {n} image{'s' * (n != 1)} ({k} class{'es' * (k != 1)}) from {self.source}"
        warnings = "".join(f"\nwarning: {w}" for w in self.warnings())
        if not self.skipped:
            return head + "; nothing skipped." + warnings
        reasons = Counter(r.reason for r in self.skipped)
        parts = [f"{reasons[r]} {r}" for r in REASONS if reasons[r]]
        parts += [f"{c} {r}" for r, c in reasons.items() if r not in REASONS]
        m = len(self.skipped)
        lines = [f"{head}; skipped {m} row{'s' * (m != 1)}: {', '.join(parts)}"]
        for r in self.skipped:
            where = f"row {r.row}: " if r.row is not None else ""
            lines.append(f"{where}{r.path or '(empty path)'} - {r.reason}: {r.detail}")
        return "\n".join(lines) + warnings

    def look_alike_classes(self) -> list[list[str]]:
        """Groups of class names that differ only in letter case, spacing or invisible characters (a
        zero-width space, a soft hyphen): almost always one class typed twice, which would split it."""
        by_key: dict[str, list[str]] = {}
        for c in self.classes:
            by_key.setdefault(label_key(c), []).append(c)
        return [names for names in by_key.values() if len(names) > 1]

    def warnings(self) -> list[str]:
        """What the expert should check before going on (the import itself went through)."""
        out = []
        for names in self.look_alike_classes():
            shown = " and ".join(repr(n) for n in names)
            out.append(
                f"The classes {shown} differ only in letter case, spacing or invisible characters: if they are "
                "one class, correct the labels and import again."
            )
        return out

    def class_group_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Images per split, class and group ("" where the manifest gives none): the correlation between a
        class and an attribute that a classifier may take as a shortcut shows here first."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for sp in SPLITS:
            rows = [s for s in self.samples if s.split == sp]
            if not rows:
                continue
            groups = sorted({s.group or "" for s in rows})
            table = {c: dict.fromkeys(groups, 0) for c in self.classes}
            for s in rows:
                table.setdefault(s.label, dict.fromkeys(groups, 0))[s.group or ""] += 1
            out[sp] = table
        return out

    def class_group_table(self) -> str:
        """The class x group counts per split as text, with the share of each group within each class;
        empty when the manifest gives no groups."""
        counts = self.class_group_counts()
        if not any(g for table in counts.values() for per in table.values() for g in per):
            return ""
        lines = []
        for sp, table in counts.items():
            groups = sorted({g for per in table.values() for g in per})
            width = max([len(c) for c in table] + [5])
            names = [g or "(none)" for g in groups]
            lines.append(f"{sp}: images per class and group (share of the class)")
            lines.append("  " + " " * width + "".join(f"  {n:>18s}" for n in names))
            for c, per in table.items():
                total = sum(per.values())
                cells = [
                    f"{per[g]:>7d} ({per[g] / total:4.0%})" if total else f"{per[g]:>7d}       "
                    for g in groups
                ]
                lines.append(f"  {c:<{width}s}" + "".join(f"  {x:>18s}" for x in cells))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable form (plain dicts, lists, strings and ints)."""
        return {
            "source": self.source,
            "classes": list(self.classes),
            "warnings": self.warnings(),
            "samples": [asdict(s) for s in self.samples],
            "skipped": [asdict(r) for r in self.skipped],
            "counts": self.counts(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ImportReport:
        """Inverse of to_dict (the derived counts are recomputed, not read)."""
        return cls(
            samples=[SampleRecord(**s) for s in d.get("samples", [])],
            skipped=[SkippedRow(**r) for r in d.get("skipped", [])],
            classes=list(d.get("classes", [])),
            source=d.get("source", ""),
        )


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------
def label_key(label: str) -> str:
    """A label as a person reads it: Unicode-normalised, invisible format characters (zero-width space,
    soft hyphen, BOM) removed, spacing collapsed, case folded."""
    text = unicodedata.normalize("NFKC", label)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.split()).casefold()


def assign_split(key: str, seed: int, test_fraction: float) -> str:
    """ "test" with probability test_fraction, from a SHA-256 of (seed, key): stable everywhere."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "train"


def _split_key(path_text: str) -> str:
    """Normalised form of a path as written, so "./a\\b.png" and "a/b.png" hash alike."""
    p = posixpath.normpath(path_text.strip().replace("\\", "/"))
    return p[2:] if p.startswith("./") else p


def _sort_labels(labels: Iterable[str]) -> list[str]:
    """Sorted unique labels; numerically when all are integers (so "10" comes after "9")."""
    uniq = set(labels)
    if uniq and all(_INT_RE.fullmatch(x) for x in uniq):
        return sorted(uniq, key=lambda x: (int(x), x))
    return sorted(uniq)


def _check_fraction(test_fraction: float) -> float:
    f = float(test_fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    return f


def _duplicate_detail(first: tuple[str, str], label: str) -> str:
    where, first_label = first
    if first_label != label:
        return f"same image as {where}, which has label {first_label!r} (this row says {label!r})"
    return f"same image as {where}"


def _mask_reason(e: ImageLoadError) -> str:
    if e.reason == "missing":
        return "mask_missing"
    if e.reason == "mask_size_mismatch":
        return "mask_size_mismatch"
    return "mask_unreadable"


class _Validator:
    """Decodes images once per resolved path and remembers which row imported each one."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.seen: dict[str, tuple[str, str]] = {}  # resolved path -> (where first imported, label)
        self.failed: dict[str, ImageLoadError] = {}

    def image(self, resolved: str) -> tuple[int, int, str]:
        """(H, W, sha256) of a fully decoded image; raises ImageLoadError (cached per path)."""
        if resolved in self.failed:
            raise self.failed[resolved]
        try:
            h, w = check_image(resolved, self.max_pixels)
            return h, w, file_sha256(resolved)
        except ImageLoadError as e:
            self.failed[resolved] = e
            raise
        except Exception as e:  # never let one file stop the import
            log.warning("unexpected error validating %s", resolved, exc_info=True)
            err = ImageLoadError("unreadable", f"unexpected error: {type(e).__name__}: {e}")
            self.failed[resolved] = err
            raise err from None

    def new_image(self, resolved: str, label: str) -> tuple[int, int, str]:
        """``image(resolved)`` for a file this import has not taken yet; one it already took (``seen``)
        raises ImageLoadError with the skip reason "duplicate" and where it was first imported."""
        if resolved in self.seen:
            raise ImageLoadError("duplicate", _duplicate_detail(self.seen[resolved], label))
        return self.image(resolved)


# ---------------------------------------------------------------------------------------------------------
# Folder import
# ---------------------------------------------------------------------------------------------------------
def _visible_dirs(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError as e:
        log.warning("cannot list %s: %s", folder, e)
        return []
    return sorted((p for p in entries if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _walk_files(
    folder: Path, state: TaskState, unreadable: list[tuple[Path, str]] | None = None
) -> list[Path]:
    """All non-hidden files below ``folder`` (recursively, symlinked folders not followed), sorted.
    Folders that cannot be read are added to ``unreadable`` with the reason (os.walk would skip them in
    silence)."""
    found: list[Path] = []

    def failed(e: OSError) -> None:
        if unreadable is not None:
            unreadable.append((Path(e.filename or folder), e.strerror or str(e)))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False, onerror=failed):
        state.check()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _detect_split_layout(root: Path) -> dict[str, Path] | None:
    """{split: folder} when root holds train/ plus test/ or val/ (case-insensitive), else None."""
    layout: dict[str, Path] = {}
    for d in _visible_dirs(root):
        split = _SPLIT_ALIASES.get(d.name.lower())
        if split is not None and split not in layout:
            layout[split] = d
    if "train" in layout and ("test" in layout or "val" in layout):
        return layout
    return None


def import_class_folders(
    root: str | os.PathLike,
    split: str | None = None,
    classes: list[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    state: TaskState | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImportReport:
    """Import ``root/<class>/**/image`` (or ``root/{train,test,val}/<class>/...``), validating every file.

    Class folders are sorted by name (numerically if all names are integers) unless ``classes`` gives the
    order; files in folders outside ``classes`` are skipped as "unknown_label". Without a train/test layout,
    ``split`` puts every image in that split, or (None) a stable hash sends ``test_fraction`` of them to
    "test". With the layout, ``split`` restricts the import to that split's folder.
    """
    state = ensure_state(state)
    test_fraction = _check_fraction(test_fraction)
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise ValueError(f"data folder not found: {root_path}")
    if split is not None:
        split = _SPLIT_ALIASES.get(split.strip().lower(), "")
        if not split:
            raise ValueError(f"split must be one of {', '.join(SPLITS)} or None")
    root_path = root_path.resolve()

    layout = _detect_split_layout(root_path)
    # (split folder or None, class folder) pairs; split None = assign later
    class_dirs: list[tuple[str | None, Path]] = []
    if layout is not None:
        others = [d.name for d in _visible_dirs(root_path) if _SPLIT_ALIASES.get(d.name.lower()) is None]
        if others:
            log.warning("split layout in %s: ignoring other folders %s", root_path, others)
        for sp in SPLITS:
            if sp in layout and (split is None or sp == split):
                class_dirs.extend((sp, d) for d in _visible_dirs(layout[sp]))
    else:
        class_dirs = [(split, d) for d in _visible_dirs(root_path)]

    folder_classes = _sort_labels(d.name for _, d in class_dirs)
    wanted = [str(c) for c in classes] if classes is not None else folder_classes
    wanted_set = set(wanted)

    # Gather (relative path, class, split) for every file first so progress has a total.
    items: list[tuple[Path, str, str | None]] = []
    unreadable: list[tuple[Path, str]] = []
    for sp, d in class_dirs:
        files = _walk_files(d, state, unreadable)
        if not files:
            log.warning("class folder %s contains no files", d)
        items.extend((f, d.name, sp) for f in files)

    report = ImportReport(classes=list(wanted), source=str(root_path))
    for folder, why in unreadable:
        rel = folder.relative_to(root_path).as_posix() if folder.is_relative_to(root_path) else str(folder)
        report.skipped.append(
            SkippedRow(
                row=None, path=rel + "/", reason="unreadable", detail=f"the folder cannot be read ({why})"
            )
        )
    validator = _Validator(max_pixels)
    n = len(items)
    for i, (f, label, sp) in enumerate(items):
        state.check()
        rel = f.relative_to(root_path).as_posix()
        state.progress(i, n, f"Checking {rel}")
        try:
            skip = _folder_item(f, rel, label, sp, wanted_set, validator, seed, test_fraction, report)
        except Exception as e:  # never let one file stop the import
            log.warning("unexpected error on %s", f, exc_info=True)
            skip = ("unreadable", f"unexpected error: {type(e).__name__}: {e}")
        if skip is not None:
            report.skipped.append(SkippedRow(row=None, path=rel, reason=skip[0], detail=skip[1]))
    state.progress(n, n, f"Imported {len(report.samples)} images, skipped {len(report.skipped)}")
    log.info(
        "folder import from %s: %d images, %d skipped", root_path, len(report.samples), len(report.skipped)
    )
    return report


def _folder_item(
    f: Path,
    rel: str,
    label: str,
    split: str | None,
    wanted: set[str],
    validator: _Validator,
    seed: int,
    test_fraction: float,
    report: ImportReport,
) -> tuple[str, str] | None:
    """Validate one file of a folder import; append a sample or return (reason, detail)."""
    if f.is_symlink() and not f.exists():
        return "unreadable", "a symbolic link that leads nowhere (a loop, or its target was removed)"
    if f.suffix.lower() not in SUPPORTED_SUFFIXES and not is_dicom_file(f):
        # DICOM files often have no suffix or a number as one (1.2.840....7): they are told by their preamble
        return "unsupported", f"file type {f.suffix or '(none)'!r} is not an image type we read"
    if label not in wanted:
        return "unknown_label", f"class folder {label!r} is not among the requested classes"
    resolved = str(f.resolve())
    try:
        h, w, sha = validator.new_image(resolved, label)
    except ImageLoadError as e:
        return e.reason, e.detail
    validator.seen[resolved] = (rel, label)
    final_split = split if split is not None else assign_split(_split_key(rel), seed, test_fraction)
    report.samples.append(SampleRecord(resolved, label, final_split, None, None, h, w, sha))
    return None


# ---------------------------------------------------------------------------------------------------------
# CSV manifest import
# ---------------------------------------------------------------------------------------------------------
def _resolve_cell(cell: str, base: Path) -> Path:
    """A path as written in the CSV, relative to the CSV's folder unless absolute; tolerates Windows '\\'."""
    p = Path(cell).expanduser()
    if not p.is_absolute():
        p = base / p
    if not p.exists() and "\\" in cell and os.sep == "/":
        alt = Path(cell.replace("\\", "/")).expanduser()
        p2 = alt if alt.is_absolute() else base / alt
        if p2.exists():
            p = p2
    return Path(os.path.abspath(p))


def import_csv_manifest(
    csv_path: str | os.PathLike,
    classes: list[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    state: TaskState | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImportReport:
    """Import the images listed in a CSV (``path``, ``label`` required; ``group``, ``split``, ``mask``).

    Paths are relative to the CSV's folder (absolute ones are allowed). Every row is checked and bad rows
    are reported, never fatal; the only errors raised are a missing/undecodable CSV or a header without
    the required columns (ValueError naming them). Without ``classes`` the class list is the sorted set of
    labels of the imported rows (numeric order when all are integers).
    """
    state = ensure_state(state)
    test_fraction = _check_fraction(test_fraction)
    csv_file = Path(csv_path).expanduser().resolve()
    if not csv_file.is_file():
        raise FileNotFoundError(f"CSV manifest not found: {csv_file}")
    text = decode_csv(csv_file.read_bytes(), csv_file)
    header, records = read_records(text, pick_delimiter(text))
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        found = ", ".join(repr(h) for h in header if h) or "none"
        raise ValueError(
            f"{csv_file.name}: the header lacks the required column(s) {', '.join(missing)} "
            f"(found: {found}); expected path,label[,group,split,mask]"
        )
    col = {name: header.index(name) for name in ("path", "label", "group", "split", "mask") if name in header}
    base = csv_file.parent
    wanted = [str(c) for c in classes] if classes is not None else None
    wanted_set = set(wanted) if wanted is not None else None

    report = ImportReport(source=str(csv_file))
    validator = _Validator(max_pixels)
    n = len(records)
    for i, (row, cells, error) in enumerate(records):
        state.check()
        state.progress(i, n, f"Checking row {row}")
        if cells is None:
            report.skipped.append(SkippedRow(row, "", "unreadable", f"CSV parse error: {error}"))
            continue
        if not any(c.strip() for c in cells):
            continue  # blank line: nothing to report

        def cell(name: str, cells: list[str] = cells) -> str:
            j = col.get(name)
            return cells[j].strip() if j is not None and j < len(cells) else ""

        try:
            skip = _csv_row(row, cell, base, wanted_set, validator, seed, test_fraction, report)
        except ImageLoadError as e:  # defensive: _csv_row maps these itself
            skip = (e.reason, e.detail)
        except Exception as e:
            log.warning("unexpected error on row %d of %s", row, csv_file, exc_info=True)
            skip = ("unreadable", f"unexpected error: {type(e).__name__}: {e}")
        if skip is not None:
            report.skipped.append(SkippedRow(row, cell("path"), skip[0], skip[1]))
    report.classes = wanted if wanted is not None else _sort_labels(s.label for s in report.samples)
    state.progress(n, n, f"Imported {len(report.samples)} images, skipped {len(report.skipped)}")
    log.info("CSV import from %s: %d images, %d skipped", csv_file, len(report.samples), len(report.skipped))
    return report


def _csv_row(
    row: int,
    cell: Callable[[str], str],
    base: Path,
    wanted: set[str] | None,
    validator: _Validator,
    seed: int,
    test_fraction: float,
    report: ImportReport,
) -> tuple[str, str] | None:
    """Validate one CSV row; append a sample or return (reason, detail)."""
    path_text, label = cell("path"), cell("label")
    if not path_text:
        return "empty_path", "the path cell is empty"
    if "\x00" in path_text:  # no file system allows it; os.stat would raise ValueError
        return "unreadable", "the path contains a NUL character"
    if not label:
        return "empty_label", "the label cell is empty"
    split_text = cell("split")
    split: str | None = None
    if split_text:
        split = _SPLIT_ALIASES.get(split_text.lower())
        if split is None:
            return "bad_split", f"split {split_text!r} is not one of train, test, val"
    if wanted is not None and label not in wanted:
        return "unknown_label", f"label {label!r} is not among the classes {sorted(wanted)}"

    image = _resolve_cell(path_text, base)
    resolved = str(image.resolve())
    try:
        h, w, sha = validator.new_image(resolved, label)
    except ImageLoadError as e:
        return e.reason, e.detail

    mask_path: str | None = None
    mask_text = cell("mask")
    if "\x00" in mask_text:
        return "mask_unreadable", "the mask path contains a NUL character"
    if mask_text:
        mask_file = _resolve_cell(mask_text, base)
        try:
            read_mask(mask_file, expected_size=(h, w), max_pixels=validator.max_pixels)
        except ImageLoadError as e:
            return _mask_reason(e), f"mask {mask_text}: {e.detail}"
        mask_path = str(mask_file.resolve())

    validator.seen[resolved] = (f"row {row}", label)
    if split is None:
        try:
            key = os.path.relpath(image, base) if not Path(path_text).is_absolute() else path_text
        except ValueError:  # different drive on Windows
            key = path_text
        split = assign_split(_split_key(key), seed, test_fraction)
    group = cell("group") or None
    report.samples.append(SampleRecord(resolved, label, split, group, mask_path, h, w, sha))
    return None
