"""The search space of `sln tune`: `--param key=a,b,c` (a grid, every value tried) or `--param key=lo:hi[:log]`
(a range, sampled by Optuna's TPE), checked against the config schema before anything is written."""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from dataclasses import dataclass
from typing import Any

from sln_cli.config import ALIASES, Config, to_dict
from sln_cli.errors import SlnError
from sln_cli.rundir import yamlfile


@dataclass(frozen=True)
class Param:
    key: str  # dotted config key, e.g. sln.sigma
    values: tuple[Any, ...] = ()  # a grid
    low: float | None = None  # a range
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_grid(self) -> bool:
        return bool(self.values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"values": list(self.values)}


def parse(specs: list[str]) -> list[Param]:
    """`--param` values in order; every problem is an `SlnError` naming the flag."""
    params: list[Param] = []
    for spec in specs:
        key, sep, text = spec.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not text:
            raise SlnError(f"--param takes section.key=a,b,c (a grid) or section.key=lo:hi (a range), got {spec!r}")
        kind = _field_type(key)
        if key in {p.key for p in params}:
            raise SlnError(f"--param {key} is given twice; give each key once")
        params.append(_range(key, text, kind) if ":" in text and "," not in text else _grid(key, text, kind))
    return params


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the grid parameters, in the order given (one empty point when there is no grid)."""
    grids = [p for p in params if p.is_grid]
    return [dict(zip([p.key for p in grids], combo, strict=True))
            for combo in itertools.product(*[p.values for p in grids])]


def _field_type(key: str) -> Any:
    section, _, name = ALIASES.get(key, key).partition(".")
    tree = to_dict(Config())
    if not name or not isinstance(tree.get(section), dict) or name not in tree[section]:
        raise SlnError(f"--param {key}: unknown config key; use section.key as in `sln train --print-config`")
    section_type = typing.get_type_hints(Config)[section]
    hint = typing.get_type_hints(section_type)[name]
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    return inner[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint


def _grid(key: str, text: str, kind: Any) -> Param:
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise SlnError(f"--param {key}={text}: an empty value in the grid; give a,b,c")
    values = tuple(_value(yamlfile.loads(item, what=f"--param {key}", max_nodes=10, invalid_as_text=True), kind)
                   for item in items)
    if len(set(map(repr, values))) != len(values):
        raise SlnError(f"--param {key}={text}: a value is repeated; give each once")
    return Param(key, values=values)


def _value(value: Any, kind: Any) -> Any:
    """A float key's grid value as a float (YAML reads 1e-3 as text, 1 as an int), so trials and tables agree."""
    if kind is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return float(value)
        except (ValueError, OverflowError):
            return value  # the config check names the bad value
    return value


def _range(key: str, text: str, kind: Any) -> Param:
    parts = text.split(":")
    log = len(parts) == 3 and parts[2] == "log"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
        raise SlnError(f"--param {key}={text}: a range is lo:hi or lo:hi:log")
    if kind not in (int, float):
        raise SlnError(f"--param {key}: a range needs a numeric key, and {key} takes "
                       f"{getattr(kind, '__name__', kind)}; give its values as a grid a,b,c")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise SlnError(f"--param {key}={text}: lo and hi must be numbers") from None
    if not low < high or (log and low <= 0):
        raise SlnError(f"--param {key}={text}: need lo < hi" + (" and lo > 0 for a log range" if log else ""))
    if kind is int and (low != int(low) or high != int(high)):
        raise SlnError(f"--param {key}={text}: {key} is an integer; give whole bounds")
    return Param(key, low=low, high=high, log=log, integer=kind is int)
