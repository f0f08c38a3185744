"""The text of a CSV manifest: decoding, delimiter, and records with their data-row numbers.

Kept apart from data.py (which checks what the rows say) because this is where arbitrary bytes meet the
csv module: any encoding the user's spreadsheet wrote, any delimiter, cells of any length.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

log = logging.getLogger(__name__)

MAX_CELL = 131_072  # characters in one CSV cell (the csv module's default field limit)


def decode_csv(raw: bytes, csv_path: Path) -> str:
    """UTF-8 (with or without a BOM), else Windows-1252 as Excel writes it, else Latin-1 (any bytes)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for enc in ("cp1252", "latin-1"):
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        log.warning("%s is not UTF-8; read it as %s", csv_path, enc)
        return text
    raise ValueError(f"cannot decode {csv_path} as text")  # unreachable: latin-1 decodes any bytes


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
