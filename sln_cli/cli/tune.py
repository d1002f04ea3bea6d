"""`sln tune`: hyperparameters chosen on noisy-validation accuracy with Optuna, here or as Slurm worker jobs."""

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


@app.command()
def tune(
    preset: Annotated[str, typer.Argument(metavar="PRESET", help="Preset name or YAML file every trial starts from.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="section.key=a,b,c (a grid) or section.key=lo:hi[:log] (a "
                                                       "range, sampled); repeatable.")
    ] = None,
    method: Annotated[str | None, typer.Option(help="Training method to tune (method.name).")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials in all (default: the grid's size, or 20 with a range).")]
    = None,
    objective: Annotated[
        str | None, typer.Option(help="ema-best (default), ema-last, raw-best or raw-last: noisy-validation accuracy.")
    ] = None,
    paper: Annotated[bool, flag("--paper", help="The paper's protocol: SLN alone, sigma 0.1,0.2,0.5,1.0, a "
                                                        "tenth held out as noisy validation, raw-last.")] = False,
    noisy_val: Annotated[float | None, typer.Option(help="Noisy validation samples (data.noisy_val).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key in every trial (repeatable).")]
    = None,
    out: Annotated[Path | None, typer.Option(help="Tune directory (default tunes/<preset>).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL shared by processes or machines "
                                                     "(default: TUNE/study.db).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name in the storage (default: the tune folder's).")] = None,
    jobs: Annotated[int, typer.Option(help="Trials at once, one process each (slurm: workers in all).")] = 1,
    prune: Annotated[bool, flag("--prune", help="Stop trials below the median early (Optuna).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the sampler of ranges.")] = 0,
    launcher: LauncherOption = Launcher.local,
    partition: PartitionOption = None,
    time_min: TimeMinOption = 24 * 60,
    gpus_per_job: GpusPerJobOption = 1,
    runs_per_job: RunsPerJobOption = 1,
    json_output: JsonOption = False,
) -> None:
    """Choose hyperparameters on noisy validation accuracy with Optuna (the `tune` extra); rerun to continue.
    With --launcher slurm, worker jobs on one study are submitted, not awaited; rerun to see the study.

    Examples:

      $ sln tune quickstart --param sln.sigma=0.1,0.5,1.0 --noisy-val 120 --jobs 2
      $ sln tune quickstart --paper --launcher slurm --jobs 4 --partition gpu --out tunes/qs
    """
    from sln_cli.tune import workflow as tune_lib

    spec = tune_lib.build_spec(preset, param or [], method=method, trials=trials, objective=objective, paper=paper,
                               noisy_val=noisy_val, overrides=set_ or [], prune=prune, seed=seed)
    tune_dir = out or tune_lib.default_dir(preset)
    if launcher is Launcher.slurm:
        from sln_cli.tune import slurm as tune_slurm

        submission = tune_slurm.submit(spec, tune_dir, storage=storage, study_name=study, workers=jobs,
                                       options=slurm_options(partition, time_min, gpus_per_job, runs_per_job))
        if json_output:
            emit({**tune_lib.as_json(submission.result), "waiting": submission.waiting,
                  "submitted": [{"job_id": j["job_id"], "workers": j["workers"]} for j in submission.jobs]})
        else:
            render_submission(submission, console())
        return
    out_console = console()
    log = None if json_output else (lambda line: out_console.print(line, markup=False, highlight=False))
    result = tune_lib.tune(spec, tune_dir, storage=storage, study_name=study, jobs=jobs,
                           log=log or (lambda line: None))
    if json_output:
        emit(result)
    else:
        render(result, console())


def render(result: Any, out: Any) -> None:
    """The trials (parameters, objective, state), the epochs they trained, the best preset and the figures."""
    from rich.table import Table

    from sln_cli.tune.workflow import short

    table = Table(title=f"sln tune {result.tune_dir}: objective {result.objective} (noisy-validation accuracy)")
    keys = list(dict.fromkeys(k for t in result.trials for k in t["params"]))
    for column in ("trial", "slot", *keys, "objective", "state", "epochs"):
        table.add_column(column, justify="left" if column == "state" else "right")
    best = None if result.best is None else result.best["number"]
    for t in result.trials:
        value = "" if t["value"] is None else f"{100 * t['value']:.2f}%"
        state = t["state"] + (" (best)" if t["number"] == best else "") + (f": {t['error']}" if t["error"] else "")
        table.add_row(str(t["number"]), str(t["slot"]), *[short(t["params"].get(k, "")) for k in keys], value,
                      state, str(t["epochs_trained"]))
    out.print(table)
    lines = [f"epochs trained by these trials: {result.epochs_trained}"]
    if result.best_preset:
        lines.append(f"best: trial {best}; its config: sln train --preset {result.best_preset}")
    if result.figures:
        lines.append(f"figures: {', '.join(result.figures)}")
    for line in lines:
        out.print(line, markup=False, highlight=False)


def render_submission(submission: Any, out: Any) -> None:
    """The study as it stands, then the worker jobs submitted (or why none was)."""
    render(submission.result, out)
    if submission.jobs:
        ids = ", ".join(j["job_id"] for j in submission.jobs)
        line = (f"{submission.waiting} slots wait: submitted {len(submission.jobs)} Slurm jobs ({ids}) of "
                f"{sum(j['workers'] for j in submission.jobs)} workers; rerun the same command to see the study "
                "and resubmit while slots wait")
    else:
        line = "no slot waits: nothing submitted (trials still running finish in their jobs)"
    out.print(line, markup=False, highlight=False)
