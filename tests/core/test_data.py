import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lvlmva_desktop.core.data.importing import (
    REASONS,
    ImportReport,
    assign_split,
    import_class_folders,
    import_csv_manifest,
)
from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState


def _img(path, h=8, w=8, value=100, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w) if mode == "L" else (h, w, 3)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def _truncated(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _huge_header_png(path, side=8000):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def _write_csv(path, lines, encoding="utf-8"):
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


# -- CSV manifest -------------------------------------------------------------------------------------------
def test_manifest_full_of_bad_rows(tmp_path):
    d = tmp_path
    _img(d / "img" / "good1.png")
    _img(d / "img" / "good2.png", value=50)
    _img(d / "img" / "good3.png", value=20)
    _img(d / "masks" / "good1_mask.png", value=255)
    _img(d / "masks" / "small_mask.png", h=4, w=4, value=255)
    (d / "masks" / "bad_mask.png").write_bytes(b"not a png")
    (d / "img" / "zero.png").write_bytes(b"")
    (d / "img" / "garbage.png").write_bytes(b"garbage" * 30)
    _truncated(d / "img" / "trunc.png")
    _huge_header_png(d / "img" / "huge.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "img" / "anim.png", format="GIF")
    for name in ("m1", "m2", "m3", "m4", "m5", "m6"):
        _img(d / "img" / f"{name}.png")
    csv_path = _write_csv(
        d / "manifest.csv",
        [
            "path,label,group,split,mask",
            "img/good1.png,cat,patch,train,masks/good1_mask.png",  # 1 ok
            ",cat,,,",  # 2 empty_path
            "img/nope.png,cat,,,",  # 3 missing
            "img/zero.png,dog,,,",  # 4 unreadable
            "img/garbage.png,dog,,,",  # 5 unreadable
            "img/trunc.png,dog,,,",  # 6 truncated
            "img/huge.png,dog,,,",  # 7 too_large
            "img/anim.png,dog,,,",  # 8 unsupported
            "img/m1.png,bird,,,",  # 9 unknown_label
            "img/m2.png,,,,",  # 10 empty_label
            "img/m3.png,cat,,holdout,",  # 11 bad_split
            "img/m4.png,cat,,,masks/none.png",  # 12 mask_missing
            "img/m5.png,cat,,,masks/bad_mask.png",  # 13 mask_unreadable
            "img/m6.png,cat,,,masks/small_mask.png",  # 14 mask_size_mismatch
            "./img/good1.png,cat,,,",  # 15 duplicate
            "img/good2.png,dog,no_patch,TEST,",  # 16 ok
            "img/good3.png,dog,,Validation,",  # 17 ok
        ],
    )
    report = import_csv_manifest(csv_path, classes=["cat", "dog"])

    expected = {
        2: "empty_path",
        3: "missing",
        4: "unreadable",
        5: "unreadable",
        6: "truncated",
        7: "too_large",
        8: "unsupported",
        9: "unknown_label",
        10: "empty_label",
        11: "bad_split",
        12: "mask_missing",
        13: "mask_unreadable",
        14: "mask_size_mismatch",
        15: "duplicate",
    }
    assert {r.row: r.reason for r in report.skipped} == expected
    assert all(r.reason in REASONS and r.detail for r in report.skipped)
    assert next(r for r in report.skipped if r.row == 3).path == "img/nope.png"

    assert [s.label for s in report.samples] == ["cat", "dog", "dog"]
    good1, good2, good3 = report.samples
    assert good1.path == str((d / "img" / "good1.png").resolve())
    assert good1.mask_path == str((d / "masks" / "good1_mask.png").resolve())
    assert (good1.group, good1.split, good1.height, good1.width) == ("patch", "train", 8, 8)
    assert len(good1.sha256) == 64
    assert (good2.group, good2.split, good2.mask_path) == ("no_patch", "test", None)
    assert (good3.group, good3.split) == (None, "val")
    assert report.classes == ["cat", "dog"]

    counts = report.counts()
    assert counts["by_split"] == {"train": 1, "test": 1, "val": 1}
    assert counts["by_class"] == {"cat": 1, "dog": 2}
    assert counts["skipped_by_reason"]["unreadable"] == 2

    text = report.summary()
    assert text.startswith("Imported 3 images (2 classes) from ")
    assert "skipped 14 rows: 1 empty_path, 1 missing, 2 unreadable, 1 truncated" in text
    assert "row 3: img/nope.png - missing: file not found" in text
    assert len(text.splitlines()) == 1 + 14

    as_json = json.loads(json.dumps(report.to_dict()))
    assert ImportReport.from_dict(as_json) == report


def test_missing_required_columns_names_them(tmp_path):
    csv_path = _write_csv(tmp_path / "m.csv", ["file,class", "a.png,cat"])
    with pytest.raises(ValueError, match="path, label"):
        import_csv_manifest(csv_path)
    csv_path = _write_csv(tmp_path / "m2.csv", ["path,group", "a.png,x"])
    with pytest.raises(ValueError, match=r"column\(s\) label \(found: 'path', 'group'\)"):
        import_csv_manifest(csv_path)


def test_bom_quotes_absolute_paths_and_integer_labels(tmp_path):
    _img(tmp_path / "a, b.png")
    _img(tmp_path / "sub" / "c.png")
    _img(tmp_path / "d.png")
    abs_c = (tmp_path / "sub" / "c.png").resolve()
    csv_path = _write_csv(
        tmp_path / "m.csv",
        [" Path , LABEL ", '"a, b.png",10', f"{abs_c},9", "d.png,2"],
        encoding="utf-8-sig",
    )
    report = import_csv_manifest(csv_path)
    assert report.skipped == []
    assert report.classes == ["2", "9", "10"]  # numeric order, kept as strings
    assert {s.label for s in report.samples} == {"10", "9", "2"}
    assert {s.split for s in report.samples} <= {"train", "test"}


def test_semicolon_manifest(tmp_path):
    _img(tmp_path / "a.png")
    csv_path = _write_csv(tmp_path / "m.csv", ["path;label;split", "a.png;cat;train"])
    report = import_csv_manifest(csv_path)
    assert [(s.label, s.split) for s in report.samples] == [("cat", "train")]


def test_row_numbers_count_data_rows_only(tmp_path):
    _img(tmp_path / "a.png")
    csv_path = _write_csv(tmp_path / "m.csv", ["path,label", "a.png,x", "", "b.png,x"])
    report = import_csv_manifest(csv_path)
    assert [(r.row, r.reason) for r in report.skipped] == [(3, "missing")]


def test_deterministic_split_assignment(tmp_path):
    lines = ["path,label"]
    for i in range(60):
        _img(tmp_path / f"i{i}.png", h=2, w=2, value=i)
        lines.append(f"i{i}.png,{i % 2}")
    csv_path = _write_csv(tmp_path / "m.csv", lines)
    first = {s.path: s.split for s in import_csv_manifest(csv_path, test_fraction=0.3, seed=7).samples}
    again = {s.path: s.split for s in import_csv_manifest(csv_path, test_fraction=0.3, seed=7).samples}
    assert first == again
    n_test = sum(v == "test" for v in first.values())
    assert 5 <= n_test <= 35
    # Row order does not matter: the split comes from (seed, relative path) only.
    rev = _write_csv(tmp_path / "rev.csv", [lines[0], *reversed(lines[1:])])
    assert {s.path: s.split for s in import_csv_manifest(rev, test_fraction=0.3, seed=7).samples} == first
    other = {s.path: s.split for s in import_csv_manifest(csv_path, test_fraction=0.3, seed=8).samples}
    assert other != first
    assert set(import_csv_manifest(csv_path, test_fraction=0.0).counts()["by_split"]) == {"train"}
    assert set(import_csv_manifest(csv_path, test_fraction=1.0).counts()["by_split"]) == {"test"}
    # Pinned values: a change here would silently reshuffle every user's test set.
    assert [assign_split(f"x{i}.png", 0, 0.5) for i in range(8)] == [
        "test",
        "test",
        "train",
        "train",
        "train",
        "test",
        "test",
        "train",
    ]
    assert [assign_split(f"x{i}.png", 1, 0.5) for i in range(8)] == [
        "test",
        "train",
        "test",
        "train",
        "train",
        "train",
        "test",
        "test",
    ]


def test_progress_and_cancel(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    csv_path = _write_csv(tmp_path / "m.csv", ["path,label", "a.png,x", "b.png,x"])
    seen = []
    import_csv_manifest(csv_path, state=TaskState(on_progress=lambda f, m: seen.append(f)))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) == 3
    state = TaskState()
    state.cancel()
    with pytest.raises(Cancelled):
        import_csv_manifest(csv_path, state=state)


# -- class folders ------------------------------------------------------------------------------------------
def test_folder_import_flat(tmp_path):
    root = tmp_path / "data"
    _img(root / "dog" / "d1.png")
    _img(root / "dog" / "nested" / "d2.JPG", mode="RGB")
    _img(root / "cat" / "c1.bmp")
    _truncated(root / "cat" / "c2.png")
    (root / "cat" / "notes.txt").write_text("hello")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0")
    _img(root / ".hidden" / "h.png")
    report = import_class_folders(root, test_fraction=0.5, seed=3)
    assert report.classes == ["cat", "dog"]
    assert sorted(s.label for s in report.samples) == ["cat", "dog", "dog"]
    assert all(s.group is None and s.mask_path is None for s in report.samples)
    assert {s.split for s in report.samples} <= {"train", "test"}
    assert sorted((r.row, r.path, r.reason) for r in report.skipped) == [
        (None, "cat/c2.png", "truncated"),
        (None, "cat/notes.txt", "unsupported"),
    ]
    again = import_class_folders(root, test_fraction=0.5, seed=3)
    assert [s.split for s in again.samples] == [s.split for s in report.samples]
    assert "cat/c2.png - truncated" in report.summary()


def test_folder_import_split_argument_and_classes(tmp_path):
    root = tmp_path / "data"
    _img(root / "0" / "a.png")
    _img(root / "1" / "b.png")
    _img(root / "2" / "c.png")
    report = import_class_folders(root, split="test", classes=["1", "0"])
    assert report.classes == ["1", "0"]
    assert {(s.label, s.split) for s in report.samples} == {("0", "test"), ("1", "test")}
    assert [(r.path, r.reason) for r in report.skipped] == [("2/c.png", "unknown_label")]


def test_folder_import_train_test_layout(tmp_path):
    root = tmp_path / "data"
    _img(root / "train" / "cat" / "a.png")
    _img(root / "train" / "dog" / "b.png")
    _img(root / "Test" / "cat" / "c.png")
    report = import_class_folders(root)
    assert report.classes == ["cat", "dog"]
    got = {(s.label, s.split, s.path.rsplit("/", 1)[-1]) for s in report.samples}
    assert got == {("cat", "train", "a.png"), ("dog", "train", "b.png"), ("cat", "test", "c.png")}
    only_test = import_class_folders(root, split="test")
    assert [(s.label, s.split) for s in only_test.samples] == [("cat", "test")]


def test_folder_import_missing_root(tmp_path):
    with pytest.raises(ValueError):
        import_class_folders(tmp_path / "nope")
