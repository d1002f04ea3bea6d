"""Bounded readers for the JSON, JSON-lines and `.npy` files sln reads back (run directories, sweeps, matrices).

Every file is untrusted: only a regular file is read (a FIFO, a device or a link to one is refused without
blocking), a size cap per kind of file is checked on the open file before reading, JSON nesting is bounded,
long files are streamed, and each problem is one `SlnError` naming the file (and the line).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sln_cli.errors import SlnError

if TYPE_CHECKING:  # numpy is imported where it is used: the YAML and JSON readers need none
    import numpy as np

MAX_JSON_BYTES = 1 << 20  # summary.json, meta.json, failures.json: a few KiB each
MAX_JSONL_BYTES = 64 << 20  # metrics.jsonl: ~1 KiB per epoch, so 64 MiB is ~60,000 epochs
MAX_LINE_BYTES = 64 << 10  # one metrics row is well under 1 KiB
MAX_DEPTH = 32  # sln's JSON files nest 3 deep at most
MAX_NPY_BYTES = 8 << 30  # probs.npy of a 1M-sample, 1000-class run is 4 GB (float32)
MAX_INT = 2**53  # integers sln writes are counts, epochs and seeds; bigger ones are damage


def open_regular(path: Path, *, what: str, max_bytes: int) -> IO[bytes]:
    """`path` opened for reading in binary, only if it is a regular file of at most `max_bytes`.

    Opened with O_NONBLOCK so that a FIFO without a writer cannot hang us; the type and size are checked on
    the open descriptor (no race with a swap of the file in between)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SlnError(f"{path} does not exist; give a {what}") from None
    except OSError as exc:
        raise SlnError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SlnError(f"{path} is not a regular file (a {_kind(info.st_mode)}); a {what} is a plain file")
        if info.st_size > max_bytes:
            raise SlnError(f"{what} {path} is {_size(info.st_size)}, over the {_size(max_bytes)} a {what} can be: "
                           "is it damaged, or the wrong file?")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path, *, what: str, max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes` (a file growing while read is cut at the cap)."""
    with open_regular(path, what=what, max_bytes=max_bytes) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise SlnError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise SlnError(f"{what} {path} grew past {_size(max_bytes)} while it was read; is something writing it?")
    return data


def read_json(path: Path, *, what: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """One JSON document from a regular file: size-capped, UTF-8, nesting at most `max_depth`."""
    data = read_bytes(path, what=what, max_bytes=max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SlnError(f"{what} {path} is not UTF-8 text (byte {exc.start}); it is damaged") from None
    return loads_json(text, where=f"{what} {path}", max_depth=max_depth)


def loads_json(text: str, *, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text nested at most `max_depth` deep, with integers of at most 4,300 digits (Python's own limit)
    and NaN/Infinity allowed. The parser itself stops a deep document (CPython's C scanner raises RecursionError
    at its recursion limit, ~1,000 levels, in linear time); the tighter bound is checked on the result."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise SlnError(f"{where} nests deeper than {max_depth} levels; it is damaged or not sln's") from None
    except ValueError as exc:  # JSONDecodeError, or an integer past 4,300 digits
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "an integer of over 4,300 digits"
        raise _NotJson(f"{where} is not valid JSON ({reason}); it is damaged") from None
    if depth(value) > max_depth:
        raise SlnError(f"{where} nests deeper than {max_depth} levels; it is damaged or not sln's")
    return value


def depth(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value (walked with a stack: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class _NotJson(SlnError):
    """Text that is not JSON (a line cut off by a kill, when it is the last line of a JSON-lines file)."""


def read_jsonl(path: Path, *, what: str, max_bytes: int = MAX_JSONL_BYTES,
               max_line: int = MAX_LINE_BYTES) -> list[tuple[int, Any]]:
    """(line number, value) of each line of a JSON-lines file, read line by line (memory ~ the values, never a
    line past `max_line`). A last line that is not JSON is dropped (a kill cut it off); elsewhere it is an
    SlnError naming the line."""
    values: list[tuple[int, Any]] = []
    pending: tuple[int, bytes] | None = None
    with open_regular(path, what=what, max_bytes=max_bytes) as f:
        number = 0
        while True:
            try:
                line = f.readline(max_line + 1)
            except OSError as exc:
                raise SlnError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
            if not line:
                break
            number += 1
            if len(line) > max_line:
                raise SlnError(f"{what} {path} line {number} is over {_size(max_line)}; the file is damaged")
            if not line.strip():
                continue
            if pending is not None:
                values.append((pending[0], _parse_line(path, what, *pending)))
            pending = (number, line)
    if pending is not None:
        try:
            values.append((pending[0], _parse_line(path, what, *pending)))
        except _NotJson:
            pass
    return values


def _parse_line(path: Path, what: str, number: int, line: bytes) -> Any:
    where = f"{what} {path} line {number}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _NotJson(f"{where} is not UTF-8 text; the file is damaged") from None
    return loads_json(text, where=where)


def read_npy(path: Path, *, what: str, max_bytes: int = MAX_NPY_BYTES) -> np.ndarray:
    """A `.npy` array: plain numeric dtype (no pickles), and a header whose shape fits the file's size, checked
    before any memory is allocated for it."""
    import numpy as np

    with open_regular(path, what=what, max_bytes=max_bytes) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):  # 3.0 only differs for structured dtypes, which sln never reads
                raise ValueError(f"unsupported .npy version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f, max_header_size=10_000)
        except (ValueError, OSError, SyntaxError, TypeError) as exc:
            raise SlnError(f"{what} {path} is not a readable .npy file ({str(exc)[:120]}); it is damaged") from None
        if dtype.hasobject or dtype.kind not in "biuf":
            raise SlnError(f"{what} {path} holds {dtype} values; sln reads plain numeric arrays only")
        count = math.prod(shape)
        size = os.fstat(f.fileno()).st_size
        if count * dtype.itemsize > size - f.tell():
            raise SlnError(f"{what} {path} claims shape {shape} ({_size(count * dtype.itemsize)}) but holds "
                           f"{_size(size - f.tell())} of data; it is truncated or damaged")
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SlnError(f"{what} {path} is not a readable .npy file ({str(exc)[:120]})") from None


MAX_MATRIX_TEXT_BYTES = 64 << 20  # a K×K matrix as text: K = 1000 is ~20 MB


def read_matrix(path: Path, *, what: str, max_bytes: int = MAX_NPY_BYTES) -> np.ndarray:
    """A real, non-empty, finite 2-D float64 array from `.npy` (`read_npy`) or comma/whitespace-separated text;
    numpy's own warnings (an empty file) never print: each problem is one SlnError naming the file."""
    import warnings

    import numpy as np

    if path.suffix.lower() == ".npy":
        array = read_npy(path, what=what, max_bytes=max_bytes)
    else:
        try:
            text = read_bytes(path, what=what, max_bytes=min(max_bytes, MAX_MATRIX_TEXT_BYTES)).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SlnError(f"{what} {path} is not UTF-8 text; give a numeric .csv or a .npy") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # loadtxt warns on an empty file: refused below in our words
                array = np.loadtxt(text.splitlines(), delimiter="," if "," in text else None, ndmin=2)
        except ValueError as exc:
            raise SlnError(f"cannot read a matrix from {what} {path} ({str(exc)[:120]}); give a numeric .csv or "
                           "a .npy") from None
    if array.ndim != 2 or array.size == 0:
        raise SlnError(f"{what} {path} has shape {array.shape}; a non-empty 2-D matrix is needed")
    if not np.isfinite(array).all():
        raise SlnError(f"{what} {path} holds NaN or infinite entries; every entry must be a finite number")
    return array.astype(np.float64, copy=False)


# --------------------------------------------------------------------------------------------------
# Schema checks of values read back
# --------------------------------------------------------------------------------------------------


def number(value: Any, where: str, *, allow_none: bool = False) -> float | None:
    """A JSON number (not a bool, an integer below 2^53): as float; None only when `allow_none`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, int)
                                                                         and abs(value) > MAX_INT):
        raise SlnError(f"{where} is {_show(value)}, not a number; the file is damaged")
    return float(value)


def integer(value: Any, where: str, *, low: int = 0, high: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SlnError(f"{where} is {_show(value)}, not an integer in [{low}, {high}]; the file is damaged")
    return value


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SlnError(f"{where} is {_show(value)}, not a JSON object; the file is damaged")
    return value


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, str | int | float | bool | type(None)):
        return json.dumps(value)[:40]
    return f"a {type(value).__name__}"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n} bytes"
