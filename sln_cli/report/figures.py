"""The report's pictures: test accuracy against epoch and the memorisation curve (fraction of mislabelled
training samples fitted to their wrong label), one panel per setting, one line per method (mean over the
finished runs, with a band of ± one standard deviation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sln_cli.render.plots import plot_seed_bands
from sln_cli.report import collect
from sln_cli.report.collect import Run
from sln_cli.rundir import ownership

FIGURES = ("accuracy.png", "memorisation.png")
ownership.register_kind("report", (*FIGURES, ".*.tmp"))

Curves = dict[str, dict[str, tuple[list[int], list[float], list[float]]]]


def write_figures(found: list[Run], out: Path, *, overwrite: bool = False) -> list[Path]:
    """accuracy.png (test accuracy of each method's weights) and memorisation.png (raw networks: `memorized` is
    measured on the training batches as they are trained, so the EMA has none) in `out`."""
    ownership.prepare_output_dir(out, "report", overwrite=overwrite)
    written = []
    for name, key, ylabel, what, raw_only in (
            ("accuracy.png", "test_acc", "test accuracy (%)", "test accuracy", False),
            ("memorisation.png", "memorized", "mislabelled predicted as their wrong label (%)", "memorisation", True)):
        panels = curves(found, key, raw_only=raw_only)
        if panels:
            ownership.check_replaceable(out / name, overwrite=overwrite)
            plot_seed_bands(out / name, panels, ylabel=ylabel, title=f"{what}, mean ± std over seeds")
            written.append(out / name)
    return written


def default_folder(targets: list[str], found: list[Run]) -> Path:
    """`SWEEP/report` for one sweep directory; otherwise `report/` beside the first run."""
    first = Path(targets[0])
    if len(targets) == 1 and first.is_dir() and not (first / "config.yaml").is_file():
        return first / "report"
    return found[0].run_dir.parent / "report"


def curves(found: list[Run], key: str, *, raw_only: bool = False) -> Curves:
    """setting -> method -> (epochs, mean, std) over the finished runs that logged `key` at every epoch."""
    groups: dict[str, dict[str, list[list[float]]]] = {}
    for setting, label, weights, members in collect.groups(found):
        if raw_only and weights != "raw":
            continue
        column = key + ("_ema" if weights == "ema" else "")
        for run in members:
            curve: list[Any] = [row.get(column) for row in run.rows]
            if run.finished and curve and all(v is not None for v in curve):
                groups.setdefault(setting, {}).setdefault(label, []).append(curve)
    panels: Curves = {}
    for setting, methods in groups.items():
        for label, series in methods.items():
            length = min(len(s) for s in series)  # runs of one experiment have the same epochs
            values = np.array([s[:length] for s in series], dtype=float)
            std = values.std(axis=0, ddof=1) if len(series) > 1 else np.zeros(length)
            panels.setdefault(setting, {})[label] = (list(range(1, length + 1)), values.mean(axis=0).tolist(),
                                                     std.tolist())
    return panels
