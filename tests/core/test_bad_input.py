"""Bad input, generated (hypothesis): the manifest parser, the image loader and the project database.

What must hold, whatever the input:
- the CSV manifest parser raises only its documented errors (ValueError for a header without path/label);
  otherwise every non-blank row is either imported or reported with a reason from REASONS, and the good rows
  are all kept, in order;
- the image loader raises only ImageLoadError with a reason from LOAD_REASONS, never returns invented
  pixels for a truncated file, and refuses decompression bombs from their header, before allocating;
- a damaged project.sqlite is a ProjectError on open (or, where SQLite cannot tell, a database that opens
  and reads), never a crash.
The numbers of examples per test are in docs/reliability.md (run with --hypothesis-show-statistics).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from lvlmva_desktop.core.data.images import (
    LOAD_REASONS,
    SUPPORTED_SUFFIXES,
    ImageLoadError,
    check_image,
    image_size,
    read_image,
    read_mask,
)
from lvlmva_desktop.core.data.importing import REASONS, import_csv_manifest
from lvlmva_desktop.core.runtime.errors import describe_error
from lvlmva_desktop.core.store.project import Project, ProjectError

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _quiet_decoders():
    """Pillow warns about corrupt EXIF and truncated reads on its way to raising; the raise is what counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, colour: int = 2) -> bytes:
    """A valid PNG signature and header claiming width x height, with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _encoded(fmt: str, a: np.ndarray, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, fmt, **kw)
    return b.getvalue()


def _real_files() -> dict[str, bytes]:
    """Small real files of every supported kind (8/16-bit, gray/RGB/palette, compressed or not)."""
    rng = np.random.default_rng(0)
    rgb = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    gray16 = (rng.random((20, 24)) * 65535).astype(np.uint16)
    out = {
        "png": _encoded("PNG", rgb),
        "png16": _encoded("PNG", gray16),
        "png_palette": _encoded("PNG", rgb[..., 0] // 32, bits=4),
        "jpeg": _encoded("JPEG", rgb, quality=90),
        "bmp": _encoded("BMP", rgb),
        "tiff_lzw": _encoded("TIFF", rgb, compression="tiff_lzw"),
    }
    for name, arr in (("tiff", rgb), ("tiff16", gray16)):
        b = io.BytesIO()
        tifffile.imwrite(b, arr, rowsperstrip=4)
        out[name] = b.getvalue()
    return out


REAL = _real_files()
SUFFIX = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif"}


def _suffix(kind: str) -> str:
    return next(s for k, s in SUFFIX.items() if kind.startswith(k))


def _check_only_image_load_error(path: Path) -> None:
    """Every public reader either returns a well-formed result or raises ImageLoadError with a reason."""
    for reader in (read_image, read_mask, check_image, image_size):
        try:
            out = reader(path)
        except ImageLoadError as e:
            assert e.reason in LOAD_REASONS and str(e).strip(), (reader.__name__, e.reason, str(e))
            continue
        if reader is read_image:
            assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] in (1, 3)
            assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        elif reader is read_mask:
            assert out.dtype == bool and out.ndim == 2
        else:
            assert all(isinstance(v, int) and v > 0 for v in out)


# -- the image loader ------------------------------------------------------------------------------------
@settings(max_examples=300, **FAST)
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(sorted(SUPPORTED_SUFFIXES) + [".txt", ""]))
def test_arbitrary_bytes_raise_only_image_load_error(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    _check_only_image_load_error(path)


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00"]


@settings(max_examples=300, **FAST)
@given(magic=st.sampled_from(MAGIC), tail=st.binary(max_size=2048))
def test_a_real_signature_followed_by_garbage_raises_only_image_load_error(tmp_path, magic, tail):
    """The signature sends the bytes past format detection into each decoder's header parser."""
    path = tmp_path / "x.png"
    path.write_bytes(magic + tail)
    _check_only_image_load_error(path)


@settings(max_examples=400, **FAST)
@given(kind=st.sampled_from(sorted(REAL)), frac=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_are_refused_or_decode_to_the_full_image(tmp_path, kind, frac):
    """A cut anywhere raises ImageLoadError (truncated or unreadable); only a cut inside the trailer after
    the last pixel may decode, and then it gives exactly the full file's pixels: never invented grey."""
    data = REAL[kind]
    cut = int(frac * len(data))
    full, part = tmp_path / f"full{_suffix(kind)}", tmp_path / f"cut{_suffix(kind)}"
    full.write_bytes(data)
    part.write_bytes(data[:cut])
    try:
        got = read_image(part)
    except ImageLoadError as e:
        assert e.reason in ("truncated", "unreadable") and str(e)
        return
    assert np.array_equal(got, read_image(full)), f"{kind} cut at {cut}/{len(data)} decoded to other pixels"


@pytest.mark.slow
def test_every_cut_point_of_real_files(tmp_path):
    """The exhaustive version of the property above for six of the files (about 9,000 cuts)."""
    outcomes: dict[str, int] = {}
    for kind in ("png", "png16", "jpeg", "bmp", "tiff", "tiff_lzw"):
        data = REAL[kind]
        full, part = tmp_path / f"full{_suffix(kind)}", tmp_path / f"cut{_suffix(kind)}"
        full.write_bytes(data)
        ref = read_image(full)
        for cut in range(len(data)):
            part.write_bytes(data[:cut])
            try:
                got = read_image(part)
            except ImageLoadError as e:
                outcomes[e.reason] = outcomes.get(e.reason, 0) + 1
                continue
            assert np.array_equal(got, ref), f"{kind} cut at {cut} decoded to other pixels"
            outcomes["full image"] = outcomes.get("full image", 0) + 1
    assert set(outcomes) <= {"truncated", "unreadable", "full image"}
    assert outcomes.get("full image", 0) <= 2 * 12  # only inside the two PNGs' 12-byte IEND chunk


@settings(max_examples=300, **FAST)
@given(
    kind=st.sampled_from(sorted(REAL)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8),
)
def test_corrupted_bytes_raise_only_image_load_error(tmp_path, kind, flips):
    data = bytearray(REAL[kind])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    path = tmp_path / f"x{_suffix(kind)}"
    path.write_bytes(bytes(data))
    _check_only_image_load_error(path)


@pytest.mark.parametrize(
    "content, name, outcome",
    [
        ("png", "png_named.jpg", "same"),
        ("jpeg", "jpeg_named.png", "same"),
        ("tiff", "tiff_named.bmp", "same"),
        ("bmp", "bmp_named.tif", "same"),
        (b"just some text\n", "text.png", "unreadable"),
        (b"%PDF-1.4 not an image", "doc.jpg", "unreadable"),
        (b"", "empty.png", "unreadable"),
        (b"", "empty.tif", "unreadable"),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00"
         b"\x00\x02\x02D\x01\x00;", "anim.png", "unsupported"),
    ],
)  # fmt: skip
def test_wrong_extensions_and_empty_files(tmp_path, content, name, outcome):
    path = tmp_path / name
    path.write_bytes(REAL[content] if isinstance(content, str) else content)
    if outcome == "same":  # the content decides, not the name
        ref = tmp_path / f"ref{_suffix(content)}"
        ref.write_bytes(REAL[content])
        assert np.array_equal(read_image(path), read_image(ref))
        return
    with pytest.raises(ImageLoadError) as err:
        read_image(path)
    assert err.value.reason == outcome
    if not content:
        assert "empty (0 bytes)" in str(err.value)


def _patched_jpeg(width: int, height: int) -> bytes:
    data = bytearray(REAL["jpeg"])
    sof = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _patched_bmp(width: int, height: int) -> bytes:
    data = bytearray(REAL["bmp"])
    data[18:26] = struct.pack("<ii", width, height)  # BITMAPINFOHEADER biWidth, biHeight
    return bytes(data)


def _patched_tiff(width: int, height: int) -> bytes:
    data = bytearray(REAL["tiff"])
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tf:
        tags = tf.pages[0].tags
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = tags[name]
            fmt = "<H" if tag.dtype == 3 else "<I"  # SHORT or LONG, little-endian file
            data[tag.valueoffset : tag.valueoffset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


BOMBS = {
    "png_100000x100000": (lambda: png_header_only(100_000, 100_000), ".png"),
    "png_8000x8000": (lambda: png_header_only(8000, 8000), ".png"),  # under Pillow's limit, over ours
    "jpeg_65000x65000": (lambda: _patched_jpeg(65_000, 65_000), ".jpg"),
    "bmp_100000x100000": (lambda: _patched_bmp(100_000, 100_000), ".bmp"),
    "tiff_65535x65535": (lambda: _patched_tiff(65_535, 65_535), ".tif"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bombs_are_refused_from_the_header(tmp_path, name):
    make, suffix = BOMBS[name]
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(make())
    for reader in (read_image, read_mask, check_image):
        with pytest.raises(ImageLoadError) as err:
            reader(path)
        assert err.value.reason == "too_large", (reader.__name__, err.value.reason, str(err.value))
        assert "pixels" in str(err.value) or "too large" in str(err.value)


def test_a_real_zlib_bomb_is_refused_without_allocating_its_pixels(tmp_path):
    """A 12000 x 12000 RGB PNG of zeros: 160 KB on disk, 432 MB decoded. In a fresh process the peak
    memory must not grow by anything near that while it is refused (and the data import lists it)."""
    w = h = 12_000
    comp, parts = zlib.compressobj(9), []
    row = b"\0" + b"\0" * (3 * w)
    for _ in range(h):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    path = tmp_path / "zeros.png"
    path.write_bytes(png)
    assert path.stat().st_size < 1_000_000
    code = (
        "import resource, sys, json\n"
        "from lvlmva_desktop.core.data.images import read_image, ImageLoadError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_image(sys.argv[1]); out = 'decoded'\n"
        "except ImageLoadError as e:\n"
        "    out = e.reason + ': ' + str(e)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps([out, (after - before) // 1024]))\n"  # ru_maxrss is in KiB on Linux
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    out, grew_mib = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == "too_large: image has 144,000,000 pixels, more than the limit of 50,000,000", out
    assert grew_mib < 50, f"peak memory grew by {grew_mib} MiB while refusing the bomb"


# -- the CSV manifest --------------------------------------------------------------------------------
IMAGE_KINDS = {  # file written in the pool -> expected skip reason (None = a good image)
    "good0": None,
    "good1": None,
    "good2": None,
    "jpg": None,
    "bmp": None,
    "tif": None,
    "png_as_jpg": None,
    "truncated": "truncated",
    "text": "unreadable",
    "empty": "unreadable",
    "bomb": "too_large",
    "folder": "unreadable",
    "missing": "missing",
    "nul": "unreadable",
    "": "empty_path",
}
MASK_KINDS = {"": None, "ok": None, "wrong_size": "mask_size_mismatch", "text": "mask_unreadable",
              "missing": "mask_missing"}  # fmt: skip
LABELS = ["benign", "malignant", "café", "naïve", "with, comma", 'with "quotes"', "two\nlines", ""]
SPLITS = {"": None, "train": "train", "TEST": "test", "val": "val", "Validation": "val", "bogus": "bad"}


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """The files a generated manifest points at: good images in several formats and every kind of bad."""
    d = tmp_path_factory.mktemp("pool")
    for i in range(3):
        Image.fromarray(np.full((6, 7, 3), 40 * i + 10, np.uint8)).save(d / f"good{i}.png")
    rgb = (np.random.default_rng(1).random((6, 7, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(d / "jpg.jpg", quality=95)
    Image.fromarray(rgb).save(d / "bmp.bmp")
    tifffile.imwrite(d / "tif.tif", rgb)
    (d / "png_as_jpg.jpg").write_bytes(_encoded("PNG", rgb[::-1].copy()))
    full = _encoded("PNG", rgb)
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    (d / "text.png").write_text("not an image")
    (d / "empty.png").write_bytes(b"")
    (d / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (d / "folder.png").mkdir()
    Image.fromarray(np.eye(7, dtype=np.uint8)[:6] * 255).save(d / "mask_ok.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(d / "mask_wrong_size.png")
    (d / "mask_text.png").write_text("not a mask")
    return d


def _image_cell(kind: str, spelling: int, pool: Path) -> str:
    names = {"jpg": "jpg.jpg", "bmp": "bmp.bmp", "tif": "tif.tif", "png_as_jpg": "png_as_jpg.jpg",
             "missing": "missing.png", "nul": "good0\x00.png", "": ""}  # fmt: skip
    name = names.get(kind, f"{kind}.png")
    if not name:
        return ""
    return [name, f"./{name}", str(pool / name), f"sub/../{name}"][spelling]  # all resolve to one file


GOOD_IMAGES = sorted(k for k, v in IMAGE_KINDS.items() if v is None)
row_strategy = st.fixed_dictionaries(  # each cell: a usable value half of the time, anything otherwise
    {
        "image": st.one_of(st.sampled_from(GOOD_IMAGES), st.sampled_from(sorted(IMAGE_KINDS))),
        "spelling": st.integers(0, 3),
        "label": st.one_of(st.sampled_from(LABELS[:3]), st.sampled_from(LABELS)),
        "split": st.one_of(st.just(""), st.sampled_from(sorted(SPLITS))),
        # anything but line breaks (a writer leaves those unquoted unless they end its lines), NUL included
        "group": st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
        ),
        "mask": st.one_of(st.sampled_from(["", "ok"]), st.sampled_from(sorted(MASK_KINDS))),
        "pad": st.booleans(),
        "extra": st.one_of(st.just(""), st.sampled_from(["", "note", "huge"])),
    }
)


def _expected(rows: list[dict], classes: list[str] | None) -> tuple[list[tuple[int, str]], list[int]]:
    """(skipped (row, reason) in order, imported row numbers in order), by the checks in _csv_row's order:
    blank row, CSV field too large, path, label, split, class list, duplicate of an imported file, image,
    mask."""
    skipped, kept, seen = [], [], set()
    for n, r in enumerate(rows, 1):
        cells = [r["image"], r["label"], r["split"], r["group"], r["mask"], r["extra"]]
        if not any(c.strip() for c in cells):
            continue  # a blank line is not a row to report
        reason = (
            "unreadable" if r["extra"] == "huge"  # the csv module refuses fields over 128 KiB
            else "empty_path" if r["image"] == ""
            else "unreadable" if r["image"] == "nul"  # checked with the path, before the other cells
            else "empty_label" if not r["label"].strip()
            else "bad_split" if SPLITS[r["split"]] == "bad"
            else "unknown_label" if classes is not None and r["label"].strip() not in classes
            else "duplicate" if r["image"] in seen
            else IMAGE_KINDS[r["image"]] or MASK_KINDS[r["mask"]]
        )  # fmt: skip
        if reason is None:
            kept.append(n)
            seen.add(r["image"])
        else:
            skipped.append((n, reason))
    return skipped, kept


@settings(max_examples=300, **FAST)
@given(
    rows=st.lists(row_strategy, max_size=12),
    delimiter=st.sampled_from([",", ";", "\t"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    newline=st.sampled_from(["\r\n", "\n", "\r"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
    order=st.permutations(["path", "label", "split", "group", "mask", "extra"]),
    header_case=st.sampled_from([str.lower, str.upper, lambda h: f" {h.title()} "]),
    with_classes=st.booleans(),
)
def test_manifest_rows_are_kept_or_reported_with_their_reason(
    pool, rows, delimiter, quoting, newline, encoding, order, header_case, with_classes
):
    if newline == "\r":  # a bare CR ends a record only outside quotes; LABELS' "two\nlines" needs quoting
        assume(quoting == csv.QUOTE_ALL)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator=newline)
    w.writerow([header_case(h) for h in order])
    for r in rows:
        pad = "  " if r["pad"] else ""
        cell = {
            "path": pad + _image_cell(r["image"], r["spelling"], pool) + pad,
            "label": pad + r["label"] + pad,
            "split": r["split"],
            "group": r["group"],
            "mask": f"mask_{r['mask']}.png" if r["mask"] else "",
            "extra": {"": "", "note": "a note", "huge": "x" * 200_000}[r["extra"]],
        }
        w.writerow([cell[h] for h in order])
    text = buf.getvalue()
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:  # a lone surrogate no UTF encodes
        raw, encoding = text.encode("utf-8", "surrogatepass"), "utf-8"
    manifest = pool / "manifest.csv"
    manifest.write_bytes(raw)
    classes = ["benign", "malignant", "café"] if with_classes else None

    report = import_csv_manifest(manifest, classes=classes)

    want_skipped, want_kept = _expected(rows, classes)
    got_skipped = [(s.row, s.reason) for s in report.skipped]
    assert got_skipped == want_skipped
    assert all(s.reason in REASONS and s.detail.strip() for s in report.skipped)
    assert len(report.samples) == len(want_kept)  # every good row kept, in order
    for n, s in zip(want_kept, report.samples):
        r = rows[n - 1]
        want_name = _image_cell(r["image"], 0, pool)
        assert Path(s.path) == (pool / want_name).resolve() and s.label == r["label"].strip()
        assert s.split == (SPLITS[r["split"]] or s.split) and s.split in ("train", "test", "val")
        assert (s.mask_path is not None) == (r["mask"] == "ok")
        assert s.group == (r["group"].strip() or None)
        assert (s.height, s.width) == (6, 7) and len(s.sha256) == 64
    json.dumps(report.to_dict())
    assert report.summary().startswith(f"Imported {len(want_kept)} image")
    event(f"rows kept: {'none' if not want_kept else 'some'}")
    for reason in {r for _, r in want_skipped}:
        event(f"reason seen: {reason}")


@settings(max_examples=300, **FAST)
@given(body=st.binary(max_size=3000), header=st.sampled_from([b"path,label\n", b"path;label;mask\r\n", b""]))
def test_arbitrary_manifest_bytes_raise_only_the_documented_error(pool, body, header):
    manifest = pool / "bytes.csv"
    manifest.write_bytes(header + body)
    try:
        report = import_csv_manifest(manifest)
    except ValueError as e:  # the documented errors: not UTF-8 text, or no path/label header
        assert "required column" in str(e) or "CSV header" in str(e) or "is not UTF-8 text: line" in str(e)
        return
    assert all(s.reason in REASONS and s.detail.strip() for s in report.skipped)
    rows = [s.row for s in report.skipped]
    assert rows == sorted(set(rows))  # one report per row, in order
    json.dumps(report.to_dict())
    report.summary()


@settings(max_examples=200, **FAST)
@given(
    lines=st.lists(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='"\r\n'), max_size=40),
        max_size=15,
    )
)
def test_every_non_blank_unquoted_line_is_accounted_for(pool, lines):
    """Lines without quotes or line breaks are one record each: each non-blank one is imported or reported."""
    manifest = pool / "lines.csv"
    manifest.write_text("path,label\n" + "".join(line + "\n" for line in lines), encoding="utf-8")
    report = import_csv_manifest(manifest)
    non_blank = [n for n, line in enumerate(lines, 1) if any(c.strip() for c in line.split(","))]
    assert {s.row for s in report.skipped} <= set(non_blank)
    assert len(report.skipped) + len(report.samples) == len(non_blank)


def test_a_manifest_without_the_required_columns_names_them(pool):
    for header in (
        b"file,class\n",
        b"path|label\nx.png|a\n",
        "\ufeffimage;label\n".encode(),
    ):
        manifest = pool / "bad_header.csv"
        manifest.write_bytes(header)
        with pytest.raises(ValueError, match="required column"):
            import_csv_manifest(manifest)
    (pool / "utf16.csv").write_bytes("path,label\ngood0.png,a\n".encode("utf-16"))  # named by its BOM
    assert len(import_csv_manifest(pool / "utf16.csv").samples) == 1


# -- the project database ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sound_project(tmp_path_factory, pool) -> Path:
    """A closed project with samples, descriptions and runs: about 40 database pages."""
    root = tmp_path_factory.mktemp("db") / "p"
    lines = ["path,label"] + [f"good{i % 3}.png,{'ab'[i % 2]}" for i in range(3)]
    (pool / "p.csv").write_text("\n".join(lines) + "\n")
    rep = import_csv_manifest(pool / "p.csv")
    with Project.create(root, "t", rep.classes, (6, 7), 3) as p:
        p.add_samples(rep)
        p.set_class_descriptions({c: f"the {c} class" for c in rep.classes})
        for k in range(40):
            with p.run("note", {"k": k, "text": "lorem ipsum " * 20}) as run:
                run.results = {"k": k}
    for suffix in ("-wal", "-shm"):
        assert not (root / f"project.sqlite{suffix}").exists()
    return root


damage = st.one_of(
    st.tuples(st.just("random_file"), st.binary(max_size=8192)),
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0, exclude_max=True)),
    st.tuples(st.just("overwrite"), st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=512))),
    st.tuples(st.just("zero_page"), st.integers(0, 60)),
)  # fmt: skip


@settings(max_examples=150, **FAST)
@given(how=damage)
def test_a_damaged_database_is_a_project_error_on_open_never_a_crash(sound_project, tmp_path_factory, how):
    root = tmp_path_factory.mktemp("damaged") / "p"
    shutil.copytree(sound_project, root)
    db = root / "project.sqlite"
    data = bytearray(db.read_bytes())
    kind, arg = how
    if kind == "random_file":
        data = bytearray(arg)
    elif kind == "truncate":
        data = data[: int(arg * len(data))]
    elif kind == "overwrite":
        where, junk = arg
        off = int(where * len(data))
        data[off : off + len(junk)] = junk[: len(data) - off]
    else:  # a whole 4 KiB page of zeros, as a failing disk or a crashed copy leaves it
        page = 4096 * (arg % max(1, len(data) // 4096))
        data[page : page + 4096] = bytes(min(4096, len(data) - page))
    db.write_bytes(bytes(data))
    try:
        p = Project.open(root)
    except ProjectError as e:
        event(f"{kind}: ProjectError on open")
        assert str(db) in str(e)
        assert "damaged or not a database" in str(e) or (not data and "is empty (0 bytes)" in str(e))
        told = describe_error(e, "Opening the project")
        assert told.kind == "project" and "Traceback" not in told.message
        return
    # SQLite found the structure sound: what it holds can be read, or the damage is told in words
    try:
        with p:
            p.samples()
            p.data_hash()
            p.class_descriptions()
            p.db.execute("SELECT * FROM runs").fetchall()
        event(f"{kind}: opened and read (damage inside values, or none that matters)")
    except sqlite3.DatabaseError as e:  # e.g. text that is no longer UTF-8: SQLite has no checksums
        event(f"{kind}: opened, a read told the damage")
        told = describe_error(e, "Reading the project")
        assert told.kind == "project" and "damaged" in told.message


@pytest.mark.parametrize("how", ["empty", "missing"])
def test_an_emptied_or_missing_database_is_refused_not_recreated(sound_project, tmp_path, how):
    """SQLite would make a new, empty database there: the project would look intact and hold nothing."""
    root = tmp_path / "p"
    shutil.copytree(sound_project, root)
    if how == "empty":
        (root / "project.sqlite").write_bytes(b"")
    else:
        (root / "project.sqlite").unlink()
    with pytest.raises(ProjectError, match="empty \\(0 bytes\\)" if how == "empty" else "is missing"):
        Project.open(root)
    with pytest.raises(ProjectError):
        Project.open(root, read_only=True)
    assert not (root / "project.sqlite").exists() or (root / "project.sqlite").stat().st_size == 0


def test_damaged_database_through_the_command_line_is_one_error_line(sound_project, tmp_path, capsys):
    from lvlmva_desktop.cli import main

    root = tmp_path / "p"
    shutil.copytree(sound_project, root)
    data = bytearray((root / "project.sqlite").read_bytes())
    (root / "project.sqlite").write_bytes(bytes(data[: len(data) // 2]))
    assert main(["status", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: The project database") and "damaged" in err and len(err.splitlines()) == 1
    (root / "project.sqlite").write_bytes(os.urandom(4096))
    assert main(["status", str(root)]) == 2
    assert "is damaged or not a database" in capsys.readouterr().err


def test_manifest_encodings_utf8_and_utf16_by_bom_are_read_anything_else_refused_with_line_and_byte(pool):
    """A manifest in another encoding would turn labels into other labels and paths into missing files
    without a word: UTF-8 (with or without a BOM) and UTF-16 named by its BOM are read, anything else is
    refused, naming the line and the byte, before anything is imported."""
    good = "path,label\ngood0.png,café\n"
    for encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-32"):
        manifest = pool / "enc.csv"
        manifest.write_bytes(good.encode(encoding))
        report = import_csv_manifest(manifest)
        assert report.classes == ["café"] and len(report.samples) == 1, encoding
    cases = {
        "cp1252": (good.encode("cp1252"), "line 2, byte 14 (0xE9)"),
        "shift-jis": ("path,label\ngood0.png,\u826f\u6027\n".encode("shift_jis"), "line 2, byte 11 (0x97)"),
        "one stray byte in UTF-8": (
            good.encode("utf-8").replace("é".encode(), b"\xe9"),
            "line 2, byte 14 (0xE9)",
        ),
        "binary": (b"\x00\xff\xfe", "line 1, byte 2 (0xFF)"),
    }
    for name, (raw, where) in cases.items():
        manifest = pool / "enc.csv"
        manifest.write_bytes(raw)
        with pytest.raises(ValueError) as e:
            import_csv_manifest(manifest)
        assert f"enc.csv is not UTF-8 text: {where}" in str(e.value), (name, str(e.value))
        assert "nothing was imported" in str(e.value)


def test_classes_that_differ_only_invisibly_or_in_case_are_warned_about(pool):
    rows = [
        "path,label",
        "good0.png,benign",
        "good1.png,benign\u200b",
        "good2.png,Benign ",
        "jpg.jpg,malignant",
    ]
    manifest = pool / "alike.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = import_csv_manifest(manifest)
    assert len(report.samples) == 4
    assert [sorted(g) for g in report.look_alike_classes()] == [sorted(["Benign", "benign", "benign\u200b"])]
    (warning,) = report.warnings()
    assert "differ only in letter case, spacing or invisible characters" in warning
    assert "warning: The classes" in report.summary() and report.to_dict()["warnings"] == [warning]


def test_a_table_definition_that_is_no_longer_text_is_refused_on_open(sound_project, tmp_path):
    """One damaged byte inside a column name of the stored table definitions: SQLite's structural check
    passes, and every later query naming the column failed with a UnicodeDecodeError (found by the
    hypothesis test above). It is a ProjectError on open, in words."""
    root = tmp_path / "p"
    shutil.copytree(sound_project, root)
    db = root / "project.sqlite"
    data = bytearray(db.read_bytes())
    at = data.find(b"CREATE TABLE samples")
    assert at > 0
    col = data.find(b"label", at)  # a column name inside the definition
    data[col] = 0x80
    db.write_bytes(bytes(data))
    with pytest.raises(ProjectError) as e:
        Project.open(root)
    assert "damaged or not a database" in str(e.value) and "not text" in str(e.value)
