"""Atomic file writes, so that an error or a kill never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sln_cli.errors import SlnError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    except OSError as exc:
        raise SlnError(f"cannot write {path}: {exc.strerror}; choose a writable output path") from exc
    try:
        with os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):  # write, fsync or rename: full disk, quota
            raise SlnError(f"cannot write {path}: {exc.strerror or exc}; the previous file, if any, is kept; "
                           "free some space or choose another output path") from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """`obj` as indented JSON with a final newline, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def json_text(obj: Any) -> str:
    """`obj` as valid JSON for a reader other than Python: NaN and ±Infinity (which `json.dumps` writes as the
    invalid tokens NaN/Infinity) become null, numpy scalars plain numbers; indented, with a final newline."""
    return json.dumps(finite(obj), indent=2, allow_nan=False) + "\n"


def finite(obj: Any) -> Any:
    """A copy of `obj` with every non-finite float replaced by None (null: "no value", e.g. a loss that diverged)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(value) for value in obj]
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "ndim", None) == 0:  # a numpy scalar
        return finite(obj.item())
    return obj
