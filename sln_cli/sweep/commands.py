"""`sln sweep`: load the spec, then show the plan (--dry-run), run it here, or submit it to Slurm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sln_cli.errors import SlnError
from sln_cli.slurm import SlurmOptions as SlurmOptions  # where it lived first: `sln sweep` and `sln tune` share it
from sln_cli.sweep import spec as spec_lib
from sln_cli.sweep import status as status_lib


def load(spec: str, *, out: Path | None, seeds: str | None, overrides: list[str]) -> tuple[spec_lib.Sweep, Path]:
    sweep = spec_lib.load(spec, out=out, seeds=seeds, overrides=overrides)
    return sweep, out if out is not None else Path("sweeps") / sweep.name


def dry_run(sweep: spec_lib.Sweep, sweep_dir: Path) -> dict[str, Any]:
    rows = status_lib.table(sweep, sweep_dir)
    return {"rows": rows, "savings": status_lib.savings(rows)}


def parse_devices(text: str) -> tuple[str, ...]:
    devices = tuple(d.strip() for d in text.split(",") if d.strip())
    if not devices or any(d != "cpu" and not d.startswith(("cuda", "mps")) for d in devices):
        raise SlnError(f"--devices takes cpu or a list such as cuda:0,cuda:1; got {text!r}")
    if "cpu" in devices and len(devices) > 1:
        raise SlnError("--devices cpu cannot be mixed with GPUs; give cpu alone or a list of GPUs")
    return devices


def render_dry_run(plan: dict[str, Any], console: Console) -> None:
    table = Table(title="sweep plan")
    for column in ("run", "status", "epochs", "starts from", "differs from its preset"):
        table.add_column(column, justify="right" if column == "epochs" else "left")
    for row in plan["rows"]:
        start = f"{Path(row['branch_from']).name} @ {row['epochs_saved']}" if row["branch_from"] else ""
        changes = ", ".join(f"{key}={value}" for key, value in row.get("changes", {}).items()) or "-"
        table.add_row(row["name"], row["status"], f"{row['epochs_done']}/{row['epochs_total']}", start, changes)
    console.print(table)
    console.print(savings_line(plan), markup=False, highlight=False)


def savings_line(plan: dict[str, Any]) -> str:
    s = plan["savings"]
    counts = {k: sum(r["status"] == k for r in plan["rows"]) for k in status_lib.STATUSES}
    share = s["epochs_saved"] / s["epochs_total"] if s["epochs_total"] else 0.0
    kept = ", ".join(map(str, sorted({e for r in plan["rows"] for e in r["keep_state_at"]})))
    at = f" at epoch {kept}" if kept else ""
    return (f"{s['runs']} runs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}), "
            f"{s['epochs_total']:,} epochs in all; label-correction branching: {s['branched']} runs start from "
            f"their twin's state{at}, saving {s['epochs_saved']:,} epochs "
            f"({share:.1%} of the grid)")


def render_outcome(outcome: dict[str, Any], console: Console) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(outcome["counts"].items()))
    console.print(f"sweep {outcome['sweep_dir']}: {counts} in {outcome['seconds']:.0f} s", markup=False,
                  highlight=False)
    bad = [name for name, result in outcome["runs"].items() if result != "done"]
    if bad:
        console.print(f"not done: {', '.join(bad)}; see {outcome['sweep_dir']}/logs/ and rerun the same command",
                      markup=False, highlight=False)
    console.print(f"table: sln report {outcome['sweep_dir']}", markup=False, highlight=False)
