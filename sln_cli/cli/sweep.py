"""`sln sweep`: load the spec, then show the plan (--dry-run), run it here, or submit it to Slurm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sln_cli.cli.app import (
    GpusPerJobOption,
    JsonOption,
    Launcher,
    LauncherOption,
    PartitionOption,
    RunsPerJobOption,
    TimeMinOption,
    app,
    console,
    emit,
    flag,
    slurm_options,
)
from sln_cli.errors import SlnError


@app.command()
def sweep(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="A sweep name (see `sln presets`) or a YAML file.")],
    out: Annotated[Path | None, typer.Option(help="Sweep directory (default sweeps/<name>).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds instead of the spec's: 0,1,2 or 0-4.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key in every run: section.key=value (repeatable).")
    ] = None,
    jobs: Annotated[int | None, typer.Option(help="Runs at once (default: one per device slot; CPU: 1).")] = None,
    devices: Annotated[str, typer.Option(help="cpu, or GPUs such as cuda:0,cuda:1.")] = "cpu",
    per_device: Annotated[int, typer.Option(help="Runs sharing one GPU.")] = 1,
    cpu_threads: Annotated[
        int | None, typer.Option(help="Threads per CPU run (default: the cores divided between the jobs).", min=1)
    ] = None,
    retries: Annotated[int, typer.Option(help="Restarts of a failing run in this invocation.", min=0)] = 1,
    dry_run: Annotated[bool, flag(help="Show every run and its state; run nothing.")] = False,
    json_output: JsonOption = False,
    launcher: LauncherOption = Launcher.local,
    partition: PartitionOption = None,
    time_min: TimeMinOption = 24 * 60,
    gpus_per_job: GpusPerJobOption = 1,
    runs_per_job: RunsPerJobOption = 1,
) -> None:
    """Run a grid of runs (presets × methods × overrides × seeds); rerun to continue: finished runs are skipped,
    partial ones resumed, failed ones restarted. Label-correction runs start from their twin's state.

    --json prints the plan of --dry-run (the runs as a JSON list).

    Examples:

      $ sln sweep quickstart-sweep --jobs 2 --out runs/sweep
      $ sln sweep quickstart-sweep --out runs/sweep --dry-run
    """
    from sln_cli.sweep import plan as plan_lib

    if json_output and not dry_run:
        raise SlnError("--json prints the plan of --dry-run; add --dry-run")
    grid, sweep_dir = plan_lib.load(spec, out=out, seeds=seeds, overrides=set_ or [])
    if dry_run:
        plan = plan_lib.dry_run(grid, sweep_dir)
        if json_output:
            emit(plan["rows"])
        else:
            render_dry_run(plan, console())
        return
    if launcher is Launcher.slurm:
        from sln_cli.sweep.slurm import submit

        submitted = submit(grid, sweep_dir, slurm_options(partition, time_min, gpus_per_job, runs_per_job),
                           retries=retries)
        console().print(f"submitted {len(submitted)} jobs ({', '.join(j['job_id'] for j in submitted)}); "
                        f"rerun the same command after they end to resubmit anything unfinished", markup=False)
        return
    from sln_cli.sweep.runner import Options, run_sweep

    options = Options(jobs=jobs, devices=plan_lib.parse_devices(devices), per_device=per_device, retries=retries,
                      cpu_threads=cpu_threads)
    outcome = run_sweep(grid, sweep_dir, options, console=console())
    render_outcome(outcome, console())
    if any(result != "done" for result in outcome["runs"].values()):
        raise typer.Exit(1)


def render_dry_run(plan: Any, out: Any) -> None:
    """Every cell: its state, epochs, the twin it branches from and what differs from its preset; then the savings."""
    from rich.table import Table

    table = Table(title="sweep plan")
    for column in ("run", "status", "epochs", "starts from", "differs from its preset"):
        table.add_column(column, justify="right" if column == "epochs" else "left")
    for row in plan["rows"]:
        start = f"{Path(row['branch_from']).name} @ {row['epochs_saved']}" if row["branch_from"] else ""
        changes = ", ".join(f"{key}={value}" for key, value in row.get("changes", {}).items()) or "-"
        table.add_row(row["name"], row["status"], f"{row['epochs_done']}/{row['epochs_total']}", start, changes)
    out.print(table)
    out.print(savings_line(plan), markup=False, highlight=False)


def savings_line(plan: Any) -> str:
    from sln_cli.sweep.status import STATUSES

    s = plan["savings"]
    counts = {k: sum(r["status"] == k for r in plan["rows"]) for k in STATUSES}
    share = s["epochs_saved"] / s["epochs_total"] if s["epochs_total"] else 0.0
    kept = ", ".join(map(str, sorted({e for r in plan["rows"] for e in r["keep_state_at"]})))
    at = f" at epoch {kept}" if kept else ""
    return (f"{s['runs']} runs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}), "
            f"{s['epochs_total']:,} epochs in all; label-correction branching: {s['branched']} runs start from "
            f"their twin's state{at}, saving {s['epochs_saved']:,} epochs "
            f"({share:.1%} of the grid)")


def render_outcome(outcome: dict[str, Any], out: Any) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(outcome["counts"].items()))
    out.print(f"sweep {outcome['sweep_dir']}: {counts} in {outcome['seconds']:.0f} s", markup=False, highlight=False)
    bad = [name for name, result in outcome["runs"].items() if result != "done"]
    if bad:
        out.print(f"not done: {', '.join(bad)}; see {outcome['sweep_dir']}/logs/ and rerun the same command",
                  markup=False, highlight=False)
    out.print(f"table: sln report {outcome['sweep_dir']}", markup=False, highlight=False)
