"""DICOM images (core/data/dicom.py through core/data/images.py): pixel values as pydicom's own modality LUT and VOI
LUT/window give them, MONOCHROME1, colour, transfer syntaxes, multi-frame files, damaged files, import.

The files are the ones shipped inside the pydicom package, used by path (pydicom's get_testdata_file may
try the network)."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

from lvlmva_desktop.core.data import dicom
from lvlmva_desktop.core.data.images import (
    LOAD_REASONS,
    SUPPORTED_SUFFIXES,
    ImageLoadError,
    check_image,
    image_size,
    is_dicom_file,
    read_image,
)
from lvlmva_desktop.core.data.importing import REASONS, import_class_folders, import_csv_manifest

FILES = Path(pydicom.__file__).parent / "data" / "test_files"
REPO = Path(__file__).resolve().parents[2]
PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "StudyDate")


def tf(name: str) -> Path:
    return FILES / name


def _reason(path, **kw) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        read_image(path, **kw)
    return info.value


def _gray(path) -> np.ndarray:
    a = read_image(path)
    assert a.dtype == np.float32 and a.ndim == 3 and a.shape[2] == 1
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    return a[..., 0]


def _window_range(ds) -> tuple[float, float]:
    """The output range of pydicom's apply_windowing (PS3.3 C.11.2.1.2), after the rescale."""
    if ds.PixelRepresentation == 0:
        lo, hi = 0.0, 2.0**ds.BitsStored - 1
    else:
        lo, hi = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        s, b = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * s + b, hi * s + b
    return lo, hi


def test_suffixes_and_reasons():
    assert {".dcm", ".dicom"} <= SUPPORTED_SUFFIXES
    for reason in ("unsupported_transfer_syntax", "multi_frame"):
        assert reason in LOAD_REASONS and reason in REASONS


def test_ct_without_window_uses_the_full_range_of_the_modality_values():
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    assert "WindowCenter" not in ds and "RescaleSlope" in ds
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    expected = (hu - hu.min()) / (hu.max() - hu.min())
    got = _gray(tf("CT_small.dcm"))
    assert got.shape == (128, 128)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert image_size(tf("CT_small.dcm")) == (128, 128) and check_image(tf("CT_small.dcm")) == (128, 128)


def test_mr_window_as_pydicom_applies_it():
    ds = pydicom.dcmread(tf("MR_small.dcm"))
    assert "WindowCenter" in ds
    out = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=0).astype(np.float64)
    lo, hi = _window_range(ds)
    np.testing.assert_allclose(_gray(tf("MR_small.dcm")), (out - lo) / (hi - lo), atol=1e-6)


def test_a_window_set_on_a_rescaled_ct(tmp_path):
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = 40, 400  # a soft-tissue window in Hounsfield units
    path = tmp_path / "ct_window.dcm"
    ds.save_as(path)
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    out = apply_voi_lut(hu, ds, index=0).astype(np.float64)
    lo, hi = _window_range(ds)
    got = _gray(path)
    np.testing.assert_allclose(got, (out - lo) / (hi - lo), atol=1e-6)
    assert (got == 0).any() and (got == 1).any()  # clipped at both ends of the window
    assert np.all(got[hu <= 40 - 200] == 0) and np.all(got[hu > 40 + 200] == 1)


def test_several_windows_take_the_first(tmp_path):
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = [40, 500], [400, 2000]
    ds.save_as(tmp_path / "two.dcm")
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.save_as(tmp_path / "one.dcm")
    np.testing.assert_array_equal(_gray(tmp_path / "two.dcm"), _gray(tmp_path / "one.dcm"))


def test_a_constant_image_without_window_is_zeros(tmp_path):
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    ds.PixelData = np.full((128, 128), 77, dtype=np.int16).tobytes()
    ds.save_as(tmp_path / "flat.dcm")
    assert not _gray(tmp_path / "flat.dcm").any()


def test_monochrome1_is_inverted_after_windowing(tmp_path):
    for name in ("CT_small.dcm", "MR_small.dcm"):  # full range and window
        ds = pydicom.dcmread(tf(name))
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(tmp_path / name)
        np.testing.assert_allclose(_gray(tmp_path / name), 1.0 - _gray(tf(name)), atol=1e-6)


def test_rle_reads_as_the_uncompressed_file():
    np.testing.assert_array_equal(_gray(tf("MR_small_RLE.dcm")), _gray(tf("MR_small.dcm")))
    np.testing.assert_array_equal(_gray(tf("MR_small_implicit.dcm")), _gray(tf("MR_small.dcm")))
    np.testing.assert_array_equal(_gray(tf("MR_small_bigendian.dcm")), _gray(tf("MR_small.dcm")))


def test_deflated_and_jpeg2000_decode():
    assert _gray(tf("image_dfl.dcm")).shape == (512, 512)
    if get_decoder(pydicom.uid.JPEG2000Lossless).is_available:  # through Pillow's OpenJPEG
        np.testing.assert_array_equal(_gray(tf("MR_small_jp2klossless.dcm")), _gray(tf("MR_small.dcm")))


def test_rgb_as_stored():
    ds = pydicom.dcmread(tf("SC_rgb_rle.dcm"))
    a = read_image(tf("SC_rgb_rle.dcm"))
    assert a.shape == (100, 100, 3) and a.dtype == np.float32
    np.testing.assert_allclose(a, ds.pixel_array / 255.0, atol=1e-7)
    np.testing.assert_allclose(a[5, 50], [1, 0, 0]) and np.testing.assert_allclose(a[45, 50], [0, 0, 1])
    a16 = read_image(tf("SC_rgb_rle_16bit.dcm"))  # the same picture in 16 bits
    np.testing.assert_allclose(a16, a, atol=1 / 255)


@pytest.mark.parametrize(
    "name", ["SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"]
)
def test_ybr_is_converted_to_rgb(name):
    """The SC_rgb pictures (bands of red, green, blue, ... grey) stored as YBR_FULL(_422) read as the RGB one."""
    assert pydicom.dcmread(tf(name), stop_before_pixels=True).PhotometricInterpretation.startswith("YBR_FULL")
    rgb = read_image(tf("SC_rgb_rle.dcm"))
    got = read_image(tf(name))
    tol = 6 / 255 if "uncompressed" in name else 12 / 255  # YCbCr in 8 bits rounds; JPEG is lossy
    assert np.abs(got - rgb).mean() < tol / 3
    for row in (5, 25, 45, 65, 95):  # inside each band, away from the edges
        np.testing.assert_allclose(got[row, 50], rgb[row, 50], atol=tol)


def test_ybr_like_pillow_reads_the_jpeg_stream(tmp_path):
    """The JPEG stream inside a YBR_FULL_422 file, decoded by Pillow on its own, gives the same RGB."""
    ds = pydicom.dcmread(tf("SC_rgb_jpeg_dcmtk.dcm"))
    frame = next(pydicom.encaps.generate_fragmented_frames(ds.PixelData))
    (tmp_path / "f.jpg").write_bytes(b"".join(frame))
    with Image.open(tmp_path / "f.jpg") as im:
        pil = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(read_image(tf("SC_rgb_jpeg_dcmtk.dcm")), pil, atol=2 / 255)


def test_palette_colour():
    ds = pydicom.dcmread(tf("examples_palette.dcm"))
    expected = apply_color_lut(ds.pixel_array, ds).astype(np.float64) / 65535
    a = read_image(tf("examples_palette.dcm"))
    assert a.shape == (350, 800, 3)
    np.testing.assert_allclose(a, expected, atol=1e-6)


def test_a_syntax_without_decoder_is_named():
    name = "MR_small_jpeg_ls_lossless.dcm"
    uid = pydicom.dcmread(tf(name), stop_before_pixels=True).file_meta.TransferSyntaxUID
    if get_decoder(uid).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    e = _reason(tf(name))
    assert e.reason == "unsupported_transfer_syntax"
    assert "JPEG-LS Lossless Image Compression" in e.detail and "1.2.840.10008.1.2.4.80" in e.detail
    assert image_size(tf(name)) == (64, 64)  # the header alone is fine


def test_jpeg_extended_12_bit_is_an_unsupported_syntax():
    e = _reason(tf("JPGExtended.dcm"))  # Pillow's JPEG decoder reads 8-bit samples only
    assert e.reason == "unsupported_transfer_syntax" and "JPEG Extended" in e.detail


def test_multi_frame_is_refused_unless_the_first_frame_is_asked_for(monkeypatch):
    e = _reason(tf("SC_rgb_rle_2frame.dcm"))
    assert e.reason == "multi_frame" and "2 frames" in e.detail
    with pytest.raises(ImageLoadError, match="2 frames"):
        image_size(tf("SC_rgb_rle_2frame.dcm"))
    assert _reason(tf("examples_ybr_color.dcm")).detail.startswith("DICOM file has 30 frames")

    ds = pydicom.dcmread(tf("SC_rgb_rle_2frame.dcm"))
    frames = ds.pixel_array
    assert not np.array_equal(frames[0], frames[1])
    first = dicom.read_dicom(tf("SC_rgb_rle_2frame.dcm"), multi_frame="first")
    np.testing.assert_allclose(first, frames[0] / 255.0, atol=1e-7)
    assert dicom.read_dicom(tf("examples_ybr_color.dcm"), multi_frame="first").shape == (240, 320, 3)
    with pytest.raises(ValueError):
        dicom.read_dicom(tf("SC_rgb_rle_2frame.dcm"), multi_frame="all")

    monkeypatch.setattr(dicom, "_multi_frame", "refuse")  # restored after the test
    dicom.set_multi_frame("first")
    np.testing.assert_array_equal(read_image(tf("SC_rgb_rle_2frame.dcm")), first)
    assert image_size(tf("SC_rgb_rle_2frame.dcm")) == (100, 100)


def test_truncated_files(tmp_path):
    e = _reason(tf("MR_truncated.dcm"))
    assert e.reason == "truncated" and "Traceback" not in e.detail
    data = tf("CT_small.dcm").read_bytes()
    for cut in (600, 3000, 20000):  # in the header, before the pixels, in the pixels
        (tmp_path / f"cut{cut}.dcm").write_bytes(data[:cut])
        assert _reason(tmp_path / f"cut{cut}.dcm").reason == "truncated", cut
    (tmp_path / "cut100.dcm").write_bytes(data[:100])  # not even the preamble
    assert _reason(tmp_path / "cut100.dcm").reason == "unreadable"


def test_damaged_and_imageless_files(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 300)
    assert _reason(tmp_path / "junk.dcm").reason in ("unreadable", "truncated")
    (tmp_path / "text.dcm").write_bytes(b"hello, not an image\n" * 10)
    assert _reason(tmp_path / "text.dcm").reason == "unreadable"
    e = _reason(tf("reportsi.dcm"))  # a structured report: no pixels
    assert e.reason == "unsupported" and "no image" in e.detail
    assert _reason(tf("rtdose_1frame.dcm")).reason == "unsupported"  # 32-bit dose grid
    for name in ("GDCMJ2K_TextGBR.dcm", "JPEG2000-embedded-sequence-delimiter.dcm", "badVR.dcm"):
        assert _reason(tf(name)).reason in LOAD_REASONS


def test_too_large_is_refused_from_the_header(monkeypatch):
    def no_decoding(*a, **k):
        raise AssertionError("decoded although the header is over the limit")

    monkeypatch.setattr(dicom, "_pixels", no_decoding)
    e = _reason(tf("CT_small.dcm"), max_pixels=128 * 128 - 1)
    assert e.reason == "too_large"


def test_dicom_told_by_content_not_by_name(tmp_path):
    shutil.copy(tf("CT_small.dcm"), tmp_path / "1.2.840.113619.2.55.3.77")  # a UID as the name
    shutil.copy(tf("CT_small.dcm"), tmp_path / "IM0001")
    ref = _gray(tf("CT_small.dcm"))
    for name in ("1.2.840.113619.2.55.3.77", "IM0001"):
        assert is_dicom_file(tmp_path / name)
        np.testing.assert_array_equal(_gray(tmp_path / name), ref)
    Image.fromarray(np.full((8, 9), 200, np.uint8)).save(tmp_path / "png.dcm", format="PNG")
    assert read_image(tmp_path / "png.dcm").shape == (8, 9, 1)  # a PNG named .dcm is a PNG
    assert not is_dicom_file(tmp_path / "png.dcm") and not is_dicom_file(tmp_path)


def _phi(path: Path) -> list[str]:
    """The identifying values of a file (empty ones left out), read here with pydicom itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            return []
        return [str(ds.get(k, "")) for k in PHI_KEYWORDS if str(ds.get(k, "")).strip()]


def test_error_texts_logs_and_warnings_name_no_identifier(caplog):
    values = {path: _phi(path) for path in sorted(FILES.glob("*.dcm"))}
    assert sum(map(len, values.values())) > 50
    caplog.set_level(logging.DEBUG)
    errors = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in values:
            try:
                read_image(path)
                image_size(path)
            except ImageLoadError as e:
                assert e.reason in LOAD_REASONS
                errors.append((path, e.detail))
    assert len(errors) > 10 and not caught
    for path, detail in errors:
        assert not [v for v in values[path] if v in detail], path.name
    everything = [v for vs in values.values() for v in vs]
    assert not [v for v in everything if v in caplog.text]


def test_an_invalid_value_is_not_warned_or_logged(tmp_path, caplog):
    ds = pydicom.dcmread(tf("CT_small.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientBirthDate = "19991399"  # no such date: pydicom warns with the value when it parses it
        ds.PatientName = "Quux^Invalid\\Value"
        ds.save_as(tmp_path / "bad.dcm")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_image(tmp_path / "bad.dcm")
        image_size(tmp_path / "bad.dcm")
    assert not caught
    assert "19991399" not in caplog.text and "Quux" not in caplog.text


def _class_folders(root: Path) -> None:
    (root / "ct").mkdir(parents=True)
    (root / "mr").mkdir()
    shutil.copy(tf("CT_small.dcm"), root / "ct" / "a.dcm")
    shutil.copy(tf("CT_small.dcm"), root / "ct" / "1.3.6.1.4.1.5962.1.1.1")  # no image suffix
    shutil.copy(tf("examples_rgb_color.dcm"), root / "ct" / "c.DICOM")
    (root / "ct" / "notes.txt").write_text("not an image")
    shutil.copy(tf("MR_small.dcm"), root / "mr" / "a.dcm")
    shutil.copy(tf("MR_small_jpeg_ls_lossless.dcm"), root / "mr" / "jls.dcm")
    shutil.copy(tf("SC_rgb_rle_2frame.dcm"), root / "mr" / "two.dcm")
    shutil.copy(tf("MR_truncated.dcm"), root / "mr" / "cut.dcm")


def test_folder_and_csv_import_of_dicom(tmp_path):
    root = tmp_path / "data"
    _class_folders(root)
    report = import_class_folders(root, split="train")
    assert sorted(Path(s.path).name for s in report.samples) == [
        "1.3.6.1.4.1.5962.1.1.1",
        "a.dcm",
        "a.dcm",
        "c.DICOM",
    ]
    skipped = {r.path: r.reason for r in report.skipped}
    jls_reason = (
        "unsupported_transfer_syntax" if not get_decoder(pydicom.uid.JPEGLSLossless).is_available else None
    )
    expected = {"ct/notes.txt": "unsupported", "mr/two.dcm": "multi_frame", "mr/cut.dcm": "truncated"}
    if jls_reason:
        expected["mr/jls.dcm"] = jls_reason
    assert skipped == expected
    counts = report.counts()["skipped_by_reason"]
    assert counts.get("multi_frame") == 1
    assert counts.get("unsupported_transfer_syntax", 0) == (1 if jls_reason else 0)
    summary = report.summary()
    assert "multi_frame: DICOM file has 2 frames" in summary
    ct = next(s for s in report.samples if s.path.endswith("a.dcm") and s.label == "ct")
    assert (ct.height, ct.width) == (128, 128)

    manifest = root / "manifest.csv"
    manifest.write_text(
        "path,label\nct/a.dcm,ct\nct/1.3.6.1.4.1.5962.1.1.1,ct\nmr/a.dcm,mr\nmr/two.dcm,mr\nmr/jls.dcm,mr\n"
    )
    report = import_csv_manifest(manifest)
    assert len(report.samples) == 3
    assert {r.row: r.reason for r in report.skipped}.get(4) == "multi_frame"


def test_the_packaged_build_bundles_pydicom_without_its_test_files():
    spec = (REPO / "packaging" / "lvlmva-desktop.spec").read_text()
    assert 'collect_submodules("pydicom")' in spec
    assert "pydicom/data/test_files" in spec and "a.datas = [" in spec
    assert '"pydicom>=3.0"' in (REPO / "pyproject.toml").read_text()
