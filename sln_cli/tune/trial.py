"""One trial of `sln tune`: an ordinary run directory (`TUNE/trials/trial-SLOT`), trained or resumed in this
process, reporting its objective to the pruner after every epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sln_cli.rundir import runs
from sln_cli.tune.spec import TuneSpec, objective_of, trial_config


def run_dir_of(tune_dir: Path, slot: int) -> Path:
    return tune_dir / "trials" / f"trial-{slot:04d}"


def suggest(trial: Any, spec: TuneSpec) -> dict[str, Any]:
    """The trial's values: its slot's grid point (enqueued as fixed values) and the sampled ranges."""
    values = {}
    for param in spec.params:
        if param.is_grid:
            values[param.key] = trial.suggest_categorical(param.key, list(param.values))
        elif param.integer:
            assert param.low is not None and param.high is not None, "a range has its bounds"
            values[param.key] = trial.suggest_int(param.key, int(param.low), int(param.high), log=param.log)
        else:
            values[param.key] = trial.suggest_float(param.key, param.low, param.high, log=param.log)
    return values


def run(trial: Any, spec: TuneSpec, tune_dir: Path) -> float:
    """Train (or resume) the slot's run; the objective of its metrics. Raises optuna.TrialPruned when pruned."""
    import optuna

    from sln_cli.training.train import train

    run_dir = run_dir_of(tune_dir, trial.user_attrs["slot"])
    config = trial_config(spec, suggest(trial, spec), run_dir)
    resume = run_dir if (run_dir / runs.CONFIG).is_file() else None
    rows = runs.read_metrics(run_dir) if resume is not None else []
    for row in rows:  # a resumed slot: the epochs already trained count for the pruner too
        if (value := objective_of(rows[:rows.index(row) + 1], spec.objective)) is not None:
            trial.report(value, row["epoch"])
    trained = 0

    def report(row: dict[str, Any]) -> None:
        nonlocal trained
        rows.append(row)
        trained += 1
        trial.set_user_attr("epochs_trained", trained)
        value = objective_of(rows, spec.objective)
        if value is not None:
            trial.report(value, row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("epochs_trained", 0)
    train(config, resume=resume, quiet=True, on_epoch=report,
          overwrite=resume is None and run_dir.is_dir() and not any(run_dir.iterdir()))
    value = objective_of(runs.read_metrics(run_dir), spec.objective)
    if value is None:
        raise AssertionError("a trial's config holds out a noisy validation split (checked by make_spec)")
    return value
