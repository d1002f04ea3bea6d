"""The paper's published numbers (`sln_cli/paper_results.yaml`: mean ± std over its runs, with provenance), looked
up by report column and method row."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Published:
    mean: float  # a fraction, as sln's accuracies
    std: float | None  # a fraction; None where the source gives none
    runs: int  # the paper's runs per cell
    checked: bool  # checked against a copy of the publication (the file's header)


def published(config: dict[str, Any], method: str) -> Published | None:
    """The paper's mean ± std for this run's setting and method row, or None."""
    setting = table().get(setting_key(config) or "", {})
    value = setting.get(method)
    if value is None:
        return None
    mean, std = (value["mean"], value.get("std")) if isinstance(value, dict) else (value, None)
    return Published(float(mean) / 100, None if std is None else float(std) / 100, int(setting.get("runs", 5)),
                     bool(setting.get("checked", False)))


def checked(config: dict[str, Any]) -> bool:
    """Whether the setting's published values were checked against the paper (see the file's header)."""
    return bool(table().get(setting_key(config) or "", {}).get("checked", False))
