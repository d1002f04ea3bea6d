"""`sln report`: the paper's table from runs (mean ± std over seeds, the paper's number beside) and its figures."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sln_cli.cli.app import JsonOption, app, console, emit, flag


class Format(str, Enum):  # sln_cli.report.render.FORMATS (a test holds them equal)
    table = "table"
    markdown = "markdown"
    csv = "csv"
    latex = "latex"
    json = "json"


@app.command()
def report(
    targets: Annotated[
        list[str], typer.Argument(metavar="RUN_OR_SWEEP", help="Sweep directories, run directories or globs.")
    ],
    metric: Annotated[str, typer.Option(help="acc (test accuracy) or nll (test cross-entropy).")] = "acc",
    select: Annotated[
        str, typer.Option(help="last (final epoch) or best-val (the epoch of best EMA validation accuracy).")
    ] = "last",
    fmt: Annotated[Format, typer.Option("--format", help="table, markdown, csv, latex or json (= --json).")]
    = Format.table,
    json_output: JsonOption = False,
    all_weights: Annotated[
        bool, flag(help="Both weights of every run (CE-MO, SLN-LC too), not only the paper's rows.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Folder for the PNGs (default: SWEEP/report).")] = None,
    figures: Annotated[bool, flag(help="Write accuracy.png and memorisation.png.")] = True,
    overwrite: Annotated[bool, flag(help="Replace PNGs in --out that sln did not write.")] = False,
) -> None:
    """The paper's table from runs: one row per method, one column per setting, mean ± std over seeds, the
    paper's number beside; unfinished runs are shown, never averaged. Also the curves as PNGs.

    Examples:

      $ sln report runs/sweep
      $ sln report runs/sweep --format markdown --out figures
    """
    from sln_cli.errors import SlnError
    from sln_cli.report import collect, render, selection
    from sln_cli.report.cost import grid_total

    chosen = "json" if json_output else fmt.value
    damaged: list[collect.Damaged] = []
    found = collect.find_runs(targets, damaged=damaged)
    if not found and damaged:
        raise SlnError(f"no readable run: {damaged[0].reason}")
    cells = selection.add_selections(collect.cells(found, metric=metric, select=select, every=all_weights), found)
    written: list[Path] = []
    if figures:
        from sln_cli.report.figures import default_folder, write_figures

        written = write_figures(found, out or default_folder(targets, found), overwrite=overwrite)
    if chosen == "json":
        emit(render.json_cells(cells))
    else:
        render.render(cells, chosen, console(), total=grid_total(found))
    aside = console(stderr=chosen != "table")  # on stderr when stdout is a machine-readable format
    for run in damaged:  # beside the table
        aside.print(f"damaged, left out: {run.run_dir}: {run.reason}", markup=False, highlight=False, soft_wrap=True)
    if selection.has_noisy_val(cells):  # last / noisy-val selected / best test epoch (oracle), side by side
        selection.render(cells, chosen, console())
    if written:
        aside.print(f"figures: {', '.join(map(str, written))}", markup=False, highlight=False)
