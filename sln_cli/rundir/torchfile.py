"""Reading `.pt` files safely: `torch.load(weights_only=True)` only, and errors that never advise otherwise.

A `.pt` file is a pickle; unpickled without restriction it can run any code. `weights_only=True` builds
tensors, containers and the types allow-listed here, and refuses everything else before it is built.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sln_cli.errors import SlnError


def load(path: Path, *, what: str, map_location: Any = "cpu", allowed: Sequence[Any] = ()) -> Any:
    """The content of `path` (a `what`, for messages); an SlnError naming the path for anything unreadable."""
    import torch

    if not Path(path).is_file():
        raise SlnError(f"{path} does not exist or is not a file; give a {what}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" for a bare pickle: our line says why
            warnings.simplefilter("ignore")
            if not allowed:
                return torch.load(path, map_location=map_location, weights_only=True)
            with torch.serialization.safe_globals(list(allowed)):  # torch >= 2.5
                return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise SlnError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # torch raises several types for truncated, foreign or hostile files
        raise SlnError(f"{path} is not a readable {what} ({reason(exc)}); it was not loaded") from None


def reason(exc: BaseException) -> str:
    """Why torch refused a file, in our words: torch's own text suggests `weights_only=False`, which we never do."""
    text = str(exc)
    if "weights_only" in text or "Weights only" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        name = found[1] if found else "a type"
        return (f"it asks to build {name}, which sln never saves; a .pt file can run code when unpickled, so "
                "only tensors and plain data are accepted")
    if isinstance(exc, EOFError) or "EOF" in text or "central directory" in text:
        return "it ends early: truncated?"
    first = text.strip().splitlines()[0][:160] if text.strip() else ""
    return exc.__class__.__name__ + (f": {first}" if first else "")
