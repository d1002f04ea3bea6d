"""A bounded reader for CSV files of integers (label files): any bytes give one line, memory stays ~ the file.

Plain files (digits, commas, minus signs, newlines) are parsed vectorised, one 256 KiB slice at a time, into a
preallocated int64 array; anything else (quotes, spaces, odd encodings) goes through the `csv` module one
row at a time, with its field-size limit as the bound. Every problem is an `SlnError` naming the line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sln_cli.errors import SlnError

MAX_BYTES = 1 << 30  # 1 GiB: ~70M rows of `label,label_noisy`, far beyond any dataset sln reads
_MAX_HEADER = 1 << 16
_MAX_DIGITS = 18  # every value below 10^18 fits int64 exactly; classes and image indices are far smaller
_SLICE = 1 << 18  # bytes of text per vectorised step: its int64 temporaries stay ~16 MiB
_POW10 = 10 ** np.arange(_MAX_DIGITS, dtype=np.int64)
_COMMA, _NEWLINE, _MINUS, _CR = 44, 10, 45, 13
_PLAIN = np.zeros(256, dtype=bool)
_PLAIN[[ord(c) for c in "0123456789,-\n\r"]] = True


def read_header(path: Path, *, max_bytes: int = MAX_BYTES) -> tuple[list[str], bytes]:
    """The header cells and the raw body of a CSV (whole file read once: memory ~ its size)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SlnError(f"{path} is {size / 2**20:.0f} MiB; label files over {max_bytes / 2**20:.0f} MiB are "
                           "refused: is this the right file?")
        with open(path, "rb") as f:
            first = f.readline(_MAX_HEADER)
            body = f.read(max_bytes)
    except OSError as exc:
        raise SlnError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(first) == _MAX_HEADER and not first.endswith(b"\n"):
        raise SlnError(f"{path} has no header line in its first {_MAX_HEADER} bytes; is it a label CSV?")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SlnError(f"{path} line 1 is not UTF-8 text; is it a label CSV?") from None
    try:
        header = next(csv.reader([text.rstrip("\r\n")]), [])
    except csv.Error as exc:  # e.g. a lone carriage return: lines end in \n or \r\n
        raise SlnError(f"{path} line 1 is not a CSV header ({exc}); is it a label CSV?") from None
    return [cell.strip() for cell in header], body


def count_rows(body: bytes) -> int:
    """Rows of the body, without the blank lines at its end (cheap: one byte count, no copy)."""
    end = _content_end(body)
    return 0 if end == 0 else body.count(b"\n", 0, end) + 1


def parse_rows(path: Path, body: bytes, header: Sequence[str], wanted: Sequence[int]) -> np.ndarray:
    """(len(wanted), rows) int64: the `wanted` columns of every row, each column contiguous; line numbers in
    errors count the header."""
    end = _content_end(body)
    out = np.empty((len(wanted), count_rows(body)), dtype=np.int64)
    start, row = 0, 0
    while start < end:
        stop = body.find(b"\n", start + _SLICE, end)
        stop = end if stop < 0 else stop + 1
        text = body[start:stop]  # a copy of one slice only
        if not _PLAIN[np.frombuffer(text, dtype=np.uint8)].all():
            return _parse_with_csv(path, body[:end], len(header), wanted, out)
        block = _parse_plain(path, text, len(header), first_line=row + 2)
        out[:, row:row + len(block)] = block[:, list(wanted)].T
        start, row = stop, row + len(block)
    return out


def _content_end(body: bytes) -> int:
    """Where the body ends once trailing blank lines and spaces are dropped (scanned back in 64 KiB pieces)."""
    end = len(body)
    while end > 0:
        piece = body[max(0, end - 65536):end]
        kept = len(piece.rstrip(b"\r\n\t "))
        if kept:
            return end - len(piece) + kept
        end -= len(piece)
    return 0


def _parse_plain(path: Path, text: bytes, num_fields: int, *, first_line: int) -> np.ndarray:
    """Vectorised: a slice of whole lines of digits, commas and minus signs -> (lines, num_fields) int64."""
    b = np.frombuffer(text, dtype=np.uint8)
    b = b[b != _CR]
    if b[-1] != _NEWLINE:
        b = np.append(b, np.uint8(_NEWLINE))
    sep = (b == _COMMA) | (b == _NEWLINE)
    ends = np.flatnonzero(sep)  # one per field
    row_ends = np.flatnonzero(b[ends] == _NEWLINE)  # index, among fields, of each row's last field
    per_row = np.diff(row_ends, prepend=-1)
    if (bad := np.flatnonzero(per_row != num_fields)).size:
        raise SlnError(_fields_error(path, first_line + int(bad[0]), int(per_row[bad[0]]), num_fields))
    starts = np.concatenate([[0], ends[:-1] + 1])
    negative = b[starts] == _MINUS
    digits = ends - starts - negative
    row_of_field = np.repeat(np.arange(len(row_ends)), per_row)
    is_digit = (b >= 48) & (b <= 57)
    stray = ~sep & ~is_digit
    stray[starts[negative]] = False  # a leading minus is the only non-digit allowed
    if (bad := np.flatnonzero((digits < 1) | (digits > _MAX_DIGITS))).size or stray.any():
        field = int(bad[0]) if bad.size else int(np.searchsorted(ends, np.flatnonzero(stray)[0]))
        raise SlnError(_value_error(path, first_line + int(row_of_field[field])))
    field_of_byte = np.cumsum(sep) - sep
    power = np.where(is_digit, ends[field_of_byte] - np.arange(len(b)) - 1, 0)
    values = np.add.reduceat(np.where(is_digit, (b - 48).astype(np.int64) * _POW10[power], 0), starts)
    values[negative] *= -1
    return values.reshape(len(row_ends), num_fields)


def _parse_with_csv(path: Path, body: bytes, num_fields: int, wanted: Sequence[int], out: np.ndarray) -> np.ndarray:
    """Row by row through the csv module, for files with quotes, spaces or other characters."""
    try:
        reader = csv.reader(io.TextIOWrapper(io.BytesIO(body), encoding="utf-8", newline=""))
        line = 1
        for line, row in enumerate(reader, start=2):  # noqa: B007 (line is reported after the loop)
            if len(row) != num_fields or line - 2 >= out.shape[1]:  # a lone \r splits lines csv's way, not ours
                raise SlnError(_fields_error(path, line, len(row), num_fields))
            out[:, line - 2] = [_integer(row[i], path, line) for i in wanted]
    except UnicodeDecodeError as exc:
        raise SlnError(f"{path} is not UTF-8 text (byte {exc.start} of the data after the header); is it a "
                       "label CSV?") from None
    except csv.Error as exc:
        raise SlnError(f"{path} line {line + 1} is not valid CSV ({exc}); regenerate or re-download it") from None
    return out[:, :line - 1]


def _integer(cell: str, path: Path, line: int) -> int:
    text = cell.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > _MAX_DIGITS:
        raise SlnError(_value_error(path, line))
    return int(text)


def _fields_error(path: Path, line: int, found: int, expected: int) -> str:
    return (f"{path} line {line} has {found} fields, the header has {expected}: the file is malformed or "
            "truncated; regenerate or re-download it")


def _value_error(path: Path, line: int) -> str:
    return (f"{path} line {line} holds a value that is not an integer class (at most {_MAX_DIGITS} digits); "
            "the file is malformed; regenerate or re-download it")
