"""The `sln` command line, the only package that knows Typer: `app` (the root, `app.py`) and one module per
command group, each command body parse -> one call into the library -> print. No torch at import time."""

from __future__ import annotations

import importlib
import sys

from sln_cli.cli.app import app

# Each module registers its commands on `app` when imported: this order is the order of `sln --help`.
COMMAND_MODULES = ("corrupt", "catalog", "train", "sweep", "report", "tune", "evaluate", "analyze", "bench")
for _module in COMMAND_MODULES:
    importlib.import_module(f"sln_cli.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    """The console script (`sln`, `python -m sln_cli`): every error one `error:` line, exit code 1 (`app.py`)."""
    code = app(standalone_mode=False)
    sys.exit(code if isinstance(code, int) else 0)
