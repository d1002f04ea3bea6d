"""Plugins: modules named in an environment variable ($SLN_METHODS, $SLN_DATASETS), imported once, each registering
what it defines (a method, a dataset) when imported."""

from __future__ import annotations

import importlib
import os

from sln_cli.errors import SlnError

_LOADED: set[str] = set()


def load(variable: str) -> None:
    """Import the comma-separated modules in $`variable`; one that does not import is a one-line error."""
    for module in filter(None, (m.strip() for m in os.environ.get(variable, "").split(","))):
        if module in _LOADED:
            continue
        _LOADED.add(module)
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SlnError(f"${variable} names module {module!r}, which does not import ({exc}); "
                           f"fix the name or its PYTHONPATH") from None
