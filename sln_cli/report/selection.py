"""Three accuracies per report cell, side by side, each named for how its epoch was chosen: the last epoch, the
epoch of best noisy-validation accuracy (`data.noisy_val`: what a paper may report), and the epoch of best test
accuracy (an oracle: chosen on the test set, never a result). Each network (raw, EMA) selects on its own curve.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from sln_cli.report.collect import METRICS, Run

LAST, NOISY_VAL, ORACLE = "last_epoch", "noisy_val_selected", "best_test_epoch_oracle"
HEADERS = {LAST: "last epoch", NOISY_VAL: "noisy-val selected", ORACLE: "best test epoch (oracle †)"}
NOTE_ORACLE = ("† oracle: the epoch was chosen on the test set, so the number is optimistic; a paper must not "
               "report it as its result")


def add_selections(cells: list[dict[str, Any]], found: list[Run]) -> list[dict[str, Any]]:
    """Each cell gains `selections`: {last_epoch, noisy_val_selected, best_test_epoch_oracle} -> {mean, std,
    values, epochs}; `noisy_val_selected` is null when a run of the cell held out no noisy validation split."""
    by_dir = {str(run.run_dir): run for run in found}
    out = []
    for cell in cells:
        members = [by_dir[run_dir] for run_dir in cell["runs"]]
        suffix = "_ema" if cell["weights"] == "ema" else ""
        metric = cell["metric"]
        picks = {LAST: [_last(run) for run in members],
                 NOISY_VAL: [_best(run, f"noisy_val_acc{suffix}") for run in members],
                 ORACLE: [_best(run, f"test_acc{suffix}") for run in members]}
        out.append({**cell, "selections": {name: _summary(rows, metric + suffix) for name, rows in picks.items()}})
    return out


def has_noisy_val(cells: list[dict[str, Any]]) -> bool:
    return any(cell.get("selections", {}).get(NOISY_VAL) is not None for cell in cells)


def render(cells: list[dict[str, Any]], fmt: str, console: Console) -> None:
    """The three-accuracy table after the report's own (table and markdown; JSON carries `selections`)."""
    if not cells or fmt not in ("table", "markdown"):
        return
    if fmt == "markdown":
        print("\n" + to_markdown(cells))
        return
    table = Table(title=_title(cells))
    for header in ("setting", "method", *HEADERS.values()):
        table.add_column(header, justify="left" if header in ("setting", "method") else "right")
    for cell in cells:
        table.add_row(cell["setting"], cell["method"], *[_text(cell, name) for name in HEADERS])
    console.print(table)
    console.print(NOTE_ORACLE, markup=False, highlight=False)


def to_markdown(cells: list[dict[str, Any]]) -> str:
    lines = [_title(cells), "", "| setting | method | " + " | ".join(HEADERS.values()) + " |",
             "| --- | --- |" + " ---: |" * len(HEADERS)]
    lines += [f"| {c['setting']} | {c['method']} | " + " | ".join(_text(c, name) for name in HEADERS) + " |"
              for c in cells]
    return "\n".join([*lines, "", NOTE_ORACLE])


def _title(cells: list[dict[str, Any]]) -> str:
    what = METRICS["acc" if cells[0]["metric"] == "test_acc" else "nll"][1]
    return f"{what} at three epochs of each run: mean ± std over seeds (epochs chosen)"


def _last(run: Run) -> dict[str, Any] | None:
    return run.rows[-1] if run.rows else None


def _best(run: Run, key: str) -> dict[str, Any] | None:
    """The first epoch with the highest `key`, as `sln train` selects best.pt; None when no row has it."""
    scored = [row for row in run.rows if isinstance(row.get(key), int | float) and math.isfinite(row[key])]
    return max(scored, key=lambda row: row[key]) if scored else None


def _summary(rows: list[dict[str, Any] | None], key: str) -> dict[str, Any] | None:
    present = [row for row in rows if row is not None]
    if not rows or len(present) < len(rows) or any(not isinstance(row.get(key), int | float) for row in present):
        return None
    values = [float(row[key]) for row in present]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "values": values, "epochs": [int(row["epoch"]) for row in present]}


def _text(cell: dict[str, Any], name: str) -> str:
    picked = cell["selections"][name]
    if picked is None:
        return "—" if name != NOISY_VAL else "— (no data.noisy_val)"
    scale, digits = (100, 2) if cell["metric"] == "test_acc" else (1, 3)
    std = "" if picked["std"] is None else f" ± {picked['std'] * scale:.{digits}f}"
    epochs = ",".join(map(str, picked["epochs"]))
    return f"{picked['mean'] * scale:.{digits}f}{std} (ep {epochs})"
