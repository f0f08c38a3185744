"""The text of a CSV manifest: decoding, delimiter, and records with their data-row numbers.

Kept apart from data.py (which checks what the rows say) because this is where arbitrary bytes meet the
csv module: any encoding the user's spreadsheet wrote, any delimiter, cells of any length.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from pathlib import Path

log = logging.getLogger(__name__)

MAX_CELL = 131_072  # characters in one CSV cell (the csv module's default field limit)


#: byte-order marks that name a Unicode encoding (UTF-32's before UTF-16's: they begin alike)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_csv(raw: bytes, csv_path: Path) -> str:
    """UTF-8 (with or without a BOM), or UTF-16/UTF-32 named by their BOM. Anything else is refused, naming
    the line and the byte: read as another encoding, labels would silently turn into other labels and
    paths into missing files (Shift-JIS, or one Windows-1252 byte in a UTF-8 file)."""
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        at = e.start
        if encoding == "utf-8":
            line = raw.count(b"\n", 0, at) + 1
            column = at - (raw.rfind(b"\n", 0, at) + 1) + 1
            where = f"line {line}, byte {column} (0x{raw[at]:02X})"
        else:
            where = f"byte {at} of the file"
        raise ValueError(
            f"{Path(csv_path).name} is not {'UTF-8' if encoding == 'utf-8' else encoding.upper()} text: {where} "
            'is not a character in it. Save the manifest as UTF-8 (Excel: "CSV UTF-8"; LibreOffice: character '
            'set "Unicode (UTF-8)") and import it again; nothing was imported.'
        ) from None


def _norm_header(cells: list[str]) -> list[str]:
    return [c.strip().lstrip("\ufeff").strip().lower() for c in cells]


def pick_delimiter(text: str) -> str:
    """Comma, or semicolon/tab when the header only makes sense split that way (European Excel)."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    for delim in (",", ";", "\t"):
        header = _norm_header(next(csv.reader([first], delimiter=delim), []))
        if {"path", "label"} <= set(header):
            return delim
    return ","


def read_records(text: str, delim: str) -> tuple[list[str], list[tuple[int, list[str] | None, str]]]:
    """(normalised header, [(data row number, cells or None on a parse error, error text)]).

    The csv module's own field limit would stop in the middle of a record whose cell is too long, and the
    rest of a multi-line record would then read as a row of its own; so the whole text (already in memory)
    is parsed, and a row with a cell over MAX_CELL characters is reported instead.
    """
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        header, records = _parse_records(text, delim)
    finally:
        csv.field_size_limit(limit)
    for i, (row, cells, _) in enumerate(records):
        longest = max((len(c) for c in cells or ()), default=0)
        if longest > MAX_CELL:
            records[i] = (row, None, f"a cell of {longest:,} characters (at most {MAX_CELL:,} are read)")
    return header, records


def _parse_records(text: str, delim: str) -> tuple[list[str], list[tuple[int, list[str] | None, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    header: list[str] | None = None
    records: list[tuple[int, list[str] | None, str]] = []
    row = 0
    while True:
        before = reader.line_num
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if header is None:
                raise ValueError(f"cannot parse the CSV header: {e}") from None
            row += 1
            records.append((row, None, str(e)))
            if reader.line_num == before:  # no progress: stop rather than loop
                break
            continue
        if header is None:
            if not any(c.strip() for c in cells):
                continue  # blank lines before the header
            header = _norm_header(cells)
            continue
        row += 1
        records.append((row, cells, ""))
    return header or [], records
