"""What a tune is: the preset and overrides every trial shares, the search space, the budget and the objective,
checked once up front; the trial's config made from it; the objective read from a run's metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sln_cli import config as config_lib
from sln_cli import seeds
from sln_cli.config import Config
from sln_cli.errors import SlnError
from sln_cli.tune.space import Param, grid_points

OBJECTIVES = ("ema-best", "ema-last", "raw-best", "raw-last")  # which network, and the best or the last epoch
PAPER_GRID = "sln.sigma=0.1,0.2,0.5,1.0"  # Chen et al. (ICLR 2021), Sec. 5.1: sigma's grid
# 5,000 noisy validation samples of CIFAR's 50,000: the same tenth of any training set (180 of digits' 1,797)
PAPER_NOISY_VAL = 0.1
PAPER_OVERRIDES = ("sln.correction=null", "method.name=sln")  # SLN alone: MO and LC would mask sigma's effect


@dataclass(frozen=True)
class TuneSpec:
    preset: str
    base: dict[str, Any]  # the preset's YAML delta
    overrides: tuple[str, ...]  # --set values (and --paper's), in order
    params: tuple[Param, ...]
    trials: int
    objective: str
    prune: bool
    seed: int  # the sampler's seed

    def as_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "base": self.base, "overrides": list(self.overrides),
                "params": [p.as_dict() for p in self.params], "trials": self.trials, "objective": self.objective,
                "prune": self.prune, "seed": self.seed}

    def fingerprint(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, default=str)

    def point(self, slot: int) -> dict[str, Any]:
        """The grid values of trial slot `slot`: the grid's points in turn."""
        points = grid_points(list(self.params))
        return points[slot % len(points)]


def make_spec(preset: str, base: dict[str, Any], overrides: list[str], params: list[Param], *, trials: int | None,
              objective: str, prune: bool, seed: int) -> TuneSpec:
    problem = seeds.seed_problem(seed, "--seed")  # numpy seeds the sampler with 32 bits: more was a traceback
    if problem:
        raise SlnError(problem)
    if objective not in OBJECTIVES:
        raise SlnError(f"--objective takes {', '.join(OBJECTIVES)}, got {objective!r}")
    if not params:
        raise SlnError("give at least one --param section.key=a,b,c (a grid) or section.key=lo:hi (a range)")
    grid_size = len(grid_points(params))
    sampled = any(not p.is_grid for p in params)
    if trials is None:
        trials = grid_size if not sampled else 20
    if trials < 1:
        raise SlnError(f"--trials must be at least 1, got {trials}")
    if not sampled and trials != grid_size:
        raise SlnError(f"--trials {trials}: a grid alone has {grid_size} points, each tried once; drop --trials or "
                       "add a range --param to sample")
    spec = TuneSpec(preset, base, tuple(overrides), tuple(params), trials, objective, prune, seed)
    config = trial_config(spec, _lowest(params, spec.point(0)), None)  # every problem now, before any file
    if config.data.noisy_val is None:
        raise SlnError("sln tune selects on a noisy validation split: add --noisy-val N (a count or a fraction, "
                       "e.g. 0.1) or --set data.noisy_val=N, or use --paper")
    return spec


def trial_config(spec: TuneSpec, values: dict[str, Any], run_dir: Path | None) -> Config:
    """The trial's config: the preset, the tune's overrides, then the trial's values (and its run directory)."""
    sets = [*spec.overrides, *(f"{key}={json.dumps(value)}" for key, value in values.items())]
    if run_dir is not None:
        sets.append(f"run.out={run_dir}")
    return config_lib.resolve(spec.base, sets)


def objective_of(rows: list[dict[str, Any]], objective: str) -> float | None:
    """The objective after the epochs in `rows`: the noisy-validation accuracy of the named network at the last
    epoch, or its best so far."""
    key = "noisy_val_acc" + ("_ema" if objective.startswith("ema") else "")
    values = [float(row[key]) for row in rows if isinstance(row.get(key), int | float)]
    if not values:
        return None
    return max(values) if objective.endswith("best") else values[-1]


def _lowest(params: tuple[Param, ...] | list[Param], point: dict[str, Any]) -> dict[str, Any]:
    values = dict(point)
    for param in params:
        if not param.is_grid:
            assert param.low is not None, "a range has its bounds"
            values[param.key] = int(param.low) if param.integer else param.low
    return values
