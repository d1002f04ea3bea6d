"""`sln tune`'s workflow: claim the tune directory, create or continue the study, run its slots here (in `jobs`
processes), then the results: `best.yaml` (a preset `sln train` and `sln sweep` accept), PNGs, results.json."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sln_cli.errors import SlnError
from sln_cli.rundir import ownership, runs
from sln_cli.rundir.files import atomic_write_json, atomic_write_text
from sln_cli.tune import study as study_lib
from sln_cli.tune.spec import TuneSpec, objective_of, trial_config
from sln_cli.tune.trial import run as run_trial

SPEC_FILE, BEST_FILE, JSON_FILE = "tune.json", "best.yaml", "results.json"
FIGURES = ("tune-objective.png", "tune-curves.png")
ownership.register_kind("tune", (SPEC_FILE, BEST_FILE, JSON_FILE, study_lib.STUDY_FILE, study_lib.SETUP_LOCK,
                                 *FIGURES, f".{SPEC_FILE}.*.tmp", f".{BEST_FILE}.*.tmp", f".{JSON_FILE}.*.tmp",
                                 ".tune-*.png.*.tmp"))


@dataclass(frozen=True)
class TuneResult:
    tune_dir: str
    study: str
    storage: str
    objective: str
    trials: list[dict[str, Any]]  # number, slot, state, params, value, epochs_trained, run_dir, error
    best: dict[str, Any] | None
    best_preset: str | None
    epochs_trained: int
    figures: list[str] = field(default_factory=list)


def tune(spec: TuneSpec, tune_dir: Path, *, storage: str | None, study_name: str | None, jobs: int,
         log: Any = print) -> TuneResult:
    """Run (or continue) the tune; every trial an ordinary run directory under `tune_dir/trials/`."""
    url, name, store = locate(tune_dir, storage=storage, study_name=study_name, workers=jobs)
    store = establish(spec, tune_dir, url, name, store)
    if jobs == 1:
        work(spec, tune_dir, url, name, log)
    else:  # Optuna's way to scale out: processes (here, or on other machines) on one study's storage
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=work, args=(spec, tune_dir, url, name, None)) for _ in range(jobs)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return results(spec, tune_dir, store, name, url)


def locate(tune_dir: Path, *, storage: str | None, study_name: str | None, workers: int) -> tuple[str, str, Any]:
    """The study's URL and name, and its storage when the user named one (opened now: a bad URL fails before
    anything is written); None for the default SQLite file, which `establish` opens inside the tune directory."""
    study_lib.require_optuna()
    if workers < 1:
        raise SlnError(f"--jobs must be at least 1, got {workers}")
    url = study_lib.storage_url(tune_dir, storage)
    store = study_lib.open_storage(url) if storage is not None else None
    return url, study_name or tune_dir.resolve().name, store


def establish(spec: TuneSpec, tune_dir: Path, url: str, name: str, store: Any) -> Any:
    """Claim the tune directory, create (or continue) its study and record the spec; returns the storage."""
    claim(tune_dir)
    if store is None:
        with study_lib.setup_lock(tune_dir):  # processes starting one tune together make its tables one at a time
            store = study_lib.open_storage(url)
    study_lib.create(spec, store, name, tune_dir)  # refuses another spec's study before anything more is written
    atomic_write_json(tune_dir / SPEC_FILE, {**spec.as_dict(), "study": name, "storage": url})
    return store


def claim(tune_dir: Path) -> None:
    """Make the tune directory sln's, or continue in it; another `sln tune` claiming it at the same moment (its
    marker not yet written when this one looked) is no error."""
    if ownership.is_owned(tune_dir, "tune"):
        return
    try:
        ownership.claim_new_directory(tune_dir, "tune", overwrite=False)
    except SlnError:
        for _ in range(50):  # up to 5 s for the other process to write its marker (a loaded machine is slow)
            time.sleep(0.1)
            if ownership.is_owned(tune_dir, "tune"):
                return
        raise


def work(spec: TuneSpec, tune_dir: Path, url: str, name: str, log: Any) -> None:
    """One worker: pop slots until none waits (also the target of --jobs' processes)."""
    store = study_lib.open_storage(url)
    epochs = trial_config(spec, spec.point(0) | _any_range(spec), None).optim.epochs
    study = study_lib.load(spec, store, name, epochs)
    study_lib.work(study, store, lambda trial: run_trial(trial, spec, tune_dir), log or (lambda line: None))


def results(spec: TuneSpec, tune_dir: Path, store: Any, name: str, url: str) -> TuneResult:
    """The study's trials, the best complete one's preset written as best.yaml, the figures, results.json."""
    import optuna

    study = optuna.load_study(study_name=name, storage=store)
    trials = [{"number": t.number, "slot": t.user_attrs.get("slot"), "state": t.state.name.lower(),
               "params": dict(t.params), "value": t.value, "epochs_trained": t.user_attrs.get("epochs_trained", 0),
               "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error")}
              for t in study.trials]
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    best = max(complete, key=lambda t: (t["value"], -t["number"])) if complete else None  # first of equal bests
    best_preset = None
    if best is not None and best["run_dir"] and (Path(best["run_dir"]) / runs.CONFIG).is_file():
        best_preset = str(_write_best(Path(best["run_dir"]), tune_dir / BEST_FILE))
    figures = _figures(spec, trials, tune_dir)
    result = TuneResult(str(tune_dir), name, url, spec.objective, trials, best, best_preset,
                        sum(t["epochs_trained"] or 0 for t in trials), figures)
    atomic_write_json(tune_dir / JSON_FILE, as_json(result))
    return result


def as_json(result: TuneResult) -> dict[str, Any]:
    """results.json and `sln tune --json`: the result's fields, NaN as null (the one emitter's conversion)."""
    from sln_cli.render.json import plain

    return plain(result)


def _write_best(run_dir: Path, path: Path) -> Path:
    """The best trial's resolved config (itself a valid preset) without its run directory."""
    from sln_cli.config import load_yaml

    tree = load_yaml(run_dir / runs.CONFIG)
    tree.setdefault("run", {})["out"] = None
    tree["description"] = f"best trial of the tune in {path.parent} ({run_dir.name})"
    atomic_write_text(path, yaml.safe_dump(tree, sort_keys=False))
    return path


def _any_range(spec: TuneSpec) -> dict[str, Any]:
    """A value inside each range (its low end), so a trial config can be built before any is sampled."""
    values: dict[str, Any] = {}
    for p in spec.params:
        if not p.is_grid:
            assert p.low is not None  # a range always has its ends
            values[p.key] = int(p.low) if p.integer else p.low
    return values


def _figures(spec: TuneSpec, trials: list[dict[str, Any]], tune_dir: Path) -> list[str]:
    """The objective against each parameter, and every trial's objective curve against the epoch."""
    from sln_cli.render.plots import _figure, save_figure

    shown = [t for t in trials if t["state"] in ("complete", "pruned") and t["run_dir"]]
    if not shown:
        return []
    figure, axes = _figure(len(spec.params), max_columns=3)
    for axis, param in zip(axes, spec.params, strict=True):
        for state, marker in (("complete", "o"), ("pruned", "x")):
            points = [(t["params"].get(param.key), t["value"]) for t in shown if t["state"] == state]
            points = [(x, y) for x, y in points if x is not None and y is not None]
            if points:
                xs = [x if isinstance(x, int | float) else str(x) for x, _ in points]
                axis.scatter(xs, [100 * y for _, y in points], marker=marker, label=state)
        if param.log:
            axis.set_xscale("log")
        axis.set(xlabel=param.key, ylabel=f"objective: {spec.objective} noisy-val acc (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    save_figure(figure, tune_dir / FIGURES[0])
    figure, (axis,) = _figure(1)
    for t in shown:
        rows = runs.read_metrics(Path(t["run_dir"]))
        curve = [objective_of(rows[:i + 1], spec.objective) for i in range(len(rows))]
        label = ", ".join(f"{k.split('.')[-1]}={short(v)}" for k, v in t["params"].items())
        axis.plot([r["epoch"] for r in rows], [100 * (c or 0) for c in curve], linestyle="-" if
                  t["state"] == "complete" else ":", label=f"#{t['number']} {label}")
    axis.set(xlabel="epoch", ylabel=f"{spec.objective} noisy-val acc (%)", title="trials (dotted: pruned)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="x-small")
    save_figure(figure, tune_dir / FIGURES[1])
    return [str(tune_dir / name) for name in FIGURES]


def short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def build_spec(preset: str, params: list[str], *, method: str | None, trials: int | None, objective: str | None,
               paper: bool, noisy_val: float | None, overrides: list[str], prune: bool, seed: int) -> TuneSpec:
    """The spec from the command's flags; `--paper` is the paper's protocol: SLN alone (no MO, no LC: the raw
    network's noisy-validation accuracy at the last epoch), sigma in {0.1, 0.2, 0.5, 1.0}, a tenth held out."""
    from sln_cli import presets
    from sln_cli.tune import space
    from sln_cli.tune.spec import PAPER_GRID, PAPER_NOISY_VAL, PAPER_OVERRIDES, make_spec

    sets: list[str] = []
    if paper:
        if method not in (None, "sln"):
            raise SlnError(f"--paper tunes SLN alone; drop --method {method}")
        sets += [*PAPER_OVERRIDES, f"data.noisy_val={PAPER_NOISY_VAL}"]
        if not any(p.partition("=")[0].strip() == "sln.sigma" for p in params):
            params = [PAPER_GRID, *params]
    if noisy_val is not None:
        sets.append(f"data.noisy_val={noisy_val}")
    if method is not None:
        sets.append(f"method.name={method}")
    objective = objective or ("raw-last" if paper else "ema-best")
    return make_spec(preset, presets.load(preset), [*sets, *overrides], space.parse(params), trials=trials,
                     objective=objective, prune=prune, seed=seed)


def default_dir(preset: str) -> Path:
    return Path("tunes") / Path(preset).stem
