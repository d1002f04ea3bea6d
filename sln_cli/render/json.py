"""The one JSON emitter of every `--json`: a result (dataclass, TypedDict, list of them) printed as strict JSON,
NaN and ±Infinity as null, numpy values as plain numbers, paths as strings; indented, one final newline."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, TextIO


def plain(value: Any) -> Any:
    """`value` as JSON-ready Python: dataclasses and mappings become dicts, sequences and arrays lists, numpy
    scalars numbers, paths strings, and every non-finite float None (JSON has no NaN: a reader other than
    Python's refuses the token)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # a numpy array or scalar (numpy stays unimported)
        return plain(value.tolist())
    return value


def text(result: Any) -> str:
    """The JSON text `emit` prints (`allow_nan=False`: a non-finite number that escaped `plain` is a bug)."""
    return json.dumps(plain(result), indent=2, allow_nan=False) + "\n"


def emit(result: Any, file: TextIO | None = None) -> None:
    """Print `result` as JSON on stdout (the only way a command prints its `--json`)."""
    print(text(result), end="", file=file or sys.stdout)
