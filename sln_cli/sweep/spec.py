"""A sweep spec: presets × methods × grid overrides × seeds, validated up front and expanded into cells.

Every cell's config is resolved with `sln_cli.config.resolve` before anything runs, so an unknown key or a bad
value anywhere in the grid is one error at the start. A cell's run directory name is derived from the cell
alone (preset, method, grid values, seed): the same spec always maps to the same directories.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sln_cli import config as config_lib
from sln_cli import presets as presets_lib
from sln_cli import seeds as seeds_lib
from sln_cli.errors import SlnError
from sln_cli.rundir import runs

SPEC_KEYS = ("description", "presets", "methods", "grid", "seeds", "set")
# keys the sweep sets itself: a spec that names them would fight the runner
RESERVED = {"run.seed": "use `seeds:` (or --seeds)", "run.out": "use --out for the sweep directory",
            "run.device": "use --devices", "run.keep_state_at": "the sweep adds it for label-correction twins"}
# keys that may differ between a run and its LC twin, or between a run and the spec, without making another run
RUNTIME_KEYS = {("run", "out"), ("run", "device"), ("run", "cpu_threads"), ("run", "keep_state_at")}
MAX_CELLS = 10_000  # bounded input: a typo such as seeds: 0-99999 must not expand forever


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its preset, named method, grid values and seed, and the overrides that make it."""

    name: str
    preset: str  # a preset name or a YAML path, as the spec gives it
    method: str
    grid: tuple[tuple[str, Any], ...]
    seed: int
    overrides: tuple[str, ...]  # `--set` arguments for `sln train`, in order
    config: dict[str, Any] = field(compare=False, hash=False, repr=False)  # resolved, as config.yaml holds it
    run_dir: Path = Path()
    twin: str | None = None  # LC runs: the name of the cell that is identical up to epoch `correction`
    changes: tuple[tuple[str, Any], ...] = ()  # the resolved keys that differ from its preset alone (--dry-run)

    @property
    def epochs(self) -> int:
        return int(self.config["optim"]["epochs"])

    @property
    def correction(self) -> int | None:
        return self.config["sln"]["correction"]


@dataclass(frozen=True)
class Sweep:
    name: str
    spec: dict[str, Any]  # the resolved spec (command-line seeds and --set merged), written to sweep.yaml
    cells: tuple[Cell, ...]

    def cell(self, name: str) -> Cell:
        return next(c for c in self.cells if c.name == name)


def sweep_dirs() -> list[Path]:
    """Shipped sweeps live beside the presets (`presets/sweeps/`, package data in a wheel)."""
    return [d / "sweeps" for d in presets_lib.preset_dirs() if (d / "sweeps").is_dir()]


def available() -> dict[str, Path]:
    """Sweep name -> file, the packaged copy winning over a checkout's (as presets)."""
    return presets_lib.yaml_files(sweep_dirs())


def describe() -> dict[str, str]:
    return {name: str(config_lib.load_yaml(path).get("description", "")) for name, path in available().items()}


def load(name_or_path: str, *, out: Path | None = None, seeds: str | None = None,
         overrides: Sequence[str] = ()) -> Sweep:
    """The sweep `name_or_path` (a shipped name or a YAML file), with command-line seeds and --set merged."""
    path, name = _locate(name_or_path)
    spec = _check_spec(config_lib.load_yaml(path, what="sweep spec"), path)
    if seeds is not None:
        spec["seeds"] = parse_seeds(seeds)
    command_line = _parse_sets(overrides)
    _check_defining_keys(command_line, spec)
    spec_alone = dict(spec)
    spec["set"] = {**spec["set"], **command_line}
    sweep_dir = out if out is not None else Path("sweeps") / name
    cells = expand(spec, sweep_dir)
    if command_line and _identical_methods(cells):  # ... and were they different before the --set?
        try:
            alone = expand(spec_alone, sweep_dir)
        except SlnError:  # the spec needs the --set to resolve at all (a file path it names, say)
            alone = ()
        before = {(c.method, c.preset, c.grid, c.seed) for pair in _identical_methods(alone) for c in pair}
        for first, second in _identical_methods(cells):
            if (first.method, first.preset, first.grid, first.seed) not in before:
                sets = ", ".join(f"{k}={v}" for k, v in command_line.items())
                raise SlnError(f"--set {sets} makes the cells {first.name} and {second.name} (methods "
                               f"{first.method} and {second.method}) identical; drop that --set or change the "
                               "methods in the sweep file")
    return Sweep(name=name, spec=spec, cells=cells)


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` or `0-4` (inclusive) or a mix: `0-2,7` (counted before it is built: `seeds.parse_seeds`)."""
    return seeds_lib.parse_seeds(text, limit=MAX_CELLS)


def expand(spec: dict[str, Any], sweep_dir: Path) -> tuple[Cell, ...]:
    """Every cell of the grid, each config resolved (all problems of all cells raised at once)."""
    grid_keys = list(spec["grid"])
    # counted from its factors before anything is built: 20 keys of 10 values must not make 10^20 tuples
    count = math.prod([len(spec["presets"]), len(spec["methods"]), len(spec["seeds"]),
                       *(len(spec["grid"][k]) for k in grid_keys)])
    if count > MAX_CELLS:
        raise SlnError(f"the sweep expands to {count:,} runs, more than {MAX_CELLS:,}; make the grid smaller")
    combos = list(itertools.product(*(spec["grid"][k] for k in grid_keys)))
    problems: list[str] = []
    cells: list[Cell] = []
    bases: dict[str, dict[str, Any]] = {}  # preset -> its config resolved alone
    for preset, (method, method_set), combo, seed in itertools.product(
            spec["presets"], spec["methods"].items(), combos, spec["seeds"]):
        grid = tuple(zip(grid_keys, combo, strict=True))
        name = cell_name(preset, method, grid, seed, grid_keys)
        overrides = {**spec["set"], **method_set, **dict(grid)}
        args = tuple(f"{k}={_yaml_value(v)}" for k, v in overrides.items()) + (f"run.seed={seed}",)
        try:
            tree = presets_lib.load(preset)
            resolved = config_lib.to_dict(config_lib.resolve(tree, list(args), {"run.out": str(sweep_dir / name)}))
        except SlnError as exc:
            problems.append(f"{preset} × {method}{''.join(f' × {k}={v}' for k, v in grid)}: {exc}")
            continue
        cells.append(Cell(name=name, preset=preset, method=method, grid=grid, seed=seed, overrides=args,
                          config=resolved, run_dir=sweep_dir / name, changes=_changes(resolved, preset, bases)))
    if problems:
        raise SlnError("the sweep spec does not resolve: " + "; ".join(dict.fromkeys(problems)))
    _check_unique(cells)
    return tuple(_pair_twins(cells))


def cell_name(preset: str, method: str, grid: tuple[tuple[str, Any], ...], seed: int, grid_keys: list[str]) -> str:
    """`<preset>-<method>[-<key><value>...]-seed<seed>`: readable and stable for the same spec."""
    leaves = [k.rsplit(".", 1)[-1] for k in grid_keys]
    parts = [Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset, method]
    for key, value in grid:
        leaf = key.rsplit(".", 1)[-1]
        parts.append((leaf if leaves.count(leaf) == 1 else key.replace(".", "_")) + _text(value))
    parts.append(f"seed{seed}")
    return "-".join(re.sub(r"[^A-Za-z0-9._+-]+", "_", p) for p in parts)


def comparable(tree: dict[str, Any]) -> dict[str, Any]:
    """A config tree without the keys that say where and how fast a run goes (not what it computes)."""
    out = {s: ({k: v for k, v in vals.items() if (s, k) not in RUNTIME_KEYS} if isinstance(vals, dict) else vals)
           for s, vals in tree.items() if s != "description"}
    out["method"] = runs.method_section(tree)
    return out


# --------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------

# keys --dry-run leaves out of a cell's differences: the sweep sets them for every cell (seed, directory, twins)
_NOT_CHANGES = {"run.seed", "run.out", "run.keep_state_at"}


def _changes(resolved: dict[str, Any], preset: str, bases: dict[str, dict[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """The cell's effective differences from its preset resolved alone, as (dotted key, value) in schema order."""
    if preset not in bases:
        try:
            bases[preset] = config_lib.to_dict(config_lib.resolve(presets_lib.load(preset)))
        except SlnError:  # a preset that only resolves with the sweep's overrides: compare with the defaults
            bases[preset] = config_lib.to_dict(config_lib.Config())
    base = bases[preset]
    return tuple((f"{section}.{key}", value) for section, values in resolved.items() if isinstance(values, dict)
                 for key, value in values.items()
                 if f"{section}.{key}" not in _NOT_CHANGES and base.get(section, {}).get(key) != value)


def _check_defining_keys(command_line: dict[str, Any], spec: dict[str, Any]) -> None:
    """A sweep-wide --set must not touch what tells the methods apart: a key a method sets itself (which the method
    would silently keep), or `sln.correction` (which decides which cells are label-correction runs)."""
    for key, value in command_line.items():
        owners = [m for m, overrides in spec["methods"].items() if key in overrides]
        plain = [m for m, overrides in spec["methods"].items() if "sln.correction" not in overrides]
        if key == "sln.correction" and value is not None and plain:
            raise SlnError(f"--set sln.correction={value} would turn the cells of {', '.join(plain)} into "
                           "label-correction runs; a sweep-wide --set never changes which cells are LC runs: "
                           "give the LC method its own sln.correction in the sweep file")
        if owners:
            raise SlnError(f"--set {key}={value} would change the key that defines method "
                           f"{', '.join(owners)} of this sweep (methods set it themselves, so their cells would keep "
                           "their own value); edit the sweep file's methods instead")


def _identical_methods(cells: tuple[Cell, ...]) -> list[tuple[Cell, Cell]]:
    """Pairs of cells of different methods (same preset, grid values and seed) whose runs would be the same."""
    seen: dict[str, Cell] = {}
    pairs = []
    for cell in cells:
        tree = comparable(cell.config)
        tree["run"] = {k: v for k, v in tree["run"].items() if k != "keep_state_at"}
        other = seen.setdefault(json.dumps(tree, sort_keys=True, default=str), cell)
        if other is not cell and other.method != cell.method:
            pairs.append((other, cell))
    return pairs



def _locate(name_or_path: str) -> tuple[Path, str]:
    shipped = available()
    if name_or_path in shipped:
        return shipped[name_or_path], name_or_path
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise SlnError(f"sweep file {path} does not exist; give a sweep name (sln presets) or a YAML path")
        return path, path.stem
    import difflib

    close = difflib.get_close_matches(name_or_path, list(shipped), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise SlnError(f"unknown sweep {name_or_path!r}; {hint}list them with `sln presets`")


def _check_spec(tree: dict[str, Any], path: Path) -> dict[str, Any]:
    """Shape of the spec: known keys, non-empty lists, dotted override keys; values are checked by resolve."""
    unknown = [k for k in tree if k not in SPEC_KEYS]
    if unknown:
        raise SlnError(f"{path}: unknown sweep key {unknown[0]!r}; valid keys: {', '.join(SPEC_KEYS)}")
    spec = {"description": str(tree.get("description") or ""),
            "presets": _nonempty_list(tree.get("presets"), "presets", path),
            "methods": tree.get("methods") if tree.get("methods") is not None else {"default": {}},
            "grid": tree.get("grid") or {}, "seeds": tree.get("seeds", [0]), "set": tree.get("set") or {}}
    if not isinstance(spec["methods"], dict) or not spec["methods"]:
        raise SlnError(f"{path}: methods must map method names to overrides, e.g. {{CE: {{sln.sigma: 0}}, SLN: {{}}}}")
    spec["methods"] = {str(m): _overrides(v, f"methods.{m}", path) for m, v in spec["methods"].items()}
    spec["set"] = _overrides(spec["set"], "set", path)
    spec["grid"] = _overrides(spec["grid"], "grid", path)
    for key, values in spec["grid"].items():
        spec["grid"][key] = _nonempty_list(values, f"grid.{key}", path)
    spec["seeds"] = _nonempty_list(spec["seeds"], "seeds", path)
    for seed in spec["seeds"]:
        if problem := seeds_lib.seed_problem(seed, "seeds"):
            raise SlnError(f"{path}: {problem}")
    if len(set(spec["seeds"])) != len(spec["seeds"]):
        raise SlnError(f"{path}: seeds must be distinct, got {config_lib._show(spec['seeds'])}")
    for m, overrides in spec["methods"].items():
        if clash := set(overrides) & set(spec["grid"]):
            raise SlnError(f"{path}: method {m!r} and grid both set {sorted(clash)[0]}; keep it in one place")
    if not all(re.fullmatch(r"[A-Za-z0-9._+-]+", m) for m in spec["methods"]):
        raise SlnError(f"{path}: method names may hold letters, digits and . _ + - only, got {list(spec['methods'])}")
    return spec


def _overrides(value: Any, where: str, path: Path) -> dict[str, Any]:
    """`{sln.sigma: 0}` or `{sln: {sigma: 0}}` -> `{"sln.sigma": 0}`; refuses the reserved keys."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SlnError(f"{path}: {where} must be a mapping of section.key: value, got {value!r}")
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if "." not in str(key) and isinstance(item, dict):
            flat.update({f"{key}.{sub}": v for sub, v in item.items()})
        elif "." not in str(key):
            raise SlnError(f"{path}: {where} key {key!r} must be section.key (e.g. sln.sigma)")
        else:
            flat[str(key)] = item
    for key in flat:
        if key in RESERVED:
            raise SlnError(f"{path}: {where} sets {key}; {RESERVED[key]}")
    return flat


def _parse_sets(overrides: Sequence[str]) -> dict[str, Any]:
    parsed = dict(config_lib._parse_override(item) for item in overrides)
    for key in parsed:
        if key in RESERVED:
            raise SlnError(f"--set {key}: {RESERVED[key]}")
    return parsed


def _nonempty_list(value: Any, where: str, path: Path) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise SlnError(f"{path}: {where} must be a non-empty list, got {value!r}")
    return value


def _yaml_value(value: Any) -> str:
    """A value as `--set` reads it back (JSON is YAML): strings quoted, lists in brackets."""
    return json.dumps(value)


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _check_unique(cells: list[Cell]) -> None:
    seen: dict[str, Cell] = {}
    for cell in cells:
        key = cell.name.lower()  # case-insensitive filesystems
        if key in seen:
            raise SlnError(f"two cells of the sweep map to the run directory {cell.name}; rename a method or "
                           "change a grid value")
        seen[key] = cell


def _pair_twins(cells: list[Cell]) -> list[Cell]:
    """An LC cell's twin: the cell with the same config but no correction. The twin keeps its state at the
    LC epoch (run.keep_state_at) so that the LC run can start there instead of training those epochs again."""

    def key(cell: Cell) -> str:
        tree = comparable(cell.config)
        tree["sln"] = {k: v for k, v in tree["sln"].items() if k != "correction"}
        return json.dumps(tree, sort_keys=True)

    plain = {key(c): c for c in cells if c.correction is None}
    keep: dict[str, set[int]] = {}
    twins: dict[str, str] = {}
    for cell in cells:
        twin = plain.get(key(cell)) if cell.correction is not None else None
        if twin is not None and cell.correction is not None and cell.correction < twin.epochs:
            twins[cell.name] = twin.name
            keep.setdefault(twin.name, set()).add(cell.correction)
    out = []
    for cell in cells:
        if cell.name in keep:
            epochs = sorted(keep[cell.name])
            config = {**cell.config, "run": {**cell.config["run"], "keep_state_at": epochs}}
            cell = dataclasses.replace(cell, config=config,
                                       overrides=cell.overrides + (f"run.keep_state_at={json.dumps(epochs)}",))
        out.append(dataclasses.replace(cell, twin=twins.get(cell.name)))
    return out
