"""No patient identifier from a DICOM file is kept anywhere: DICOM images imported with the command line,
the whole pipeline run on them and the audit report written, then every file of the project and of the
report, the printed output and the log (DEBUG) are searched for the files' PatientName, PatientID,
PatientBirthDate, InstitutionName and StudyDate. Only the file path and the columns the user gave are kept.

The images are pydicom's own test files (by path), copied as they are, and copies of CT_small/MR_small with
a few changed pixels and made-up identifiers (long and distinctive, so a hit cannot be chance)."""

from __future__ import annotations

import logging
import re
import shutil
import warnings
import zlib
from pathlib import Path

import pydicom
from pydicom.pixels import get_decoder

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.store.project import Project

FILES = Path(pydicom.__file__).parent / "data" / "test_files"
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "StudyDate")
FAST = ["--set", "train.epochs=1", "--set", "align.epochs=1", "--set", "sampling.n=6"]
FAST += ["--set", "evaluate.n_attribution_images=4", "--set", "evaluate.min_group_size=1"]


def _identifiers(path: Path) -> set[str]:
    """The identifying values of one file, and the forms they could be shown in (a name without its '^'
    separators, its components; a date as YYYY-MM-DD)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values = {str(ds.get(k, "")).strip() for k in PHI_KEYWORDS} - {""}
    out = set(values)
    for v in values:
        parts = [p for p in re.split(r"[\^=]", v) if len(p) >= 4]
        out.update(parts)
        out.add(" ".join(p for p in v.split("^") if p))
        if re.fullmatch(r"\d{8}", v):
            out.add(f"{v[:4]}-{v[4:6]}-{v[6:]}")
    return {v for v in out if v}


def _variant(src: str, dest: Path, k: int) -> None:
    """A copy with a few pixels changed (another image, another sha256) and made-up identifiers."""
    ds = pydicom.dcmread(FILES / src)
    arr = ds.pixel_array.copy()
    arr[k % arr.shape[0], :] = arr.max() if k % 2 else arr.min()
    ds.PixelData = arr.tobytes()
    ds.PatientName = f"Zzyzxova^Quentina{k:02d}"
    ds.PatientID = f"PHI-ID-8392{k:02d}"
    ds.PatientBirthDate = f"1937{k % 12 + 1:02d}{k % 28 + 1:02d}"
    ds.InstitutionName = f"Saint Elsewhere Radiology {k:02d}"
    ds.StudyDate = f"1999{k % 12 + 1:02d}{k % 17 + 10:02d}"
    ds.save_as(dest)


def _pdf_text(data: bytes) -> bytes:
    """The PDF's bytes with its compressed streams inflated."""
    out = [data]
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            out.append(zlib.decompress(m.group(1)))
        except zlib.error:
            pass
    return b"\n".join(out)


def test_no_patient_identifier_is_kept_anywhere(tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    data, proj, out = tmp_path / "data", tmp_path / "proj", tmp_path / "audit"
    (data / "ct").mkdir(parents=True)
    (data / "mr").mkdir()
    originals = {"ct": ["CT_small.dcm", "examples_rgb_color.dcm"], "mr": ["MR_small.dcm", "MR_small_RLE.dcm"]}
    if get_decoder(pydicom.uid.JPEG2000).is_available:
        originals["ct"].append("JPEG2000.dcm")
    for label, names in originals.items():
        for i, name in enumerate(names):
            shutil.copy(FILES / name, data / label / f"orig{i}.dcm")
    for k in range(9):
        _variant("CT_small.dcm", data / "ct" / f"v{k:02d}.dcm", k)
        _variant("MR_small.dcm", data / "mr" / f"v{k:02d}.dcm", k)
    _variant("MR_small.dcm", data / "mr" / "1.2.826.0.1.3680043.2.1125.77", 42)  # a name without suffix
    n_files = sum(1 for _ in data.rglob("*") if _.is_file())
    secrets = set().union(*(_identifiers(p) for p in data.rglob("*") if p.is_file()))
    assert "Zzyzxova^Quentina03" in secrets and "JFK IMAGING CENTER" in secrets and "1CT1" in secrets
    assert min(len(s) for s in secrets) >= 4  # shorter values could occur in binary files by chance

    report_json = tmp_path / "import-report.json"
    assert main(["import", str(proj), "--folder", str(data), "--image-size", "32", "--channels", "1",
                 "--quiet", "--report", str(report_json)]) == 0  # fmt: skip
    with Project.open(proj, read_only=True) as p:
        assert len(p.samples()) == n_files  # every DICOM file imported, none skipped
    assert main(["run", str(proj), "--quiet", "--device", "cpu", "--critic", "simulated", *FAST]) == 0
    assert main(["report", str(proj), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr()

    page = (out / "report.html").read_text(encoding="utf-8")
    assert "data:image" in page  # the report shows images (made from the DICOM pixels)
    haystacks: dict[str, bytes] = {
        "stdout": printed.out.encode(),
        "stderr": printed.err.encode(),
        "log": caplog.text.encode(),
    }
    written = [*proj.rglob("*"), *out.rglob("*"), report_json]
    for f in written:
        if f.is_file():
            raw = f.read_bytes()
            haystacks[str(f)] = _pdf_text(raw) if f.suffix == ".pdf" else raw
    assert any(name.endswith("project.sqlite") for name in haystacks) and len(haystacks) > 8
    leaks = [
        (where, s)
        for where, blob in haystacks.items()
        for s in secrets
        if s.encode() in blob or s.encode("utf-16-le") in blob
    ]
    assert not leaks, leaks
    # what is kept: the file path and the class folder's name
    assert str(data / "ct" / "v03.dcm").encode() in (proj / "project.sqlite").read_bytes()


def test_thumbnails_of_dicom_go_through_the_core_reader(tmp_path):
    from lvlmva_desktop.gui.thumbnails import _load_with_core

    img = _load_with_core(str(FILES / "CT_small.dcm"))
    assert not img.isNull() and (img.width(), img.height()) == (128, 128)
    img = _load_with_core(str(FILES / "SC_rgb_rle_2frame.dcm"))  # refused: a null image, no exception
    assert img.isNull()
