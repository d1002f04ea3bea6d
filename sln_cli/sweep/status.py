"""Where each cell of a sweep stands, read from its run directory (and the sweep's record of failures).

done: `summary.json` says every epoch was trained; partial: a run directory with fewer epochs; pending: no run
yet; failed: the last attempt exited with an error (its log stays in `<sweep>/logs/`). A run directory whose
config differs from the cell's is an error, never overwritten.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sln_cli import config as config_lib
from sln_cli.errors import SlnError
from sln_cli.rundir import readers, runs
from sln_cli.rundir.files import atomic_write_json
from sln_cli.sweep.spec import Cell, Sweep, comparable

FAILURES = "failures.json"  # {run name: {"attempts": n, "exit_code": c, "log": path, "message": last error line}}
SWEEP_FILE = "sweep.yaml"
LOGS = "logs"
STATUSES = ("done", "partial", "pending", "failed")


@dataclass(frozen=True)
class CellState:
    status: str  # one of STATUSES
    epochs_done: int
    epochs_total: int
    branch_from: str | None  # LC runs: the twin run directory it starts (or started) from
    epochs_saved: int  # epochs branching saves (or saved) this run
    last: dict[str, Any] | None  # the last metrics line


def state_of(cell: Cell, sweep: Sweep, failures: dict[str, Any]) -> CellState:
    """The cell's status from its run directory; raises SlnError when that directory holds another config."""
    run_dir = cell.run_dir
    branch_from, saved = _branch(cell, sweep)
    if not (run_dir / runs.CONFIG).is_file():
        status = "failed" if cell.name in failures else "pending"
        return CellState(status, 0, cell.epochs, branch_from, saved, None)
    check_config(cell)
    rows = runs.read_metrics(run_dir)
    done = rows[-1]["epoch"] if rows else 0
    summary = runs.read_summary(run_dir)
    if summary is not None and summary.get("epochs", 0) >= cell.epochs and done >= cell.epochs:
        status = "done"
    else:
        status = "failed" if cell.name in failures else "partial"
    meta = runs.read_meta(run_dir) if os.path.lexists(run_dir / runs.META) else {}
    if "branched_from" in meta:
        branch_from = str(meta["branched_from"])
        saved = readers.integer(meta.get("branched_at", 0), f"{run_dir / runs.META}: branched_at", high=10**9)
    elif cell.twin is not None and done > 0:
        branch_from, saved = None, 0  # it was started from scratch
    return CellState(status, min(done, cell.epochs), cell.epochs, branch_from, saved, rows[-1] if rows else None)


def check_config(cell: Cell) -> None:
    """The run directory must hold this cell's run (runtime keys aside; more epochs in the spec may extend it)."""
    saved = config_lib.load_yaml(cell.run_dir / runs.CONFIG)
    want, have = comparable(cell.config), comparable(saved)
    if have.get("optim", {}).get("epochs", 0) <= want["optim"]["epochs"]:
        have = {**have, "optim": {**have["optim"], "epochs": want["optim"]["epochs"]}}
    # a key newer than the saved run (absent from its config.yaml) matches when the cell leaves it unset (null)
    keys = [f"{s}.{k}" for s, vals in want.items() if isinstance(vals, dict) for k, v in vals.items()
            if (have.get(s) or {}).get(k) != v]
    if keys or any(not isinstance(have.get(s), dict) for s, vals in want.items() if isinstance(vals, dict)):
        raise SlnError(f"{cell.run_dir} holds a run with another config ({', '.join(keys) or 'sections'} differ "
                       "from the sweep); change the spec back, or give the sweep another --out")


def table(sweep: Sweep, sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per cell: the `--dry-run --json` contract (name, run_dir, status, epochs_done, epochs_total,
    branch_from) plus the cell's preset, method, seed and the epochs LC branching saves."""
    failures = read_failures(sweep_dir)
    rows = []
    for cell in sweep.cells:
        state = state_of(cell, sweep, failures)
        rows.append({
            "name": cell.name, "run_dir": str(cell.run_dir), "status": state.status,
            "epochs_done": state.epochs_done, "epochs_total": state.epochs_total, "branch_from": state.branch_from,
            "preset": cell.preset, "method": cell.method, "grid": dict(cell.grid), "seed": cell.seed,
            "epochs_saved": state.epochs_saved, "keep_state_at": cell.config["run"]["keep_state_at"],
            "changes": dict(cell.changes),  # the resolved keys that differ from the preset alone
        })
    return rows


def savings(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Epochs of the whole grid, and those label-correction branching does not train again."""
    return {"runs": len(rows), "branched": sum(r["epochs_saved"] > 0 for r in rows),
            "epochs_total": sum(r["epochs_total"] for r in rows), "epochs_saved": sum(r["epochs_saved"] for r in rows)}


def read_failures(sweep_dir: Path) -> dict[str, Any]:
    """failures.json, checked: {run name: {"attempts": int, ...}}; an SlnError names what is damaged."""
    path = sweep_dir / FAILURES
    if not os.path.lexists(path):
        return {}
    failures = readers.mapping(readers.read_json(path, what="sweep's failures.json"), str(path))
    for name, record in failures.items():
        readers.mapping(record, f"{path}: {name}")
        readers.integer(record.get("attempts"), f"{path}: {name}.attempts", high=10**6)
    return failures


def record_failure(sweep_dir: Path, name: str, exit_code: int, log: Path, message: str) -> None:
    failures = read_failures(sweep_dir)
    previous = failures.get(name, {}).get("attempts", 0)
    failures[name] = {"attempts": previous + 1, "exit_code": exit_code, "log": str(log), "message": message}
    atomic_write_json(sweep_dir / FAILURES, failures)


def clear_failure(sweep_dir: Path, name: str) -> None:
    failures = read_failures(sweep_dir)
    if failures.pop(name, None) is not None:
        atomic_write_json(sweep_dir / FAILURES, failures)


def log_path(sweep_dir: Path, cell: Cell) -> Path:
    return sweep_dir / LOGS / f"{cell.name}.log"


def _branch(cell: Cell, sweep: Sweep) -> tuple[str | None, int]:
    if cell.twin is None or cell.correction is None:  # only LC cells have a twin
        return None, 0
    return str(sweep.cell(cell.twin).run_dir), int(cell.correction)
