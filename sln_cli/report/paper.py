"""The paper's published numbers (`sln_cli/paper_results.yaml`), looked up by report column and method row."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

PAPER_FILE = Path(__file__).resolve().parent.parent / "paper_results.yaml"
# the official SLN label files (data/CIFAR10/label_noisy/sym0.4.csv, ...) stand for the paper's settings
OFFICIAL_FILE = re.compile(r"(sym|asym|dependent|openset)(0\.\d+)\.csv")


@functools.cache
def table() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(PAPER_FILE.read_text(encoding="utf-8")) or {}


def setting_key(config: dict[str, Any]) -> str | None:
    """The paper's name for a run's setting: `<dataset> <mode> <rate>`, also for the official label files."""
    data, noise = config["data"], config["noise"]
    if noise.get("labels"):  # `official:cifar10/sym0.4` or a copy of the official file
        match = OFFICIAL_FILE.fullmatch(Path(str(noise["labels"]).removeprefix("official:")).name + ".csv") \
            if str(noise["labels"]).startswith("official:") else OFFICIAL_FILE.fullmatch(Path(noise["labels"]).name)
        return f"{data['dataset']} {match[1]} {float(match[2]):.0%}" if match else None
    if noise.get("mode") == "none":
        return data["dataset"]
    return f"{data['dataset']} {noise['mode']} {noise['rate']:.0%}"


def lookup(config: dict[str, Any], method: str) -> float | None:
    """The paper's accuracy (a fraction) for this run's setting and method row, or None."""
    value = table().get(setting_key(config) or "", {}).get(method)
    return None if value is None else float(value) / 100


def checked(config: dict[str, Any]) -> bool:
    """Whether the setting's published values were checked against the paper (see the file's header)."""
    return bool(table().get(setting_key(config) or "", {}).get("checked", False))
