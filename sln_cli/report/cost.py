"""What a cell and the grid cost: wall time, device-hours and training images/s, read beside the accuracy.

Each epoch's metrics line records its wall time (`wall_seconds`: correction, training, recording, evaluation) and
the processes that ran it (`devices`); runs made before that have images/s only, and their time shows as n/a.
A cell's cost is its finished runs' (an LC run's epochs before its correction included: what the method costs);
the grid total counts every epoch once (an LC run branched from its twin did not train the twin's epochs).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sln_cli.errors import SlnError
from sln_cli.rundir import runs

if TYPE_CHECKING:
    from sln_cli.report.collect import Run



def of_runs(members: list[Run]) -> dict[str, Any]:
    """The cell's cost keys: wall_seconds, device_hours (None when a run predates their recording, or no runs)
    and images_per_second (mean over its runs' epochs)."""
    walls = [wall for wall in (_wall(run.rows) for run in members) if wall is not None]
    known = bool(members) and len(walls) == len(members)
    speeds = [row["images_per_second"] for run in members for row in run.rows
              if _number(row.get("images_per_second"))]
    return {
        "wall_seconds": sum(w[0] for w in walls) if known else None,
        "device_hours": sum(w[1] for w in walls) / 3600 if known else None,
        "images_per_second": sum(speeds) / len(speeds) if speeds else None,
    }


def grid_total(found: list[Run]) -> dict[str, Any]:
    """Every run's epochs once (finished or not, branched prefixes left to the twin that trained them):
    runs, wall_seconds, device_hours, and `runs_without_times` (made before times were recorded)."""
    wall = device_seconds = 0.0
    missing = 0
    for run in found:
        branched_at = _branched_at(run)
        measured = _wall([row for row in run.rows if row.get("epoch", 0) > branched_at])
        if measured is None:
            missing += 1
            continue
        wall, device_seconds = wall + measured[0], device_seconds + measured[1]
    return {"runs": len(found), "wall_seconds": wall, "device_hours": device_seconds / 3600,
            "runs_without_times": missing}


def hours_text(seconds: float | None) -> str:
    """`1:02:03` (hours:minutes:seconds), or n/a."""
    if seconds is None:
        return "n/a"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def cost_text(cell: dict[str, Any]) -> str:
    """`cost 0:01:02, 0.017 device-h, 1234 img/s` for a table cell."""
    if not cell.get("n_runs"):
        return ""
    hours = "n/a" if cell.get("device_hours") is None else f"{cell['device_hours']:.3g}"
    speed = "n/a" if cell.get("images_per_second") is None else f"{cell['images_per_second']:.0f}"
    return f"cost {hours_text(cell.get('wall_seconds'))}, {hours} device-h, {speed} img/s"


def total_text(total: dict[str, Any]) -> str:
    """The note under the table: the grid's total."""
    text = (f"grid total: {total['runs']} runs, {hours_text(total['wall_seconds'])} wall, "
            f"{total['device_hours']:.3g} device-hours (each epoch once; cost = wall time of the runs' epochs)")
    if total["runs_without_times"]:
        text += f"; {total['runs_without_times']} runs made before times were recorded are n/a"
    return text


def _wall(rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(wall seconds, device seconds) of these epochs, or None when one lacks its recorded time."""
    if any(not _number(row.get("wall_seconds")) for row in rows):
        return None
    wall = sum(row["wall_seconds"] for row in rows)
    devices = sum(row["wall_seconds"] * (row["devices"] if _number(row.get("devices")) else 1) for row in rows)
    return float(wall), float(devices)


def _branched_at(run: Run) -> int:
    """The epoch an LC run was branched at from its twin's kept state (meta.json), else 0."""
    try:
        value = runs.read_meta(run.run_dir).get("branched_at", 0)  # bounded and checked as every run file
    except SlnError:  # no meta.json, or a damaged one: the run counts as trained from scratch
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
