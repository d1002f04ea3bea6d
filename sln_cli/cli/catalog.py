"""What sln offers and keeps: `sln presets` (presets and sweeps), `sln methods` (the registry), `sln cache`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from sln_cli.cli.app import JsonOption, app, console, emit, flag


@app.command()
def presets(
    json_output: JsonOption = False,
    sweeps: Annotated[bool, flag("--sweeps", help="With --json: the sweeps instead of the presets.")] = False,
) -> None:
    """List the presets and sweeps with a one-line description each (`sln train --preset NAME`, `sln sweep NAME`).

    Examples:

      $ sln presets
      $ sln presets --json --sweeps
    """
    from rich.table import Table

    from sln_cli import presets as presets_lib
    from sln_cli.sweep import spec as sweep_spec

    if json_output:
        emit(sweep_spec.describe() if sweeps else presets_lib.describe())
        return
    for kind, described in (("preset", presets_lib.describe()), ("sweep", sweep_spec.describe())):
        table = Table(kind, "description", title=f"{kind}s (sln {'train --preset' if kind == 'preset' else 'sweep'} "
                                                 "NAME)")
        for name, description in described.items():
            table.add_row(name, description)
        console().print(table)


@app.command()
def methods(
    dataset: Annotated[str, typer.Option(help="Whose defaults to show (cifar10, cifar100, ...).")] = "cifar10",
    json_output: JsonOption = False,
) -> None:
    """List the training methods (`sln train --method NAME`): paper, what each changes, its default settings.

    Examples:

      $ sln methods
      $ sln methods --dataset cifar100 --json
    """
    from sln_cli.methods.catalog import describe

    rows = describe(dataset)
    if json_output:
        emit(rows)
    else:
        _render_methods(rows, dataset)


def _render_methods(rows: list[dict[str, Any]], dataset: str) -> None:
    """The methods table, then where each default comes from and the official code it was checked against."""
    from rich.table import Table

    table = Table("method", "paper", "SLN noise", f"defaults on {dataset}", title="methods (--method NAME)",
                  caption="SAM (--sam) combines with any method but dividemix")
    sources: dict[str, str] = {}
    for row in rows:
        settings = row["hyperparameters"]
        sources |= {f"{row['name']}: {key}": entry["source"] for key, entry in settings.items()}
        if reference := row.get("reference"):
            sources[f"{row['name']}: checked against"] = (f"{reference['repository']} {reference['file']} "
                                                          f"@ {reference['commit'][:12]}")
        if row.get("combinations"):
            sources[f"{row['name']}: combinations"] = row["combinations"]
        table.add_row(row["name"], row["paper"], "yes" if row["sln_noise"] else "no",
                      ", ".join(f"{key}={entry['value']}" for key, entry in settings.items()))
    out = console()
    out.print(table)
    for key, source in sources.items():
        out.print(f"  {key}: {source}", highlight=False)
    for row in rows:  # the official code each method's defaults and formulas were checked against
        if (ref := row.get("reference")) is not None:
            out.print(f"  {row['name']}: checked against {ref['repository']} {ref['file']} @ {ref['commit'][:7]}",
                      highlight=False)
        if row.get("combinations"):
            out.print(f"  {row['name']} with SLN and other switches: {row['combinations']}", highlight=False)


@app.command()
def cache(
    data_dir: Annotated[Path, typer.Option(help="The dataset folder to cache (Clothing1M or an image folder).")],
    out: Annotated[Path, typer.Option(help="The cache folder; train with --data-dir pointing here.")],
    # checked by build_cache, every problem at once: no Typer ranges here
    size: Annotated[int, typer.Option(help="Shorter side of the cached images, in pixels.")] = 256,
    quality: Annotated[int, typer.Option(help="JPEG quality of re-encoded JPEGs (other formats stay lossless).")] = 95,
    workers: Annotated[int | None, typer.Option(help="Processes (default: one per core; 0 = this one).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Resize every image of a file-backed dataset once to a shorter side of 256, into a mirror of its folder.

    Other files (annotation lists) are copied: train with --data-dir pointing at the cache. Run again to resume.

    Examples:

      $ sln cache --data-dir data/Clothing1M --out data/Clothing1M-256
    """
    from sln_cli.data.cache import build_cache

    summary = build_cache(data_dir, out, shorter_side=size, quality=quality,
                          workers=(os.cpu_count() or 1) if workers is None else workers, quiet=json_output,
                          console=console(stderr=True))
    if json_output:
        emit(summary)
    else:
        console().print(f"{summary['resized']} images resized, {summary['copied']} files copied, "
                        f"{summary['skipped']} already cached, in {summary['seconds']:.1f} s: {summary['out']}")
