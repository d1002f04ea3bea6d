"""`sln analyze`: confidence, label issues, the noise rate and the loss landscape of trained runs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sln_cli.cli.app import (
    BatchSizeOption,
    CheckpointOption,
    DeviceOption,
    JsonOption,
    OverwriteOption,
    app,
    console,
    emit,
    flag,
    help_without_command,
    value,
)


class Weights(str, Enum):
    raw = "raw"
    ema = "ema"


class LandscapeWeights(str, Enum):
    raw = "raw"
    ema = "ema"
    both = "both"


class Score(str, Enum):
    loss = "loss"
    probability = "probability"
    clean_probability = "clean-probability"


class Compare(str, Enum):
    cleanlab = "cleanlab"


class WriteLabels(str, Enum):
    relabel = "relabel"
    drop = "drop"


class Labels(str, Enum):
    noisy = "noisy"
    true = "true"


analyze_app = typer.Typer(
    name="analyze", help="Confidence, label issues and loss-landscape / sharpness statistics of trained runs.",
)
app.add_typer(analyze_app)


@analyze_app.callback(invoke_without_command=True)
def _analyze(context: typer.Context) -> None:
    """Bare `sln analyze` prints its help and exits 0, as bare `sln` does."""
    help_without_command(context)


OutOption = Annotated[Path | None, typer.Option(help="Folder for the PNGs (default: RUN/analysis).")]


@analyze_app.command()
def confidence(
    target: Annotated[str, typer.Argument(metavar="RUN_OR_CHECKPOINT", help="A run directory or a .pt file in one.")],
    checkpoint: CheckpointOption = None,
    weights: Annotated[Weights, typer.Option(help="raw (SLN) or ema (SLN-MO) weights.")] = Weights.raw,
    noise_rate: Annotated[
        float | None, typer.Option(help="Flag the r·N highest losses (default r: the realised noise rate).")
    ] = None,
    out: OutOption = None,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = None,
    json_output: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Confidence of clean vs mislabelled training samples, and how well the loss spots the mislabelled ones.

    Max-probability, entropy, margin; loss AUROC and precision/recall of the r·N highest losses; memorisation curve.

    Examples:

      $ sln analyze confidence runs/qs
      $ sln analyze confidence runs/qs --weights ema --out conf
    """
    from sln_cli.analyze.workflow import analyze_confidence

    result = analyze_confidence(
        target, checkpoint=checkpoint, weights=weights.value, noise_rate=noise_rate, out=out, device=device,
        batch_size=batch_size, overwrite=overwrite,
    )
    if json_output:
        emit(result)
    else:
        from sln_cli.cli.analyze_view import render_confidence

        render_confidence(result, console())


@analyze_app.command()
def issues(
    target: Annotated[str, typer.Argument(metavar="RUN_OR_CHECKPOINT", help="A run directory or a .pt file in one.")],
    checkpoint: CheckpointOption = None,
    weights: Annotated[Weights, typer.Option(help="ema (SLN-MO, default) or raw (SLN) weights.")] = Weights.ema,
    score: Annotated[
        Score, typer.Option(help="loss (-log p of the given label; default), probability (p of the given label) or "
                                 "clean-probability (a DivideMix run's clean posterior).")
    ] = Score.loss,
    average_checkpoints: Annotated[
        bool, flag(help="Average the softmax over the run's kept epoch checkpoints (run.keep_checkpoints).")
    ] = False,
    top: Annotated[int | None, typer.Option(
        help="Rows printed and images on the contact sheet; precision at k = top (default 20). With --write-labels: "
             "change these N most suspect samples.")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Flag loss >= T (or probability <= T); default: flag where argmax differs from the label."),
    ] = None,
    noise_rate: Annotated[
        float | None,
        typer.Option(help="With true labels: precision/recall of the r·N most suspect (default: the realised r)."),
    ] = None,
    compare: Annotated[
        Compare | None, typer.Option(help="cleanlab: also run cleanlab's find_label_issues on the same probabilities.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for issues.csv and contact-sheet.png (default: RUN/analysis/issues-*).")
    ] = None,
    write_labels: Annotated[WriteLabels | None, typer.Option(
        help="relabel or drop: write OUT/labels-ACTION.csv (+ manifest), the run's labels with the flagged samples "
             "(or the --top N) relabelled to the suggested class or left out, for `sln train --labels`.")] = None,
    overwrite: Annotated[
        bool, flag(help="Replace issues.csv, contact-sheet.png and labels-*.csv in an --out sln did not make.")
    ] = False,
    device: DeviceOption = "auto",
    batch_size: BatchSizeOption = None,
    json_output: JsonOption = False,
) -> None:
    """The training samples whose given label is probably wrong, ranked, with a suggested label (works without truth).

    Writes issues.csv (every sample, most suspect first) and a contact sheet of the top images; with true labels
    known, precision/recall at r·N, precision at k and AUROC; --compare cleanlab runs cleanlab beside it.

    Examples:

      $ sln analyze issues runs/qs --top 30
      $ sln analyze issues runs/qs --write-labels relabel --out cleaned
      $ sln analyze issues runs/qs --write-labels drop --top 50
    """
    from sln_cli.analyze import issues as issues_lib

    result = issues_lib.analyze_issues(
        target, checkpoint=checkpoint, out=out, device=device, overwrite=overwrite, weights=weights.value,
        score=score.value, average_checkpoints=average_checkpoints, top=20 if top is None else top,
        threshold=threshold, noise_rate=noise_rate, compare=value(compare), batch_size=batch_size,
        write_labels=value(write_labels),
        write_top=top if write_labels is not None else None,
    )
    if json_output:
        emit(result)
    else:
        from sln_cli.cli.analyze_view import render_issues

        render_issues(result, console())


@analyze_app.command()
def noise(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run directory trained with --record-probs.")],
    out: OutOption = None,
    json_output: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """The noise rate and transition matrix of a run's labels, estimated from its probs.npy without the truth:
    anchor points (as forward correction) and cleanlab's confident joint; errors and heat maps beside the truth.

    Examples:

      $ sln analyze noise runs/qs
      $ sln analyze noise runs/qs --json --out noise
    """
    from sln_cli.analyze import noise_rate

    result = noise_rate.analyze_noise(run, out=out, overwrite=overwrite)
    if json_output:
        emit(result)
    else:
        from sln_cli.cli.analyze_view import render_noise

        render_noise(result, console())


@analyze_app.command()
def landscape(
    targets: Annotated[
        list[str], typer.Argument(metavar="RUN_OR_CHECKPOINT", help="Runs cut along the same directions.")
    ],
    checkpoint: CheckpointOption = None,
    weights: Annotated[
        LandscapeWeights, typer.Option(help="raw (SLN), ema (SLN-MO) or both (each cut along the same directions).")
    ] = LandscapeWeights.raw,
    points: Annotated[int, typer.Option(help="Points per axis over [-span, span] (and of the interpolation).")] = 21,
    span: Annotated[float, typer.Option(help="Half-width of the cut, in filter-normalised units.")] = 1.0,
    grid: Annotated[bool, flag(help="Also the 2D points×points grid (slow; resumes if interrupted).")] = False,
    samples: Annotated[int, typer.Option(help="Seeded subset of training samples the loss is measured on.")] = 2000,
    labels: Annotated[Labels, typer.Option(help="Loss against the noisy labels trained on, or the true ones.")]
    = Labels.noisy,
    seed: Annotated[int, typer.Option(help="Seed of the directions, the subset and the estimators.")] = 0,
    rho: Annotated[float, typer.Option(help="L2 radius for average- and worst-case sharpness.")] = 0.05,
    top_k: Annotated[int, typer.Option(help="Number of top Hessian eigenvalues (Lanczos).")] = 3,
    lanczos_iterations: Annotated[int, typer.Option(help="Most Lanczos steps (Hessian-vector products).")] = 30,
    tolerance: Annotated[float, typer.Option(help="Relative residual at which Lanczos stops.")] = 1e-3,
    hutchinson_samples: Annotated[int, typer.Option(help="Rademacher vectors for the Hessian trace.")] = 30,
    sharpness_samples: Annotated[int, typer.Option(help="Random directions for average-case sharpness.")] = 10,
    ascent_steps: Annotated[int, typer.Option(help="Gradient-ascent steps for worst-case sharpness.")] = 5,
    interpolate: Annotated[
        str | None, typer.Option(help="Also the loss on the line from each run to this run or checkpoint.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for PNGs and the resumable grid (default: RUN/analysis of the first).")
    ] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(help="Batch size of the loss and Hessian passes.")] = 256,
    json_output: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Loss landscape and sharpness: Hessian eigenvalues and trace, sharpness within rho, 1D/2D cuts.

    Seeded filter-normalised directions (Li et al. 2018), the same for every run given; PNG plots and JSON.

    Examples:

      $ sln analyze landscape runs/qs-ce runs/qs-sln
      $ sln analyze landscape runs/qs --grid --points 11
    """
    from sln_cli.analyze.workflow import analyze_landscape

    results = analyze_landscape(
        targets, checkpoint=checkpoint, interpolate=interpolate, out=out, device=device, progress=not json_output,
        overwrite=overwrite,
        weights=weights.value, points=points, span=span, grid=grid, samples=samples, labels=labels.value, seed=seed,
        rho=rho,
        top_k=top_k, lanczos_iterations=lanczos_iterations, tolerance=tolerance,
        hutchinson_samples=hutchinson_samples, sharpness_samples=sharpness_samples, ascent_steps=ascent_steps,
        batch_size=batch_size,
    )
    if json_output:
        emit(results)  # always a list, one entry per run and weights (one run printed an object before issue 21)
    else:
        from sln_cli.cli.analyze_view import render_landscape

        render_landscape(results, console())
