"""Where presets live and how they load: YAML deltas over the defaults, optionally `extends:` another.

In a wheel they are package data (`sln_cli/presets/`); in a source checkout they are `presets/`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from sln_cli.config import load_yaml
from sln_cli.errors import SlnError


def preset_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [d for d in (here / "presets", here.parent / "presets") if d.is_dir()]


def available() -> dict[str, Path]:
    """Preset name -> file, the packaged copy winning over a checkout's."""
    return yaml_files(preset_dirs())


def yaml_files(directories: list[Path]) -> dict[str, Path]:
    """Name (file stem) -> YAML file in `directories`, sorted by name; an earlier directory wins a clash."""
    found: dict[str, Path] = {}
    for directory in reversed(directories):
        found.update({p.stem: p for p in sorted(directory.glob("*.yaml"))})
    return dict(sorted(found.items()))


def describe() -> dict[str, str]:
    """Preset name -> its one-line description."""
    return {name: str(load(name).get("description", "")) for name in available()}


def load(name_or_path: str) -> dict[str, Any]:
    """The preset as a YAML delta with `extends:` resolved (a path to any YAML file works too)."""
    return _load(name_or_path, seen=())


def _load(name_or_path: str, seen: tuple[str, ...]) -> dict[str, Any]:
    path = _locate(name_or_path)
    if str(path) in seen:
        raise SlnError(f"preset {name_or_path} extends itself through {' -> '.join(seen)}; break the cycle")
    tree = load_yaml(path)
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    base = _load(str(parent), seen + (str(path),))
    if "description" not in tree:
        base.pop("description", None)
    return _deep_merge(base, tree)


def _locate(name_or_path: str) -> Path:
    presets = available()
    if name_or_path in presets:
        return presets[name_or_path]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise SlnError(f"preset file {path} does not exist; give a preset name (sln presets) or a YAML path")
        return path
    close = difflib.get_close_matches(name_or_path, list(presets), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise SlnError(f"unknown preset {name_or_path!r}; {hint}list them with `sln presets`")


def _deep_merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
