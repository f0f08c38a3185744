import struct
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageFile

from lvlmva_desktop.core.data.images import (
    SUPPORTED_SUFFIXES,
    ImageLoadError,
    check_image,
    file_sha256,
    image_size,
    mask_to_tensor,
    read_image,
    read_mask,
    to_tensor,
)


def _rgb(h=12, w=16, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path, width, height):
    """A tiny PNG whose header claims width x height but whose data is a few bytes (never decodable)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = (
        _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def _reason(path, **kw):
    with pytest.raises(ImageLoadError) as info:
        read_image(path, **kw)
    return info.value.reason


# -- formats and modes --------------------------------------------------------------------------------------
def test_png_rgb_exact_values(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    assert out.dtype == np.float32 and out.shape == (12, 16, 3)
    np.testing.assert_allclose(out, a / 255.0, atol=1e-6)


def test_png_gray_is_one_channel(tmp_path):
    g = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 16, 1)
    np.testing.assert_allclose(out[..., 0], g / 255.0, atol=1e-6)


def test_png_rgba_drops_alpha(tmp_path):
    a = _rgb()
    rgba = np.dstack([a, np.zeros(a.shape[:2], np.uint8)])  # fully transparent: RGB must survive
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (12, 16, 3)
    np.testing.assert_allclose(out, a / 255.0, atol=1e-6)


def test_png_la_becomes_gray(tmp_path):
    g = np.full((5, 7), 200, np.uint8)
    Image.fromarray(np.dstack([g, np.full_like(g, 10)]), mode="LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    assert out.shape == (5, 7, 1)
    np.testing.assert_allclose(out, 200 / 255.0, atol=1e-6)


def test_png_palette_becomes_rgb(tmp_path):
    img = Image.new("P", (4, 3))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1] * 3)
    img.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (3, 4, 3)
    np.testing.assert_allclose(out[0, 1], [1, 0, 0])
    np.testing.assert_allclose(out[0, 2], [0, 0, 1])


def test_png_16bit_gray_keeps_precision(tmp_path):
    Image.fromarray(np.full((4, 5), 1000, np.uint16)).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.shape == (4, 5, 1)
    np.testing.assert_allclose(out, 1000 / 65535, rtol=1e-6)


def test_jpeg_and_bmp(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "x.bmp")
    bmp = read_image(tmp_path / "x.bmp")
    assert bmp.shape == (12, 16, 3)
    np.testing.assert_allclose(bmp, a / 255.0, atol=1e-6)
    smooth = np.zeros((16, 16, 3), np.uint8)
    smooth[..., 0] = np.arange(16)[None, :] * 16  # a gradient survives JPEG well
    smooth[..., 1] = 128
    Image.fromarray(smooth).save(tmp_path / "x.jpg", quality=95)
    jpg = read_image(tmp_path / "x.jpg")
    assert jpg.shape == (16, 16, 3)
    assert np.abs(jpg - smooth / 255.0).max() < 0.05  # lossy, but the same picture


def test_tiff_8bit(tmp_path):
    a = _rgb()
    tifffile.imwrite(tmp_path / "x.tif", a)
    np.testing.assert_allclose(read_image(tmp_path / "x.tif"), a / 255.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3)])
def test_tiff_16bit_keeps_precision(tmp_path, shape):
    data = np.full(shape, 1000, np.uint16)
    data.flat[0] = 65535
    tifffile.imwrite(tmp_path / "x.tiff", data)
    out = read_image(tmp_path / "x.tiff")
    assert out.shape == (4, 5, 1 if len(shape) == 2 else 3)
    assert out.flat[-1] == pytest.approx(1000 / 65535, rel=1e-6)  # 8-bit would give 3/255 or 4/255
    assert out.max() == pytest.approx(1.0)


def test_tiff_lzw_written_by_pillow(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    np.testing.assert_allclose(read_image(tmp_path / "lzw.tif"), a / 255.0, atol=1e-6)


def test_content_not_extension_decides(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "really_png.jpg", format="PNG")
    np.testing.assert_allclose(read_image(tmp_path / "really_png.jpg"), a / 255.0, atol=1e-6)


# -- failures -----------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError) as info:
        read_image(tmp_path / "nope.png")
    assert info.value.reason == "missing"
    assert str(info.value) == info.value.detail == "file not found"


def test_zero_byte_and_garbage_are_unreadable(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"this is not an image\n" * 20)
    assert _reason(tmp_path / "empty.png") == "unreadable"
    assert _reason(tmp_path / "text.png") == "unreadable"
    assert _reason(tmp_path) == "unreadable"  # a folder


def test_recognised_but_unsupported_format(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "x.png", format="GIF")
    assert _reason(tmp_path / "x.png") == "unsupported"


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif")])
def test_truncated_files(tmp_path, fmt, suffix):
    src = tmp_path / f"full{suffix}"
    a = _rgb(64, 64)
    if fmt == "TIFF":
        tifffile.imwrite(src, a)
    else:
        Image.fromarray(a).save(src, format=fmt)
    data = src.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as info:
        read_image(cut)
    assert info.value.reason == "truncated"
    assert "truncated" in info.value.detail


def test_png_missing_only_its_tail_is_truncated(tmp_path):
    Image.fromarray(_rgb(32, 32)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:-20])  # pixels decodable, zlib end and IEND gone
    assert _reason(tmp_path / "cut.png") == "truncated"


def test_truncated_check_ignores_lenient_global(tmp_path, monkeypatch):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert _reason(tmp_path / "cut.png") == "truncated"


def test_huge_header_refused_before_decoding(tmp_path):
    # 8000x8000 is under Pillow's own bomb limit, so only our header check can refuse it; the data is
    # 64 bytes, so decoding would have said "truncated" instead.
    big = _png_header_only(tmp_path / "big.png", 8000, 8000)
    with pytest.raises(ImageLoadError) as info:
        read_image(big)
    assert info.value.reason == "too_large"
    assert "64,000,000" in info.value.detail
    assert image_size(big) == (8000, 8000)
    # Past Pillow's DecompressionBombError threshold too
    assert _reason(_png_header_only(tmp_path / "huge.png", 20000, 20000)) == "too_large"


def test_max_pixels_applies_to_tiff_and_png(tmp_path):
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((20, 20), np.uint8))
    Image.fromarray(_rgb(20, 20)).save(tmp_path / "x.png")
    assert _reason(tmp_path / "x.tif", max_pixels=399) == "too_large"
    assert _reason(tmp_path / "x.png", max_pixels=399) == "too_large"
    assert read_image(tmp_path / "x.png", max_pixels=400).shape == (20, 20, 3)


# -- masks, sizes, hashes -----------------------------------------------------------------------------------
def test_read_mask_any_channel_nonzero(tmp_path):
    m = np.zeros((6, 8, 3), np.uint8)
    m[1, 2, 0] = 1
    m[4, 5, 2] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", expected_size=(6, 8))
    assert mask.dtype == bool and mask.shape == (6, 8)
    assert set(zip(*np.nonzero(mask))) == {(1, 2), (4, 5)}


def test_read_mask_16bit_small_value_counts(tmp_path):
    m = np.zeros((4, 4), np.uint16)
    m[2, 3] = 1
    tifffile.imwrite(tmp_path / "m.tif", m)
    assert read_mask(tmp_path / "m.tif").sum() == 1


def test_read_mask_size_mismatch(tmp_path):
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ImageLoadError) as info:
        read_mask(tmp_path / "m.png", expected_size=(8, 6))
    assert info.value.reason == "mask_size_mismatch"


def test_image_size_reads_header(tmp_path):
    Image.fromarray(_rgb(7, 9)).save(tmp_path / "x.jpg")
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((3, 5), np.uint16))
    assert image_size(tmp_path / "x.jpg") == (7, 9)
    assert image_size(tmp_path / "x.tif") == (3, 5)
    assert check_image(tmp_path / "x.tif") == (3, 5)
    with pytest.raises(ImageLoadError) as info:
        image_size(tmp_path / "none.png")
    assert info.value.reason == "missing"


def test_file_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sha256(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


# -- tensors ------------------------------------------------------------------------------------------------
def test_to_tensor_channel_conversion():
    rgb = np.zeros((2, 3, 3), np.float32)
    rgb[..., 0] = 1.0
    gray = to_tensor(rgb, (2, 3), 1)
    assert gray.shape == (1, 2, 3) and gray.dtype == torch.float32
    assert torch.allclose(gray, torch.full((1, 2, 3), 0.299))
    back = to_tensor(np.full((2, 3, 1), 0.5, np.float32), (2, 3), 3)
    assert back.shape == (3, 2, 3) and torch.allclose(back, torch.full((3, 2, 3), 0.5))


def test_to_tensor_resizes_with_antialias():
    stripes = np.zeros((8, 8, 1), np.float32)
    stripes[:, ::2] = 1.0
    out = to_tensor(stripes, (4, 4), 1)
    assert out.shape == (1, 4, 4)
    # Antialiased downscaling averages the stripes; plain bilinear at 2x would pick every other column.
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=0.15)
    assert out.min() >= 0 and out.max() <= 1


def test_to_tensor_does_not_alias_input():
    a = np.full((4, 4, 1), 0.25, np.float32)
    t = to_tensor(a, (4, 4), 1)
    t += 1
    assert a[0, 0, 0] == 0.25


def test_mask_to_tensor_nearest():
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    out = mask_to_tensor(m, (8, 8))
    assert out.dtype == torch.bool and out.shape == (8, 8)
    assert out[:4, :4].all() and not out[4:, :].any() and not out[:, 4:].any()
    assert torch.equal(mask_to_tensor(m, (4, 4)), torch.from_numpy(m))
