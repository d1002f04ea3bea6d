"""`sln evaluate`: accuracy and calibration of runs side by side, per weights, pooled over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sln_cli.cli.app import BatchSizeOption, CheckpointOption, DeviceOption, JsonOption, app, console, emit, flag


@app.command()
def evaluate(
    targets: Annotated[
        list[str], typer.Argument(metavar="RUN_OR_CHECKPOINT", help="Run directories or .pt files in one; globs ok.")
    ],
    checkpoint: CheckpointOption = None,
    weights: Annotated[str, typer.Option(help="raw (SLN), ema (SLN-MO) or both.")] = "both",
    split: Annotated[
        str, typer.Option(help="test, val, train (needs true labels; adds clean/mislabelled accuracy), ilsvrc12 "
                               "(webvision-mini's second test set), or noisy-val (the samples the run held out, "
                               "data.noisy_val: accuracy on their noisy labels, and true ones when known).")
    ] = "test",
    out: Annotated[
        Path | None, typer.Option(help="Folder for the reliability diagram (default: RUN/analysis of the first run).")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None,
    save_predictions: Annotated[
        Path | None,
        typer.Option(help="FILE.npz of probs (N×K), labels, indices; with several runs or weights each file gets "
                          "-<run>-<weights> before .npz."),
    ] = None,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = None,
    per_class: Annotated[
        bool, flag(help="Also per-class accuracy, the confusion matrix (JSON \"per_class\") and its PNG per run.")
    ] = False,
    json_output: JsonOption = False,
    overwrite: Annotated[
        bool, flag(help="Replace existing --csv / --save-predictions files and diagrams in a folder sln "
                                "did not make.")
    ] = False,
) -> None:
    """Accuracy and calibration of runs side by side (mean ± std over runs that differ only in their seed).

    Top-1 (top-5 when K >= 20), NLL, Brier, ECE (15 equal-width bins), adaptive ECE (15 equal-mass bins), MCE.

    Examples:

      $ sln evaluate runs/qs-ce runs/qs-sln
      $ sln evaluate runs/qs --split train --per-class --out eval
    """
    from sln_cli import evaluate as evaluate_lib

    evaluation = evaluate_lib.evaluate(
        targets, checkpoint=checkpoint, weights=weights, split=split, out=out, csv_path=csv,
        save_predictions=save_predictions, device=device, batch_size=batch_size, overwrite=overwrite,
        per_class=per_class,
    )
    if json_output:
        emit(evaluation.rows)
    else:
        evaluate_lib.render(evaluation, console())
