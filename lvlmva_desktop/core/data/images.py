"""Reading user images and masks robustly, and turning them into model-ready tensors.

Every failure to read an image becomes an ``ImageLoadError`` with a machine-readable ``reason`` so that
data import can list bad files instead of crashing on the first one. Formats are identified by content
(a PNG named ``.jpg`` loads fine); the size in the header is checked before any pixel is decoded so that a
"decompression bomb" is refused cheaply; and every image is decoded completely so that a truncated file is
reported as such rather than silently padded with grey.

Pixel values always end up in [0, 1]: 8-bit data is divided by 255, 16-bit data by 65535 (TIFF goes
through tifffile, which keeps the full 16-bit precision that Pillow drops for RGB TIFF). DICOM files (the
"DICM" preamble, or a ``.dcm``/``.dicom`` name) go through ``core/data/dicom.py`` (pydicom), which applies the
modality LUT and the window and returns values already in [0, 1].
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, UnidentifiedImageError

log = logging.getLogger(__name__)

DICOM_SUFFIXES = {".dcm", ".dicom"}
SUPPORTED_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} | DICOM_SUFFIXES

#: Values of ``ImageLoadError.reason``.
LOAD_REASONS = (
    "missing",
    "unreadable",
    "truncated",
    "too_large",
    "unsupported",
    "unsupported_transfer_syntax",  # a DICOM file compressed with a syntax no installed decoder reads
    "multi_frame",  # a DICOM file with several frames (only single-frame 2-D images are read)
    "mask_size_mismatch",
)

DEFAULT_MAX_PIXELS = 50_000_000

# Pillow format names (identified from content) that we accept; MPO is what Pillow calls many camera JPEGs.
_PIL_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "DIB", "TIFF"}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
}


class ImageLoadError(Exception):
    """An image or mask could not be used; ``reason`` is one of LOAD_REASONS, ``detail`` is for humans."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.detail

    def __reduce__(self):  # keep pickling (e.g. across worker processes) working with two arguments
        return (type(self), (self.reason, self.detail))


# ---------------------------------------------------------------------------------------------------------
# Low-level helpers
# ---------------------------------------------------------------------------------------------------------
def _check_file(path: Path) -> None:
    """Fail early, with a clear reason, for missing, non-regular and empty files."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageLoadError("missing", "file not found") from None
    except OSError as e:
        raise ImageLoadError("unreadable", f"cannot access file ({e.strerror or e})") from None
    if path.is_dir():
        raise ImageLoadError("unreadable", "path is a folder, not an image file")
    if st.st_size == 0:
        raise ImageLoadError("unreadable", "file is empty (0 bytes)")


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except FileNotFoundError:
        raise ImageLoadError("missing", "file not found") from None
    except OSError as e:
        raise ImageLoadError("unreadable", f"cannot read file ({e.strerror or e})") from None


def _guess_kind(head: bytes) -> str | None:
    if head[:4] in _TIFF_MAGIC:
        return "TIFF"
    for sig, name in _SIGNATURES.items():
        if head.startswith(sig):
            return name
    return None


def _is_dicom_head(head: bytes) -> bool:
    """The first 132 bytes of a DICOM Part 10 file: a 128-byte preamble, then "DICM"."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _is_dicom(path: Path, head: bytes) -> bool:
    """DICOM by content (the preamble), or by name (.dcm/.dicom) unless the content is another format."""
    if _is_dicom_head(head):
        return True
    return path.suffix.lower() in DICOM_SUFFIXES and _guess_kind(head) is None


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when a regular file starts with the DICOM preamble (reads 132 bytes; False when it cannot be
    read; a named pipe or device is never opened)."""
    try:
        if not Path(path).is_file():
            return False
        with open(path, "rb") as fh:
            return _is_dicom_head(fh.read(132))
    except OSError:
        return False


def _check_pixels(h: int, w: int, max_pixels: int | None) -> None:
    if h < 1 or w < 1:  # a damaged header; decoding would fail later with a less clear message
        raise ImageLoadError("unreadable", f"the file's header gives an image of {w}x{h} pixels")
    if max_pixels is not None and h * w > max_pixels:
        raise ImageLoadError(
            "too_large", f"image is {w}x{h} = {h * w:,} pixels, more than the limit of {max_pixels:,}"
        )


def _is_truncation(e: BaseException) -> bool:
    return isinstance(e, EOFError) or "truncat" in str(e).lower()


def _decode_error(e: BaseException, lib: str) -> ImageLoadError:
    """Map an exception raised while decoding pixels to an ImageLoadError."""
    if isinstance(e, ImageLoadError):
        return e
    if isinstance(e, FileNotFoundError):
        return ImageLoadError("missing", "file not found")
    if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
        m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(e))
        if m:  # refused from the header by Pillow, before any pixel was decoded
            return ImageLoadError(
                "too_large",
                f"image has {int(m[1]):,} pixels, more than the {int(m[2]):,} allowed "
                "(a possible decompression bomb)",
            )
        return ImageLoadError("too_large", f"image is too large ({lib}: {e})")
    if isinstance(e, MemoryError):
        return ImageLoadError("too_large", f"not enough memory to decode the image ({lib})")
    if _is_truncation(e):
        return ImageLoadError("truncated", f"file is truncated ({lib}: {e})")
    return ImageLoadError("unreadable", f"cannot decode image ({lib}: {type(e).__name__}: {e})")


class _BombGuard:
    """Turn Pillow's DecompressionBombWarning into an error when our own limit would refuse it anyway.

    Our header check is the real limit; Pillow's warning fires above its own MAX_IMAGE_PIXELS, so it is
    only treated as "too large" when ``max_pixels`` is at or below that threshold, otherwise ignored.
    """

    def __init__(self, max_pixels: int | None) -> None:
        limit = Image.MAX_IMAGE_PIXELS
        self._action = "error" if (max_pixels is not None and limit and max_pixels <= limit) else "ignore"
        self._cm = warnings.catch_warnings()

    def __enter__(self) -> None:
        self._cm.__enter__()
        warnings.simplefilter(self._action, Image.DecompressionBombWarning)

    def __exit__(self, *exc) -> None:
        self._cm.__exit__(*exc)


def _open_pil(path: Path, max_pixels: int | None) -> Image.Image:
    """Open with Pillow (header only), check the format and the pixel count; the caller closes it."""
    try:
        with _BombGuard(max_pixels):
            img = Image.open(path)
    except FileNotFoundError:
        raise ImageLoadError("missing", "file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        if m and max_pixels is not None and int(m[1]) > max_pixels:  # told against our limit, not Pillow's
            raise ImageLoadError(
                "too_large", f"image has {int(m[1]):,} pixels, more than the limit of {max_pixels:,}"
            ) from None
        raise _decode_error(e, "PIL") from None
    except UnidentifiedImageError:
        kind = _guess_kind(_head(path))
        hint = f" (it starts like a {kind} file but is truncated or corrupt)" if kind else ""
        raise ImageLoadError("unreadable", f"not a recognised image file{hint}") from None
    except Exception as e:  # Pillow raises many types for corrupt headers
        raise _decode_error(e, "PIL") from None
    fmt = img.format or "?"
    if fmt not in _PIL_FORMATS:
        img.close()
        raise ImageLoadError(
            "unsupported", f"{fmt} images are not supported (supported: PNG, JPEG, BMP, TIFF)"
        )
    w, h = img.size
    try:
        _check_pixels(h, w, max_pixels)
    except ImageLoadError:
        img.close()
        raise
    return img


def _float_to_unit(a: np.ndarray) -> np.ndarray:
    """Float data has no fixed range: assume [0,1], else 8-bit, else 16-bit, else scale by the maximum."""
    a = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    hi = float(a.max()) if a.size else 0.0
    if hi > 1.0:
        a = a / (255.0 if hi <= 255.0 else 65535.0 if hi <= 65535.0 else hi)
    return np.clip(a, 0.0, 1.0)


def _int_scale(dtype: np.dtype, bits: int | None = None) -> float:
    if dtype == np.bool_:
        return 1.0
    if bits is not None and 0 < bits < np.dtype(dtype).itemsize * 8:
        return float(2**bits - 1)
    return float(np.iinfo(dtype).max)


def _as_hwc(a: np.ndarray) -> np.ndarray:
    return a[..., None] if a.ndim == 2 else a


def _pil_pixels(img: Image.Image, palette_index: bool) -> tuple[np.ndarray, float]:
    """Pixels of a loaded Pillow image as HxWxC (C in {1,3}) native dtype, and the divisor to [0,1]."""
    mode = img.mode
    if mode == "1":
        return _as_hwc(np.asarray(img, dtype=np.uint8)), 1.0
    if mode == "L":
        return _as_hwc(np.asarray(img)), 255.0
    if mode in ("LA", "La"):
        return np.asarray(img)[..., :1], 255.0
    if mode in ("P", "PA"):
        if palette_index:  # a palette mask: index 0 is the background, whatever its colour
            return _as_hwc(np.asarray(img.getchannel(0) if mode == "PA" else img)), 1.0
        return np.asarray(img.convert("RGB")), 255.0
    if mode == "RGB":
        return np.asarray(img), 255.0
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.asarray(img)[..., :3], 255.0
    if mode.startswith("I;16"):
        return _as_hwc(np.asarray(img).astype(np.uint16)), 65535.0
    if mode == "I":  # 32-bit integer grayscale; in practice 16-bit data (PNG/PGM)
        return _as_hwc(np.clip(np.asarray(img), 0, 65535).astype(np.uint16)), 65535.0
    if mode == "F":
        return _as_hwc(_float_to_unit(np.asarray(img))), 1.0
    try:  # CMYK, YCbCr, LAB, HSV, ...
        return np.asarray(img.convert("RGB")), 255.0
    except Exception as e:
        raise ImageLoadError("unsupported", f"pixel mode {mode!r} is not supported ({e})") from None


def _load_pil(path: Path, max_pixels: int | None, palette_index: bool) -> tuple[np.ndarray, float]:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone enabled lenient loading process-wide; it would hide truncated files behind grey pixels.
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; resetting it to False")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    img = _open_pil(path, max_pixels)
    try:
        fmt = img.format
        try:
            with _BombGuard(max_pixels):
                img.load()  # force a full decode so truncated files fail here
            pixels = _pil_pixels(img, palette_index)
        except ImageLoadError:
            raise
        except Exception as e:
            raise _decode_error(e, "PIL") from None
    finally:
        img.close()
    if fmt == "PNG":
        # Pillow can decode all pixels of a PNG whose tail (end of the zlib stream, IEND) is cut off;
        # verify() walks every chunk and its CRC, catching such truncation and corruption.
        try:
            with _BombGuard(None), Image.open(path) as v:
                v.verify()
        except Exception as e:
            raise _decode_error(e, "PIL") from None
    return pixels


_TIFF_DIRECT = {0, 1, 2, 3, 5}  # MINISWHITE, MINISBLACK, RGB, PALETTE, SEPARATED (CMYK)


def _tiff_page_pixels(page, palette_index: bool) -> tuple[np.ndarray, float]:
    a = page.asarray()
    axes = page.axes
    # Keep Y, X and S (samples); take the first entry of any other axis (depth, etc.).
    index = tuple(slice(None) if ax in "YXS" else 0 for ax in axes)
    a = a[index]
    kept = [ax for ax in axes if ax in "YXS"]
    order = [kept.index(ax) for ax in "YXS" if ax in kept]
    a = _as_hwc(np.transpose(a, order))
    if a.ndim != 3:
        raise ImageLoadError("unsupported", f"TIFF page with axes {axes!r} is not supported")
    if np.iscomplexobj(a):
        raise ImageLoadError("unsupported", "complex-valued TIFF is not supported")
    photometric = int(page.photometric)
    bits = int(page.bitspersample) if page.bitspersample else None

    if photometric == 3:  # palette
        idx = a[..., 0]
        if palette_index:
            return idx[..., None], 1.0
        cmap = None if page.colormap is None else np.asarray(page.colormap)
        if cmap is None or cmap.ndim != 2 or cmap.shape[0] != 3:
            raise ImageLoadError("unreadable", "palette TIFF without a valid colour map")
        rgb = cmap[:, np.clip(idx, 0, cmap.shape[1] - 1)].transpose(1, 2, 0)
        return rgb, (255.0 if cmap.max() <= 255 else 65535.0)

    if a.dtype.kind == "f":
        scaled = _float_to_unit(a)
        scale = 1.0
    elif a.dtype.kind in "biu":
        if a.dtype.kind == "i":
            a = np.clip(a, 0, None)
        scaled = a
        scale = _int_scale(a.dtype, bits)
    else:
        raise ImageLoadError("unsupported", f"TIFF sample type {a.dtype} is not supported")

    if photometric == 5:  # CMYK: convert in float
        if scaled.shape[2] < 4:
            raise ImageLoadError("unsupported", "separated (CMYK) TIFF without 4 samples")
        f = scaled[..., :4].astype(np.float32) / np.float32(scale)
        rgb = (1.0 - f[..., :3]) * (1.0 - f[..., 3:4])
        return rgb.astype(np.float32), 1.0
    if photometric == 2:
        if scaled.shape[2] < 3:
            raise ImageLoadError("unsupported", "RGB TIFF with fewer than 3 samples")
        return scaled[..., :3], scale
    # grayscale; extra samples (alpha) are dropped
    gray = scaled[..., :1]
    if photometric == 0:  # MINISWHITE: 0 is white
        gray = (
            (1.0 - gray) if gray.dtype.kind == "f" else (scale - gray.astype(np.float64)).astype(np.float32)
        )
    return gray, scale


def _load_tiff(path: Path, max_pixels: int | None, palette_index: bool) -> tuple[np.ndarray, float]:
    try:
        tf = tifffile.TiffFile(path)
    except Exception as e:
        log.debug("tifffile cannot open %s (%s); trying Pillow", path, e)
        return _load_pil(path, max_pixels, palette_index)
    with tf:
        if not tf.pages:
            raise ImageLoadError("unreadable", "TIFF file contains no image")
        page = tf.pages[0]
        h, w = int(page.imagelength), int(page.imagewidth)
        _check_pixels(h, w, max_pixels)
        size = os.path.getsize(path)
        for off, cnt in zip(page.dataoffsets, page.databytecounts):
            if cnt and off + cnt > size:
                raise ImageLoadError(
                    "truncated",
                    f"file is truncated (tifffile: image data ends at byte {off + cnt}, file has {size})",
                )
        if int(page.photometric) not in _TIFF_DIRECT:
            log.debug("TIFF photometric %s in %s: decoding with Pillow", page.photometric, path)
            return _load_pil(path, max_pixels, palette_index)
        try:
            return _tiff_page_pixels(page, palette_index)
        except ImageLoadError:
            raise
        except ValueError as e:
            if "imagecodecs" in str(e):  # compression tifffile cannot decode alone (LZW, JPEG, ...)
                log.debug("tifffile needs imagecodecs for %s; decoding with Pillow", path)
                return _load_pil(path, max_pixels, palette_index)
            raise _decode_error(e, "tifffile") from None
        except Exception as e:
            raise _decode_error(e, "tifffile") from None


def _load_native(path, max_pixels: int | None, palette_index: bool = False) -> tuple[np.ndarray, float]:
    """Decode fully; return HxWxC pixels (C in {1,3}) in their native dtype and the divisor to [0,1]."""
    p = Path(path)
    _check_file(p)
    try:
        head = _head(p, 132)
        if _is_dicom(p, head):
            from lvlmva_desktop.core.data.dicom import read_dicom

            return read_dicom(p, max_pixels), 1.0
        if head[:4] in _TIFF_MAGIC:
            return _load_tiff(p, max_pixels, palette_index)
        return _load_pil(p, max_pixels, palette_index)
    except ImageLoadError:
        raise
    except Exception as e:  # last resort: the contract is that only ImageLoadError escapes
        log.debug("unexpected error decoding %s", p, exc_info=True)
        raise _decode_error(e, "decoder") from None


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image fully into a float32 HxWxC array in [0, 1], C = 1 (grayscale) or 3 (RGB).

    Alpha is dropped, not composited: RGBA gives its RGB channels and LA its L channel, because artefacts
    and masks live in the colour data and compositing onto any background would invent pixel values.
    Palette images become RGB. 16-bit data keeps its precision (divided by 65535). Only the first frame
    or page of multi-frame files is read, except DICOM, where a multi-frame file is refused ("multi_frame")
    unless ``core.data.dicom.set_multi_frame("first")`` was called. EXIF orientation is not applied, so pixels match the header size.
    Raises ImageLoadError (and nothing else) when the file cannot be used.
    """
    pixels, scale = _load_native(path, max_pixels)
    out = np.array(pixels, dtype=np.float32, copy=True)
    if scale != 1.0:
        out /= np.float32(scale)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def check_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Decode fully (catching truncation) without building a float copy; return (H, W).

    Data import validates every file; this does the same work as read_image minus the conversion.
    """
    pixels, _ = _load_native(path, max_pixels)
    return int(pixels.shape[0]), int(pixels.shape[1])


def read_mask(
    path: str | os.PathLike,
    expected_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a mask as bool HxW: True where any colour channel is nonzero (alpha is ignored).

    Palette masks use the palette index (0 = background) rather than the colour, as annotation tools do.
    With ``expected_size`` (H, W) a mask of another size raises ImageLoadError("mask_size_mismatch").
    """
    pixels, _ = _load_native(path, max_pixels, palette_index=True)
    mask = np.any(pixels != 0, axis=2)
    if expected_size is not None:
        eh, ew = int(expected_size[0]), int(expected_size[1])
        if mask.shape != (eh, ew):
            raise ImageLoadError(
                "mask_size_mismatch",
                f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the image is {ew}x{eh}",
            )
    return mask


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image read from its header only (cheap); raises ImageLoadError."""
    p = Path(path)
    _check_file(p)
    try:
        head = _head(p, 132)
        if _is_dicom(p, head):
            from lvlmva_desktop.core.data.dicom import dicom_size

            return dicom_size(p)
        if head[:4] in _TIFF_MAGIC:
            try:
                with tifffile.TiffFile(p) as tf:
                    if tf.pages:
                        page = tf.pages[0]
                        h, w = int(page.imagelength), int(page.imagewidth)
                        _check_pixels(h, w, None)
                        return h, w
            except ImageLoadError:
                raise
            except Exception as e:
                log.debug("tifffile cannot read the header of %s (%s); trying Pillow", p, e)
        img = _open_pil(p, None)
        w, h = img.size
        img.close()
        return int(h), int(w)
    except ImageLoadError:
        raise
    except Exception as e:
        raise _decode_error(e, "decoder") from None


def to_tensor(arr: np.ndarray, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Float32 (channels, H, W) tensor in [0, 1] at ``size`` (H, W), ready for a model.

    Gray becomes RGB by repetition, RGB becomes gray by luminance (0.299, 0.587, 0.114). Resizing uses
    antialiased bilinear interpolation so that downscaling does not alias fine artefacts away.
    Integer inputs are scaled by their dtype's maximum; a 4th (alpha) channel is dropped.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (H, W), got {size}")
    a = _as_hwc(np.asarray(arr))
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW or HxWxC array with C in 1, 3, 4; got shape {a.shape}")
    a = a[..., :3]
    if a.dtype.kind in "biu":
        scale = _int_scale(a.dtype)
        a = a.astype(np.float32) / np.float32(scale)
    t = torch.from_numpy(np.array(a.transpose(2, 0, 1), dtype=np.float32, copy=True))
    if channels == 1 and t.shape[0] == 3:
        t = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]).unsqueeze(0)
    if tuple(t.shape[1:]) != (h, w):
        t = F.interpolate(t.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=False, antialias=True)[
            0
        ]
    if channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t.clamp(0.0, 1.0).contiguous()


def mask_to_tensor(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Bool (H, W) tensor at ``size``, resized by nearest neighbour so the mask stays binary."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = np.any(m != 0, axis=2)
    if m.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {m.shape}")
    m = m != 0
    h, w = int(size[0]), int(size[1])
    t = torch.from_numpy(m.copy())
    if tuple(t.shape) == (h, w):
        return t
    r = F.interpolate(t[None, None].to(torch.uint8), size=(h, w), mode="nearest-exact")
    return r[0, 0].bool()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes: identifies an image across renames and detects changed files."""
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except FileNotFoundError:
        raise ImageLoadError("missing", "file not found") from None
    except OSError as e:
        raise ImageLoadError("unreadable", f"cannot read file ({e.strerror or e})") from None
