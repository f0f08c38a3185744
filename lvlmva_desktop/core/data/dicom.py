"""Reading single-frame 2-D DICOM images (pydicom), as float32 HxWxC pixels in [0, 1].

Called by ``core/data/images.py`` for files with the DICOM preamble ("DICM" at byte 128) or a ``.dcm`` /
``.dicom`` name (``images.is_dicom_file``), so data import, thumbnails, training and every later step read DICOM like PNG or TIFF.

What is done to the stored values, in this order:

* grayscale (MONOCHROME1/2): the modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence), then
  the first VOI LUT or window (Window Center/Width, with its VOI LUT Function) when the file has one,
  scaled from the window's output range to [0, 1]; without one the full range of the modality values
  (their minimum to their maximum) becomes [0, 1] (a constant image becomes zeros). MONOCHROME1 is inverted
  (1 - v) after that;
* colour: RGB as stored (divided by 2**BitsStored - 1); YBR_FULL, YBR_FULL_422 (and the YBR_RCT/ICT of
  JPEG 2000) converted to RGB; PALETTE COLOR through its colour lookup tables;
* 1 to 16 bits stored; the transfer syntaxes pydicom decodes without extra packages (uncompressed,
  deflated, RLE, and through Pillow JPEG baseline/extended 8-bit and JPEG 2000). Any other syntax is
  refused with the reason "unsupported_transfer_syntax", naming the syntax and its UID;
* a multi-frame file is refused ("multi_frame", naming the frame count) unless the first frame is asked
  for (``multi_frame="first"`` here, or ``set_multi_frame("first")`` for the whole process).

No patient identifier leaves this module: only the technical elements of the image pixel module (group
0028), the file meta information (transfer syntax) and the SOP class are read from the file at all
(``specific_tags``), pydicom's warnings are swallowed and its logger is muted, and error texts name only
technical values (photometric interpretation, bits, syntax, frame count, rows and columns).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import DicomDictionary
from pydicom.errors import InvalidDicomError

from lvlmva_desktop.core.data.images import ImageLoadError, _check_pixels

try:  # pydicom >= 3
    from pydicom.pixels import (
        apply_color_lut,
        apply_modality_lut,
        apply_voi_lut,
        convert_color_space,
        get_decoder,
    )
    from pydicom.pixels.utils import as_pixel_options

    _PYDICOM3 = True
except ImportError:  # pydicom 2.x
    from pydicom.pixel_data_handlers.util import (  # type: ignore[no-redef]
        apply_color_lut,
        apply_modality_lut,
        apply_voi_lut,
        convert_color_space,
    )

    get_decoder = as_pixel_options = None  # type: ignore[assignment]
    _PYDICOM3 = False

log = logging.getLogger(__name__)

MULTI_FRAME_MODES = ("refuse", "first")

_multi_frame = "refuse"

# pydicom logs (and warns) element values, e.g. an invalid date; none of it may reach our logs.
_pydicom_log = logging.getLogger("pydicom")
_pydicom_log.propagate = False
_pydicom_log.setLevel(logging.CRITICAL + 1)

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float Pixel Data
_SOP_CLASS = 0x00080016
# The image pixel module and the presentation elements (all of group 0028), the pixel data and the SOP
# class: the only elements read from a file. Patient, study and institution elements are never parsed.
_TECHNICAL_TAGS = sorted({t for t in DicomDictionary if t >> 16 == 0x0028} | {_SOP_CLASS, *_PIXEL_TAGS})
_HEADER_TAGS = [t for t in _TECHNICAL_TAGS if t not in _PIXEL_TAGS]

_GRAY = ("MONOCHROME1", "MONOCHROME2")
_YBR_TO_RGB = ("YBR_FULL", "YBR_FULL_422")


def set_multi_frame(mode: str) -> None:
    """What every DICOM read in this process does with a multi-frame file when not told per call:
    "refuse" (the default: ImageLoadError "multi_frame") or "first" (use frame 0)."""
    global _multi_frame
    _multi_frame = _check_mode(mode)


def multi_frame_mode() -> str:
    return _multi_frame


def _check_mode(mode: str | None) -> str:
    if mode is None:
        return _multi_frame
    if mode not in MULTI_FRAME_MODES:
        raise ValueError(f"multi_frame must be one of {', '.join(MULTI_FRAME_MODES)}, got {mode!r}")
    return mode


def _syntax(ds) -> str:
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not uid:
        return "no transfer syntax"
    name = getattr(uid, "name", "") or "unknown transfer syntax"
    return f"{name} ({uid})" if name != str(uid) else f"transfer syntax {uid}"


def _int(ds, keyword: str, default: int | None = None) -> int | None:
    """A technical integer element; ImageLoadError "unreadable" when it holds no number."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ImageLoadError("unreadable", f"the DICOM element {keyword} is not a number") from None


def _read(path: Path, header_only: bool):
    """dcmread of the technical elements only, warnings swallowed; failures become ImageLoadError."""
    tags = _HEADER_TAGS if header_only else _TECHNICAL_TAGS
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only, specific_tags=tags)
    except FileNotFoundError:
        raise ImageLoadError("missing", "file not found") from None
    except InvalidDicomError:
        raise ImageLoadError(
            "unreadable", "not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
        ) from None
    except EOFError:
        raise ImageLoadError("truncated", "DICOM file is truncated") from None
    except MemoryError:
        raise ImageLoadError("too_large", "not enough memory to read the DICOM file") from None
    except OSError as e:
        raise ImageLoadError("unreadable", f"cannot read file ({e.strerror or type(e).__name__})") from None
    except Exception as e:  # a damaged header; pydicom's text may quote element values, so it is not kept
        raise ImageLoadError("unreadable", f"cannot parse the DICOM file ({type(e).__name__})") from None


def _check_header(ds, max_pixels: int | None, mode: str) -> tuple[int, int, int]:
    """(rows, columns, frames) after the checks that need no pixel: an image, its size, its frames."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or cols is None:
        sop = ds.get("SOPClassUID", None)
        sop_name = getattr(sop, "name", "") if sop else ""
        if "Image" in sop_name:  # an image whose header stops early: the file was cut off
            raise ImageLoadError("truncated", f"DICOM file is truncated (a {sop_name} without Rows/Columns)")
        if not ds.file_meta.get("TransferSyntaxUID") or not len(ds):
            raise ImageLoadError(
                "unreadable", "the DICOM header is damaged (no transfer syntax or no elements)"
            )
        what = f" ({sop_name})" if sop_name else ""
        raise ImageLoadError("unsupported", f"the DICOM file holds no image{what}")
    _check_pixels(rows, cols, max_pixels)
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if frames > 1 and mode == "refuse":
        raise ImageLoadError(
            "multi_frame",
            f"DICOM file has {frames} frames; only single-frame 2-D images are imported "
            "(export the frame to use as a single-frame file)",
        )
    bits_alloc, bits_stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    if bits_alloc is not None and bits_alloc not in (1, 8, 16):
        raise ImageLoadError(
            "unsupported", f"DICOM images with {bits_alloc} bits allocated are not supported (1, 8 or 16)"
        )
    if bits_stored is not None and not 1 <= bits_stored <= 16:
        raise ImageLoadError(
            "unsupported", f"DICOM images with {bits_stored} bits stored are not supported (1 to 16)"
        )
    return rows, cols, frames


def dicom_size(path: str | os.PathLike, multi_frame: str | None = None) -> tuple[int, int]:
    """(H, W) from the header (read without the pixel data); raises ImageLoadError."""
    mode = _check_mode(multi_frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _read(Path(path), header_only=True)
        rows, cols, _ = _check_header(ds, None, mode)
    return rows, cols


def read_dicom(
    path: str | os.PathLike, max_pixels: int | None = None, multi_frame: str | None = None
) -> np.ndarray:
    """Decode a DICOM image into float32 HxWxC (C = 1 or 3) in [0, 1]; raises ImageLoadError only.

    ``multi_frame``: "refuse" (ImageLoadError "multi_frame") or "first"; None = ``multi_frame_mode()``.
    """
    mode = _check_mode(multi_frame)
    p = Path(path)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        # The header first, so a too large or multi-frame image is refused before its pixels are read.
        _check_header(_read(p, header_only=True), max_pixels, mode)
        ds = _read(p, header_only=False)
        _check_header(ds, max_pixels, mode)
        try:
            return _pixels(ds)
        except ImageLoadError:
            raise
        except MemoryError:
            raise ImageLoadError("too_large", "not enough memory to decode the DICOM image") from None
        except Exception as e:
            raise _pixel_error(e, ds) from None


def _pixels(ds) -> np.ndarray:
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageLoadError("unsupported", "DICOM float pixel data is not supported")
        sop = ds.get("SOPClassUID", None)
        if sop is not None and "Image" in (getattr(sop, "name", "") or ""):
            raise ImageLoadError("truncated", "DICOM file is truncated (it ends before its pixel data)")
        raise ImageLoadError("unsupported", "the DICOM file holds no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise ImageLoadError("unreadable", "DICOM image without a Photometric Interpretation")
    arr, decoded_as = _decode(ds, photometric)
    log.debug(
        "DICOM %s, %s bits stored, %s, %sx%s: decoded as %s",
        photometric,
        ds.get("BitsStored", "?"),
        _syntax(ds),
        ds.get("Columns", "?"),
        ds.get("Rows", "?"),
        decoded_as,
    )
    if decoded_as in _GRAY:
        if arr.ndim != 2:
            raise ImageLoadError("unsupported", f"{photometric} DICOM image with {arr.shape} samples")
        v = _grayscale(arr, ds)
        if decoded_as == "MONOCHROME1":
            v = 1.0 - v
        return v.astype(np.float32)[..., None]
    if decoded_as == "PALETTE COLOR":
        return _palette(arr, ds)
    if decoded_as in _YBR_TO_RGB:
        arr = convert_color_space(arr, decoded_as, "RGB")
        decoded_as = "RGB"
    if decoded_as == "RGB":
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ImageLoadError("unreadable", f"RGB DICOM image decoded to shape {arr.shape}")
        bits = _int(ds, "BitsStored", 8) or 8
        scale = float(2**bits - 1) if arr.dtype.kind in "ui" else 1.0
        return np.clip(arr.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    raise ImageLoadError(
        "unsupported",
        f"DICOM photometric interpretation {photometric} is not supported "
        "(MONOCHROME1, MONOCHROME2, RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR)",
    )


def _decode(ds, photometric: str) -> tuple[np.ndarray, str]:
    """The first frame's stored values and the photometric interpretation they are in after decoding
    (pydicom 3 converts YBR to RGB while decoding)."""
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if _PYDICOM3:
        uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if not uid:
            raise ImageLoadError("unreadable", "DICOM file without a transfer syntax in its meta information")
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise _unsupported_syntax(ds, "pydicom has no decoder for it") from None
        if not decoder.is_available:
            raise _unsupported_syntax(ds, "no decoder for it is installed") from None
        arr, meta = decoder.as_array(ds, index=0, validate=True, raw=False, **as_pixel_options(ds))
        decoded_as = str(meta.get("photometric_interpretation", photometric) or photometric).upper()
        return arr, decoded_as
    arr = ds.pixel_array  # pydicom 2.x: every frame
    if frames > 1:
        arr = arr[0]
    return arr, photometric


def _unsupported_syntax(ds, why: str) -> ImageLoadError:
    return ImageLoadError(
        "unsupported_transfer_syntax",
        f"DICOM transfer syntax {_syntax(ds)} cannot be decoded: {why} (readable here: uncompressed, "
        "deflated, RLE, JPEG baseline and JPEG 2000)",
    )


def _pixel_error(e: BaseException, ds) -> ImageLoadError:
    """An exception from pydicom's pixel decoding as an ImageLoadError. These texts concern the pixel data
    and its group 0028 elements only (the only elements read), so their first line is kept."""
    text = str(e).strip()
    first = " ".join(text.splitlines()[:2])[:300] if text else type(e).__name__
    low = text.lower()
    if (
        ("missing" in low and "dependencies" in low)  # no plugin installed for the syntax
        or "no pixel data handlers" in low  # pydicom 2.x
        or "does not support" in low  # a plugin refusing part of a syntax (12-bit JPEG in Pillow)
        or "only supported by pillow if" in low  # the same, pydicom 2.x
    ):
        return _unsupported_syntax(ds, first)
    m = re.search(r"\((\d+) bytes\) doesn't match the expected length \((\d+) bytes\)", text)  # 2.x
    short = m is not None and int(m[1]) < int(m[2])
    if isinstance(e, EOFError) or "truncat" in low or "less than expected" in low or short:
        return ImageLoadError("truncated", f"DICOM pixel data is truncated ({first})")
    return ImageLoadError("unreadable", f"cannot decode the DICOM pixel data ({type(e).__name__}: {first})")


def _grayscale(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT, then the first VOI LUT or window, else the full range: float64 in [0, 1]."""
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    window = _voi_range(ds)
    if window is not None:
        try:
            lo, hi = window
            out = np.asarray(apply_voi_lut(values.copy(), ds, index=0), dtype=np.float64)
            if hi != lo:
                return np.clip((out - lo) / (hi - lo), 0.0, 1.0)
        except ImageLoadError:
            raise
        except Exception as e:  # an invalid window (width 0, unknown function): use the full range
            log.debug("DICOM VOI LUT/window not applicable (%s); using the full range", type(e).__name__)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(values.shape)
    return np.clip(np.nan_to_num((values - lo) / (hi - lo), nan=0.0), 0.0, 1.0)


def _voi_range(ds) -> tuple[float, float] | None:
    """The output range of the VOI transform pydicom's apply_voi_lut would apply (a VOI LUT preferred to
    a window, as there), or None when the file has neither."""
    seq = ds.get("VOILUTSequence", None)
    if seq and "LUTData" in seq[0] and "LUTDescriptor" in seq[0]:
        bits = int(seq[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    modality = ds.get("ModalityLUTSequence", None)
    bits_stored = _int(ds, "BitsStored", 16) or 16
    if modality:  # PS3.3 C.11.1.1.1: unsigned, the LUT's own bit depth
        lo, hi = 0.0, float(2 ** int(modality[0].LUTDescriptor[2]) - 1)
    elif (_int(ds, "PixelRepresentation", 0) or 0) == 0:
        lo, hi = 0.0, float(2**bits_stored - 1)
    else:
        lo, hi = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
    slope, intercept = ds.get("RescaleSlope", None), ds.get("RescaleIntercept", None)
    if slope is not None and intercept is not None:
        s, b = float(slope), float(intercept)
        lo, hi = lo * s + b, hi * s + b
    return lo, hi


def _palette(arr: np.ndarray, ds) -> np.ndarray:
    if arr.ndim != 2:
        raise ImageLoadError("unsupported", f"PALETTE COLOR DICOM image with {arr.shape} samples")
    try:
        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except Exception as e:
        raise ImageLoadError(
            "unsupported", f"this PALETTE COLOR DICOM image cannot be converted ({type(e).__name__})"
        ) from None
    scale = float(2 ** (16 if bits > 8 else 8) - 1)
    return np.clip(np.asarray(rgb, dtype=np.float32) / np.float32(scale), 0.0, 1.0)
