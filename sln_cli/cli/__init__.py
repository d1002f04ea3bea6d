"""The `sln` command line, the only package that knows Typer: `app` (the root, `app.py`) and one module per
command group, each command body parse -> one call into the library -> print. No torch at import time."""

from __future__ import annotations

import sys

# Each module registers its commands on `app` when imported; the order here is the order of `sln --help`.
from sln_cli.cli import analyze, bench, catalog, corrupt, evaluate, report, sweep, train, tune  # noqa: F401, I001
from sln_cli.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """The console script (`sln`, `python -m sln_cli`): every error one `error:` line, exit code 1 (`app.py`)."""
    code = app(standalone_mode=False)
    sys.exit(code if isinstance(code, int) else 0)
