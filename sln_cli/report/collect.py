"""Collecting runs for `sln report`: which runs, which setting (column) and method (row) each belongs to, and
the cells of the table: mean ± std over seeds of finished runs only, unfinished runs listed beside them.

A run's method comes from its config, so methods added later group without changes here: `sln`
with sigma 0 is CE (raw weights), with sigma > 0 SLN (raw) and SLN-MO (EMA), with `sln.correction` SLN-MO-LC
(EMA); any other method NAME is NAME (raw) and NAME-MO (EMA). Runs whose configs differ in anything but the
seed and where they ran are never pooled: the method label then names the keys that differ.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sln_cli import config as config_lib
from sln_cli.errors import SlnError
from sln_cli.report import compare, cost
from sln_cli.report import paper as paper_lib
from sln_cli.rundir import experiments, runs

METRICS = {"acc": ("test_acc", "test accuracy"), "nll": ("test_loss", "test NLL")}
SELECTIONS = ("last", "best-val")
SEED_KEYS = experiments.SEED_KEYS  # keys that do not make another experiment (shared with `sln evaluate`)
ORDER = ("CE", "CE-MO", "SLN", "SLN-LC", "SLN-MO", "SLN-MO-LC")


@dataclass(frozen=True)
class Run:
    run_dir: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    epochs_total: int

    @property
    def epochs_done(self) -> int:
        return self.rows[-1]["epoch"] if self.rows else 0

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.get("epochs", 0) >= self.epochs_total \
            and self.epochs_done >= self.epochs_total


@dataclass(frozen=True)
class Damaged:
    """A run whose files cannot be read as sln wrote them: listed beside the table, never averaged."""

    run_dir: Path
    reason: str  # one line naming the file and the key


def find_runs(targets: list[str], *, damaged: list[Damaged] | None = None) -> list[Run]:
    """Run directories, sweep directories (their runs) and globs of either; each run once, in order. A damaged
    run is appended to `damaged` and left out; without that list it is an SlnError."""
    if not targets:
        raise SlnError("give at least one run or sweep directory")
    found: dict[Path, None] = {}
    for target in targets:
        paths = sorted(glob.glob(target)) if glob.has_magic(target) else [target]
        if not paths:
            raise SlnError(f"nothing matches {target!r}; check the pattern")
        for path in map(Path, paths):
            found.update(dict.fromkeys(_runs_in(path)))
    readable = []
    for run_dir in found:
        try:
            readable.append(_read(run_dir))
        except SlnError as exc:
            if damaged is None:
                raise
            damaged.append(Damaged(run_dir, str(exc)))
    return readable


def setting_of(config: dict[str, Any]) -> str:
    """The column: dataset and noise (mode and rate), or the label file the run trained on."""
    data, noise = config["data"], config["noise"]
    if noise.get("labels"):
        label_set = f" ({noise['label_set']})" if noise.get("label_set") else ""
        name = noise["labels"] if str(noise["labels"]).startswith("official:") else Path(noise["labels"]).name
        return f"{name}{label_set}"
    if noise["mode"] == "none":
        return data["dataset"]
    return f"{data['dataset']} {noise['mode']} {noise['rate']:.0%}"


def methods_of(config: dict[str, Any], *, every: bool = False) -> list[tuple[str, str]]:
    """(row label, weights) of a run: the paper's rows, or with `every` both weights of every run."""
    name = runs.method_section(config).get("name", "sln")
    correcting = corrects(config)
    if name in ("sln", "ce"):  # issue 9's `ce` is sln with sigma 0
        base = "SLN" if name == "sln" and config["sln"]["sigma"] > 0 else "CE"
        raw, ema = (base + "-LC", base + "-MO-LC") if correcting else (base, base + "-MO")
        paper = [(ema, "ema")] if correcting else ([(raw, "raw")] if base == "CE" else [(raw, "raw"), (ema, "ema")])
    else:
        raw, ema = name.upper(), name.upper() + "-MO" + ("-LC" if correcting else "")
        paper = [(raw, "raw"), (ema, "ema")]
    return [(raw, "raw"), (ema, "ema")] if every else paper


def corrects(config: dict[str, Any]) -> bool:
    """Whether the run's label correction ever ran: it starts after epoch `correction`, so a `correction` at or past
    the last epoch (refused by `sln train` now, possible in runs made before) never corrected and is no -LC run."""
    correction = config["sln"].get("correction")
    return correction is not None and int(correction) < int(config["optim"]["epochs"])


def cells(found: list[Run], *, metric: str = "acc", select: str = "last", every: bool = False) -> list[dict[str, Any]]:
    """The table's cells in row-major order: (setting, method) with mean ± std over the finished runs."""
    if metric not in METRICS:
        hint = "; ECE is not logged per epoch: `sln evaluate RUN...` computes it from the weights" \
            if metric == "ece" else ""
        raise SlnError(f"--metric takes {', '.join(METRICS)}, got {metric!r}{hint}")
    if select not in SELECTIONS:
        raise SlnError(f"--select takes {', '.join(SELECTIONS)}, got {select!r}")
    return [_cell(setting, label, weights, members, metric, select)
            for setting, label, weights, members in groups(found, every=every)]


def groups(found: list[Run], *, every: bool = False) -> list[tuple[str, str, str, list[Run]]]:
    """(setting, method label, weights, runs) in table order; the runs of one group are repeats over seeds."""
    buckets: dict[tuple[str, str, str], list[Run]] = {}
    datasets: dict[str, set[str]] = {}
    for run in found:
        setting = setting_of(run.config)
        datasets.setdefault(setting, set()).add(run.config["data"]["dataset"])
        for label, weights in methods_of(run.config, every=every):
            buckets.setdefault((setting, label, weights), []).append(run)
    for setting, names in datasets.items():
        if len(names) > 1:
            raise SlnError(f"the column {setting!r} holds runs of different datasets ({', '.join(sorted(names))}); "
                           "report them separately")
    columns = list(datasets)

    def order(item: tuple[tuple[str, str, str], list[Run]]) -> tuple[int, str, int]:
        (setting, label, _), _ = item
        return (ORDER.index(label) if label in ORDER else len(ORDER)), label, columns.index(setting)

    return [(setting, label + suffix, weights, members)
            for (setting, label, weights), group in sorted(buckets.items(), key=order)
            for suffix, members in _split_by_config(group)]


# --------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------


def _runs_in(path: Path) -> list[Path]:
    """A run holds a config.yaml (whatever it is: one that is not a regular file is reported as damage)."""
    if os.path.lexists(path / runs.CONFIG):
        return [path]
    if path.is_dir():
        inside = sorted(p for p in path.iterdir() if os.path.lexists(p / runs.CONFIG))
        if inside:
            return inside
    raise SlnError(f"{path} is neither a run directory nor a sweep directory holding runs")


def _read(run_dir: Path) -> Run:
    """A run's files, each read by a bounded reader and checked; an SlnError names the file and the key."""
    path = run_dir / runs.CONFIG
    config = config_lib.load_yaml(path)
    _check_config(config, path)
    run = Run(run_dir, config, runs.read_metrics(run_dir), runs.read_summary(run_dir), int(config["optim"]["epochs"]))
    if run.finished and run.summary is not None:  # the values the table reads must be numbers (finished: it is)
        _check_values(run.rows[-1], f"{run_dir / runs.METRICS} (last line)")
        if run.summary.get("best") is not None:
            _check_values(run.summary["best"], f"{run_dir / runs.SUMMARY}: best")
    return run


# the keys of config.yaml the report reads, with their types (runs of older versions lack newer keys: not these)
_CONFIG_TYPES = {("data", "dataset"): (str,), ("noise", "mode"): (str,), ("noise", "rate"): (int, float),
                 ("noise", "labels"): (str, type(None)), ("noise", "label_set"): (str, type(None)),
                 ("optim", "epochs"): (int,), ("sln", "sigma"): (int, float), ("sln", "correction"): (int, type(None))}


def _check_config(config: dict[str, Any], path: Path) -> None:
    for section in ("data", "noise", "optim", "sln"):
        if not isinstance(config.get(section), dict):
            raise SlnError(f"{path} has no {section} section; is it a run made by `sln train`?")
    for (section, key), types in _CONFIG_TYPES.items():
        value = config[section].get(key)
        if isinstance(value, bool) or not isinstance(value, types) or (isinstance(value, int) and abs(value) > 2**53):
            got = "missing" if key not in config[section] else config_lib._show(value)
            raise SlnError(f"{path}: {section}.{key} is {got}, not a {' or '.join(t.__name__ for t in types)}; "
                           "the file was edited or damaged")
    if config["optim"]["epochs"] < 1:
        raise SlnError(f"{path}: optim.epochs is {config['optim']['epochs']}; the file was edited or damaged")
    if "method" in config and not isinstance(config["method"], dict | None) \
            or not isinstance(runs.method_section(config).get("name", "sln"), str):
        raise SlnError(f"{path}: method is not a mapping with a name; the file was edited or damaged")


def _check_values(row: dict[str, Any], where: str) -> None:
    for key in [METRICS[m][0] + suffix for m in METRICS for suffix in ("", "_ema")]:
        value = row.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            raise SlnError(f"{where}: {key} is {'missing' if value is None else repr(value)[:40]}, not a number; "
                           "the file was edited or damaged")


def _split_by_config(group: list[Run]) -> list[tuple[str, list[Run]]]:
    """Runs of one bucket that are repeats over seeds of one experiment; a suffix names what differs."""
    same: dict[str, list[Run]] = {}
    for run in group:
        same.setdefault(experiments.experiment_key(run.config), []).append(run)
    if len(same) == 1:
        return [("", group)]
    flat = [json.loads(key) for key in same]
    differing = sorted({k for f in flat for k in f if any(g.get(k) != f.get(k) for g in flat)})
    return [(" (" + ", ".join(f"{k.split('.')[-1]}={f.get(k)}" for k in differing) + ")", members)
            for f, members in zip(flat, same.values(), strict=True)]


def _value(run: Run, weights: str, metric: str, select: str) -> float:
    key = METRICS[metric][0] + ("_ema" if weights == "ema" else "")
    if select == "best-val":
        best = (run.summary or {}).get("best")
        if best is None:
            raise SlnError(f"{run.run_dir} has no validation split, so --select best-val has nothing to select on")
        return float(best[key])
    return float(run.rows[-1][key])


def _cell(setting: str, label: str, weights: str, members: list[Run], metric: str, select: str) -> dict[str, Any]:
    finished = [r for r in members if r.finished]
    values = [_value(r, weights, metric, select) for r in finished]
    mean = sum(values) / len(values) if values else None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) \
        if len(values) > 1 and mean is not None else None
    paper = paper_lib.published(members[0].config, label) if metric == "acc" else None
    return {
        "setting": setting, "method": label, "weights": weights, "n_runs": len(values), "mean": mean, "std": std,
        "num_runs": len(values), "std_ddof": 1,  # the key names `sln evaluate` uses for the same count and spread
        "values": values, **compare.against_paper(mean, std, len(values), paper),
        "metric": METRICS[metric][0], "select": select, "dataset": members[0].config["data"]["dataset"],
        "runs": [str(r.run_dir) for r in finished],
        "unfinished": [{"run_dir": str(r.run_dir), "epochs_done": r.epochs_done, "epochs_total": r.epochs_total}
                       for r in members if not r.finished],
        **cost.of_runs(finished),
    }
