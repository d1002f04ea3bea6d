"""The report's table in five formats: a rich table, markdown, CSV (one line per cell), LaTeX, and the cells JSON
prints (`json_cells`, through the one emitter `sln_cli/render/json.py`).

Rows are methods, columns settings; a cell is mean ± std over the finished runs (sample std, n − 1) with their
count, the paper's mean ± std and our difference to it beside (within 1 point? inside the combined spread?),
what the cell's runs cost, and any unfinished runs named, never averaged in.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from sln_cli.report.compare import verdict_text
from sln_cli.report.cost import cost_text, total_text

FORMATS = ("table", "markdown", "csv", "latex", "json")
NOTE_UNCHECKED = "? the paper's value was typed in from memory and is not yet checked (sln_cli/paper_results.yaml)"
NOTE_SPREAD = ("reproduced: |Δ| ≤ spread = 2·√(s²/n + s_paper²/5), two standard errors of the difference of the "
               "means (ours over n seeds, the paper's over 5 runs); 1 pt: |Δ| ≤ 1 point")


def render(cells: list[dict[str, Any]], fmt: str, console: Console, *, total: dict[str, Any] | None = None) -> None:
    """Print the table in `fmt` (every format but json, which the command emits from `json_cells`)."""
    if fmt not in FORMATS or fmt == "json":
        raise ValueError(f"render prints table, markdown, csv or latex, not {fmt!r}")
    if fmt == "csv":
        print(to_csv(cells), end="")
    elif fmt == "markdown":
        print(to_markdown(cells, total=total))
    elif fmt == "latex":
        print(to_latex(cells))
    else:
        console.print(to_rich(cells))
        if any(c["n_runs"] for c in cells):
            console.print(to_rich_cost(cells))
        for note in notes(cells, total=total):
            console.print(note, markup=False, highlight=False)


def grid(cells: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """(row labels, column labels, (row, column) -> cell), both in the order the cells come."""
    rows = list(dict.fromkeys(c["method"] for c in cells))
    columns = list(dict.fromkeys(c["setting"] for c in cells))
    return rows, columns, {(c["method"], c["setting"]): c for c in cells}


def title(cells: list[dict[str, Any]]) -> str:
    if not cells:
        return "no runs"
    what = {"test_acc": "test accuracy (%)", "test_loss": "test NLL"}[cells[0]["metric"]]
    when = "last epoch" if cells[0]["select"] == "last" else "epoch of best validation accuracy (EMA)"
    return f"{what}, {when}: mean ± std over seeds (runs)"


def cell_text(cell: dict[str, Any] | None, *, plus_minus: str = "±", paper: bool = True) -> str:
    if cell is None:
        return ""
    parts = []
    if cell["n_runs"]:
        std = "" if cell["std"] is None else f" {plus_minus} {_number(cell, cell['std'])}"
        parts.append(f"{_number(cell, cell['mean'])}{std} ({cell['n_runs']})")
    if cell["unfinished"]:
        epochs = ", ".join(f"{u['epochs_done']}/{u['epochs_total']}" for u in cell["unfinished"])
        parts.append(f"unfinished: {epochs}")
    if paper and cell["paper"] is not None:
        parts += paper_texts(cell)
    return "; ".join(parts)


def paper_texts(cell: dict[str, Any]) -> list[str]:
    """`paper 53.16 ± 1.64` and the verdict `Δ +0.42: within 1 pt, within spread ±1.50` of a cell."""
    mark = "" if cell["paper_checked"] else "?"
    std = "" if cell.get("paper_std") is None else f" ± {cell['paper_std'] * 100:.2f}"
    verdict = verdict_text(cell)
    return [f"paper {cell['paper'] * 100:.2f}{std}{mark}", *([verdict] if verdict else [])]


def notes(cells: list[dict[str, Any]], *, total: dict[str, Any] | None = None) -> list[str]:
    out = []
    if any(c["paper"] is not None and not c["paper_checked"] for c in cells):
        out.append(NOTE_UNCHECKED)
    if any(c.get("delta") is not None for c in cells):
        out.append(NOTE_SPREAD)
    if total is not None and total["runs"]:
        out.append(total_text(total))
    if any(c["unfinished"] for c in cells):
        out.append("unfinished runs (epochs done/total) are listed, not averaged; finish them with `sln sweep`")
    return out


def to_rich(cells: list[dict[str, Any]]) -> Table:
    return _method_by_setting(cells, title(cells), lambda cell: cell_text(cell).replace("; ", "\n"))


def _method_by_setting(cells: list[dict[str, Any]], heading: str, text: Any) -> Table:
    """A rich table of one row per method and one column per setting, each cell `text(cell or None)`."""
    rows, columns, by = grid(cells)
    table = Table(title=heading)
    table.add_column("method")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row, *[text(by.get((row, c))) for c in columns])
    return table


def to_markdown(cells: list[dict[str, Any]], *, total: dict[str, Any] | None = None) -> str:
    rows, columns, by = grid(cells)
    lines = [f"| method | {' | '.join(columns)} |", "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {row} | " + " | ".join(cell_text(by.get((row, c))) for c in columns) + " |" for row in rows]
    below = notes(cells, total=total)
    return "\n".join([f"{title(cells)}", "", *lines, *cost_markdown(cells), *(["", *below] if below else [])])


COST_TITLE = "cost of each cell's finished runs: wall time (h:mm:ss), device-hours, training images/s"


def cost_markdown(cells: list[dict[str, Any]]) -> list[str]:
    """The cost table below the accuracy table: the same rows and columns (empty without finished runs)."""
    rows, columns, by = grid(cells)
    if not any(c["n_runs"] for c in cells):
        return []
    lines = ["", COST_TITLE, "", f"| method | {' | '.join(columns)} |", "| --- |" + " ---: |" * len(columns)]
    return lines + [f"| {row} | " + " | ".join(_cost(by.get((row, c))) for c in columns) + " |" for row in rows]


def to_rich_cost(cells: list[dict[str, Any]]) -> Table:
    return _method_by_setting(cells, COST_TITLE, lambda cell: _cost(cell).replace(", ", "\n"))


def _cost(cell: dict[str, Any] | None) -> str:
    return "" if cell is None else cost_text(cell).removeprefix("cost ")


def to_latex(cells: list[dict[str, Any]]) -> str:
    rows, columns, by = grid(cells)
    lines = [f"% {title(cells)}", "\\begin{tabular}{l" + "r" * len(columns) + "}", "\\toprule",
             "Method & " + " & ".join(_tex(c) for c in columns) + " \\\\", "\\midrule"]
    for row in rows:
        texts = [_tex_cell(by.get((row, c))) for c in columns]
        lines.append(f"{_tex(row)} & " + " & ".join(texts) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def to_csv(cells: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = ["setting", "method", "weights", "n_runs", "mean", "std", "values", "paper", "delta", "paper_checked",
            "unfinished", *EXTRA_CSV]
    writer.writerow(keys)
    for cell in cells:
        unfinished = ";".join(f"{u['run_dir']}:{u['epochs_done']}/{u['epochs_total']}" for u in cell["unfinished"])
        values = ";".join(repr(v) for v in cell["values"])
        writer.writerow([cell["setting"], cell["method"], cell["weights"], cell["n_runs"], _raw(cell["mean"]),
                         _raw(cell["std"]), values, _raw(cell["paper"]), _raw(cell["delta"]),
                         _raw(cell["paper_checked"]), unfinished, *(_raw(cell.get(key)) for key in EXTRA_CSV)])
    return buffer.getvalue()


def json_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells as `sln report --json` prints them (the emitter turns NaN into null)."""
    return [_with_null_reason(cell) for cell in cells]


def _with_null_reason(cell: dict[str, Any]) -> dict[str, Any]:
    """NaN and ±Infinity are not JSON: they print as null (the emitter, `sln_cli/render/json.py`), and `non_finite`
    names the keys that were (e.g. a diverged run's loss), so a null that means "not a number" differs from one that
    means "none"."""
    bad = [key for key, value in cell.items() if _non_finite(value)]
    return {**cell, "non_finite": bad} if bad else cell


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, list) and any(_non_finite(item) for item in value)


# columns added after the first ones (appended: a reader by position keeps working)
EXTRA_CSV = ("paper_std", "paper_runs", "within_1_point", "spread", "within_spread", "wall_seconds", "device_hours",
             "images_per_second")


def _number(cell: dict[str, Any], value: float) -> str:
    return f"{value * 100:.2f}" if cell["metric"] == "test_acc" else f"{value:.3f}"


def _raw(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def _tex(text: str) -> str:
    """Text safe in a LaTeX table: each of LaTeX's special characters as its escape, in one pass."""
    return "".join(_TEX.get(char, char) for char in text)


def _tex_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return ""
    if not cell["n_runs"]:
        return "--"
    std = "" if cell["std"] is None else f" \\pm {_number(cell, cell['std'])}"
    return f"${_number(cell, cell['mean'])}{std}$"
