"""`sln corrupt`: build a noisy-label file, summarise one (--inspect), or fill the official label cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sln_cli.cli.app import JsonOption, app, console, emit, flag


@app.command()
def corrupt(
    dataset: Annotated[
        str | None,
        typer.Option(help="cifar10, cifar100, digits, imagefolder, clothing1m, animal10n or webvision-mini."),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset lives (see README).")] = None,
    download: Annotated[bool, flag(help="Fetch the official archive (checksummed) if it is missing.")] = False,
    mode: Annotated[
        str | None,
        typer.Option(help="sym, uniform, asym, asym-superclass, transition, dependent, idn or openset."),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Requested noise rate r in [0, 1].")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the numpy Generator; the same seed gives the same file.")] = 0,
    exact: Annotated[
        bool, flag(help="sym/uniform: flip exactly round(r*N) samples instead of each with probability r.")
    ] = False,
    matrix: Annotated[
        Path | None, typer.Option(help="K×K row-stochastic transition matrix (.npy/.csv, rows = true class).")
    ] = None,
    probs: Annotated[
        Path | None,
        typer.Option(help="dependent: N×K averaged softmax (.npy) or a run directory trained with --record-probs."),
    ] = None,
    source_dataset: Annotated[
        str | None, typer.Option(help="openset: dataset whose images replace ours (cifar100 in the paper).")
    ] = None,
    source_data_dir: Annotated[Path | None, typer.Option(help="openset: where the source dataset lives.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output CSV; its JSON manifest is written beside it.")] = None,
    inspect: Annotated[
        Path | None, typer.Option(help="Summarise an existing label file (.csv or CIFAR-N .pt) instead.")
    ] = None,
    label_set: Annotated[
        str | None, typer.Option(help="CIFAR-N .pt: which label set, e.g. worse_label, aggre_label, noisy_label.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="With --inspect: draw the transition matrix to this PNG (and, with --dataset, flipped "
                          "examples per class to PNG-examples.png)."),
    ] = None,
    fetch_official: Annotated[
        str | None,
        typer.Option(help="Download the papers' pinned label files (NAME, e.g. cifar10/sym0.4, or all) into "
                          "$SLN_CACHE/labels, verified by sha256, for later offline use as --labels official:NAME."),
    ] = None,
    json_output: JsonOption = False,
    overwrite: Annotated[
        bool, flag(help="Replace the label file in --out (only one sln wrote, with its manifest), or with "
                        "--inspect the --plot PNGs.")
    ] = False,
) -> None:
    """Build a noisy-label file, or summarise an existing one (--inspect), reporting the realised noise.

    --inspect also takes official:NAME, one of the papers' own label files (see --fetch-official).

    Examples:

      $ sln corrupt --dataset digits --mode sym --rate 0.4 --out labels.csv
      $ sln corrupt --inspect labels.csv --dataset digits --plot noise.png
    """
    from sln_cli.labels import corrupt as corrupt_lib

    corrupt_lib.check_flags({
        "--mode": mode, "--rate": rate, "--out": out, "--matrix": matrix, "--probs": probs,
        "--source-dataset": source_dataset, "--exact": exact or None, "--overwrite": overwrite or None,
        "--inspect": inspect, "--dataset": dataset, "--plot": plot, "--label-set": label_set,
        "--fetch-official": fetch_official,
    })
    if fetch_official is not None:
        _fetch_official(fetch_official, json_output)
        return
    if inspect is not None:
        summary = corrupt_lib.inspect(inspect, label_set=label_set, dataset=dataset, data_dir=data_dir, plot=plot,
                                      overwrite=overwrite)
    else:
        summary = corrupt_lib.generate(
            dataset=dataset, data_dir=data_dir, download=download, mode=mode, rate=rate, seed=seed, exact=exact,
            matrix=matrix, probs=probs, source_dataset=source_dataset, source_data_dir=source_data_dir, out=out,
            overwrite=overwrite,
        )
    if json_output:
        emit(summary)
    else:
        corrupt_lib.render(summary, console())


def _fetch_official(which: str, json_output: bool) -> None:
    from sln_cli.labels import official

    fetched = official.fetch_many(which)
    if json_output:
        emit(fetched)
        return
    for row in fetched:
        print(f"{row['status']:>10}  official:{row['name']}  {row['path']}  sha256 {row['sha256'][:12]}…")
