"""The sweep a command asks for: its spec loaded with the sweep directory, the plan of --dry-run (every cell's state
and what label-correction branching saves), and the devices its runs share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from sln_cli.errors import SlnError
from sln_cli.sweep import spec as spec_lib
from sln_cli.sweep import status as status_lib


class Plan(TypedDict):
    rows: list[dict[str, Any]]  # one per cell, `status.table`'s rows (the JSON of `sln sweep --dry-run --json`)
    savings: dict[str, Any]  # runs, epochs_total, branched, epochs_saved (`status.savings`)


def load(spec: str, *, out: Path | None, seeds: str | None, overrides: list[str]) -> tuple[spec_lib.Sweep, Path]:
    """The sweep and its directory (default sweeps/<name>)."""
    sweep = spec_lib.load(spec, out=out, seeds=seeds, overrides=overrides)
    return sweep, out if out is not None else Path("sweeps") / sweep.name


def dry_run(sweep: spec_lib.Sweep, sweep_dir: Path) -> Plan:
    rows = status_lib.table(sweep, sweep_dir)
    return {"rows": rows, "savings": status_lib.savings(rows)}


def parse_devices(text: str) -> tuple[str, ...]:
    devices = tuple(d.strip() for d in text.split(",") if d.strip())
    if not devices or any(d != "cpu" and not d.startswith(("cuda", "mps")) for d in devices):
        raise SlnError(f"--devices takes cpu or a list such as cuda:0,cuda:1; got {text!r}")
    if "cpu" in devices and len(devices) > 1:
        raise SlnError("--devices cpu cannot be mixed with GPUs; give cpu alone or a list of GPUs")
    return devices
