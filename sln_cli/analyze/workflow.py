"""`sln analyze confidence` and `sln analyze landscape` on trained runs: load a checkpoint and its exact training
data (`sln_cli.training.checkpoints`), run the analyses of `sln_cli.analyze.*`, and return JSON-ready results
(`ConfidenceResult`, `LandscapeResult`) beside PNGs. The terminal views are `sln_cli/cli/analyze_view.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from sln_cli.analyze import Batch, mean_loss
from sln_cli.analyze.confidence import confidence_report, confidence_scores, per_sample_loss
from sln_cli.errors import SlnError
from sln_cli.render.json import plain
from sln_cli.rundir import readers, runs
from sln_cli.rundir.files import atomic_write, atomic_write_json
from sln_cli.rundir.ownership import prepare_output_dir
from sln_cli.training.checkpoints import (
    LoadedRun,
    SplitData,
    Target,
    check_compatible,
    check_datasets,
    epoch_checkpoints,
    file_label,
    load_run,
    load_states,
    predict,
    resolve_targets,
    split_data,
)
from sln_cli.training.devices import ieee_fp32, resolve_device


class ConfidenceResult(TypedDict):
    """`sln analyze confidence --json`: one run's clean vs mislabelled training samples."""

    run: str
    name: str
    checkpoint: str
    epoch: int | None
    weights: str  # raw or ema
    split: str  # train
    num_samples: int
    num_mislabelled: int
    realized_noise_rate: float
    auroc_loss: float | None  # how well the per-sample loss ranks the mislabelled samples first
    detection: dict[str, Any]  # the r·N highest losses flagged: flagged, precision, recall, score, noise_rate
    clean: dict[str, dict[str, Any]]  # per score (max_probability, entropy, margin, loss): mean, median, quantiles
    mislabelled: dict[str, dict[str, Any]]  # the same for the mislabelled samples
    memorisation: dict[str, Any]  # source, epochs, raw and ema: fraction predicted as the noisy and the true label
    plots: dict[str, str]  # what -> PNG path


class _Landscape(TypedDict):
    run: str
    name: str
    checkpoint: str
    epoch: int | None
    weights: str  # raw or ema (`both` gives one result of each)
    labels: str  # noisy or true: the labels the loss is measured against
    samples: int
    seed: int
    loss: float
    hessian_eigenvalues: list[float]
    hessian: dict[str, Any]  # Lanczos: eigenvalues, residuals, iterations, converged, tolerance, method
    hessian_trace: float
    hessian_trace_stderr: float
    hutchinson_samples: int
    rho: float
    sharpness_avg: float
    sharpness_avg_stderr: float
    sharpness_worst: float
    sharpness: dict[str, Any]  # average and worst, in full
    directions: str
    span: list[float]
    points: int
    curve: list[dict[str, float]]  # alpha, loss
    plots: dict[str, str]  # what -> PNG path (shared by every result of one call)


class LandscapeResult(_Landscape, total=False):
    """One entry of `sln analyze landscape --json` (always a list: one per run and weights)."""

    grid: dict[str, Any]  # --grid: alphas, betas, losses (points × points)
    interpolation: dict[str, Any]  # --interpolate: to, curve (t, loss)


CONTOUR_MAX_LOSS = 10.0  # contour levels stop here, as Li et al.'s plot_2D_contour (vmax=10)
LABELS = ("noisy", "true")
WEIGHT_CHOICES = ("raw", "ema")


def _out_dir(out: Path | None, target: Target) -> Path:
    return Path(out) if out is not None else target.run_dir / "analysis"


def one_target(path: str | Path, checkpoint: str | None, what: str) -> Target:
    targets = resolve_targets([path], checkpoint=checkpoint)
    if len(targets) != 1:
        raise SlnError(f"{what} takes one run or checkpoint; {path!r} matches {len(targets)}")
    return targets[0]


def check_weights(weights: str) -> None:
    if weights not in ("raw", "ema"):
        raise SlnError(f"unknown --weights {weights!r}; use raw or ema")


def json_ready(value: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN or Infinity), numpy scalars and arrays plain Python: the
    conversion of the one emitter (`sln_cli/render/json.py`)."""
    return plain(value)


# --------------------------------------------------------------------------------------------------
# sln analyze confidence
# --------------------------------------------------------------------------------------------------


@ieee_fp32()  # TF32 convolutions on GPUs would carry ~1e-3 relative error into every number
def analyze_confidence(target: str | Path, *, checkpoint: str | None = None, weights: str = "raw",
                       noise_rate: float | None = None, out: Path | None = None, device: str = "auto",
                       batch_size: int | None = None, overwrite: bool = False) -> ConfidenceResult:
    """Max-probability, entropy, margin and loss of clean vs mislabelled training samples, how well the loss
    flags the mislabelled ones (AUROC; precision / recall of the r·N highest losses), and the memorisation curve."""
    check_weights(weights)
    chosen = one_target(target, checkpoint, "sln analyze confidence")
    name = file_label(chosen.name)
    outputs = [f"confidence-{name}-{weights}.png", f"memorisation-{name}.png"]
    prepare_output_dir(_out_dir(out, chosen), outputs, overwrite=overwrite, create=False)  # before any work
    run = load_run(chosen, resolve_device(device))
    data = split_data(run, "train")
    assert data.noisy is not None  # the training split always has the labels the run trained on
    batch_size = run.config.run.eval_batch_size if batch_size is None else batch_size
    probs = predict(run.network(weights), data.images, batch_size=batch_size)
    report = confidence_report(probs, data.noisy, data.labels, noise_rate=noise_rate)
    mislabelled: np.ndarray = data.noisy != data.labels
    out_dir, label = _out_dir(out, run.target), f"{file_label(run.target.name)}-{weights}"
    prepare_output_dir(out_dir, outputs, overwrite=overwrite)

    from sln_cli.render.plots import plot_confidence_histograms, plot_memorisation

    plots = {"histograms": str(out_dir / f"confidence-{label}.png")}
    plot_confidence_histograms(plots["histograms"], confidence_scores(probs), mislabelled,
                               title=f"{run.target.name} ({weights} weights, epoch {run.epoch}): clean vs mislabelled",
                               losses=per_sample_loss(probs, data.noisy), auroc=report["detection"]["auroc"])
    memorisation = memorisation_curve(run, data, batch_size=batch_size)
    if memorisation["epochs"]:
        plots["memorisation"] = str(out_dir / f"memorisation-{file_label(run.target.name)}.png")
        plot_memorisation(plots["memorisation"], _memorisation_lines(memorisation),
                          ylabel="fraction of mislabelled training samples",
                          title=f"Memorisation of noisy labels: {run.target.name}")
    detection = report.pop("detection")
    auroc = detection.pop("auroc")  # top level as auroc_loss
    return json_ready({
        "run": str(run.target.run_dir), "name": run.target.name, "checkpoint": str(run.target.checkpoint),
        "epoch": run.epoch, "weights": weights, "split": "train", "num_samples": len(data.labels),
        "num_mislabelled": int(mislabelled.sum()), "realized_noise_rate": float(mislabelled.mean()),
        "auroc_loss": auroc, "detection": detection | {"score": "per-sample loss vs the noisy label",
                                                      "noise_rate": noise_rate},
        "clean": _group(report, "clean"), "mislabelled": _group(report, "mislabelled"),
        "memorisation": memorisation, "plots": plots})


def _group(report: dict[str, Any], group: str) -> dict[str, Any]:
    """One group's statistics of each score (mean, median, quantiles); its size is num_samples - num_mislabelled
    or num_mislabelled, so it is not repeated per score."""
    return {name: {key: value for key, value in stats[group].items() if key != "count"}
            for name, stats in report.items()}


def memorisation_curve(run: LoadedRun, data: SplitData, *, batch_size: int) -> dict[str, Any]:
    """Per epoch, the fraction of mislabelled training samples predicted as their noisy label and as their true
    label, for raw and EMA weights, from `checkpoints/epoch-*.pt`; without them, metrics.jsonl's `memorized`
    (raw network, training mode, augmented batches, measured during the epoch)."""
    mislabelled = np.flatnonzero(data.noisy != data.labels)
    paths = epoch_checkpoints(run.target.run_dir)
    if paths and len(mislabelled):
        subset = split_data(run, "train", subset=mislabelled)
        curve: dict[str, Any] = {"source": "checkpoints", "epochs": []}
        curve |= {weights: {"noisy_label": [], "true_label": []} for weights in ("raw", "ema")}
        for path in paths:
            states, epoch = load_states(path, run.device)
            curve["epochs"].append(epoch)
            for weights in ("raw", "ema"):
                predicted = predict(run.network(weights, states[weights]), subset.images,
                                    batch_size=batch_size).argmax(axis=1)
                curve[weights]["noisy_label"].append(float(np.mean(predicted == subset.noisy)))
                curve[weights]["true_label"].append(float(np.mean(predicted == subset.labels)))
        return curve
    rows = [row for row in runs.read_metrics(run.target.run_dir) if row.get("memorized") is not None]
    return {"source": "metrics.jsonl" if rows else None, "epochs": [row["epoch"] for row in rows],
            "raw": {"noisy_label": [row["memorized"] for row in rows], "true_label": None}, "ema": None}


def _memorisation_lines(curve: dict[str, Any]) -> dict[str, tuple[list, list]]:
    lines = {}
    for weights in ("raw", "ema"):
        for key, what in (("noisy_label", "noisy label (memorised)"), ("true_label", "true label")):
            if curve.get(weights) and curve[weights][key] is not None:
                during = " during training" if curve["source"] == "metrics.jsonl" else ""
                lines[f"{weights}: predicted as {what}{during}"] = (curve["epochs"], curve[weights][key])
    return lines


# --------------------------------------------------------------------------------------------------
# sln analyze landscape
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandscapeSettings:
    weights: str = "raw"
    points: int = 21  # per axis, over [-span, span]; the 2D grid is points x points
    span: float = 1.0  # in units of the filter-normalised direction (1 = as large as each filter)
    grid: bool = False
    samples: int = 2000  # seeded subset of the training set
    labels: str = "noisy"  # the loss of the labels trained on, or of the true labels
    seed: int = 0  # directions, the subset, Lanczos, Hutchinson and the sharpness draws
    rho: float = 0.05  # L2 radius of the sharpness ball (SAM's default)
    top_k: int = 3
    lanczos_iterations: int = 30
    tolerance: float = 1e-3  # relative residual of the Ritz pairs
    hutchinson_samples: int = 30
    sharpness_samples: int = 10
    ascent_steps: int = 5
    batch_size: int = 256

    def check(self) -> None:
        problems = [flag for flag, bad in [
            ("--points must be at least 2", self.points < 2), ("--span must be positive", self.span <= 0),
            ("--samples must be at least 1", self.samples < 1), ("--rho must be positive", self.rho <= 0),
            ("--top-k must be at least 1", self.top_k < 1),
            ("--lanczos-iterations must be at least --top-k", self.lanczos_iterations < self.top_k),
            ("--tolerance must be positive", self.tolerance <= 0),
            ("--hutchinson-samples must be at least 2", self.hutchinson_samples < 2),
            ("--sharpness-samples must be at least 2", self.sharpness_samples < 2),
            ("--ascent-steps must be at least 1", self.ascent_steps < 1),
            ("--batch-size must be at least 1", self.batch_size < 1)] if bad]
        if self.labels not in LABELS:
            problems.append(f"--labels must be noisy or true, not {self.labels!r}")
        if self.weights != "both":  # both: each run's raw network and its EMA, cut along the same directions
            check_weights(self.weights)
        if problems:
            raise SlnError("; ".join(problems))


@ieee_fp32()  # TF32 on GPUs: ~1e-3 relative error per Hessian-vector product, the Lanczos tolerance itself
def analyze_landscape(targets: Sequence[str | Path], *, checkpoint: str | None = None,
                      interpolate: str | Path | None = None, out: Path | None = None, device: str = "auto",
                      progress: bool = True, overwrite: bool = False, **settings: Any) -> list[LandscapeResult]:
    """Loss along seeded filter-normalised directions (1D, optionally a resumable 2D grid), interpolation towards
    another checkpoint, Hessian top eigenvalues and trace, and sharpness within rho, for each target; every run is
    cut along the same directions (same seed and architecture) and plotted together. `settings`: the fields of
    `LandscapeSettings`."""
    options = LandscapeSettings(**settings)
    options.check()
    resolved = resolve_targets(targets, checkpoint=checkpoint)
    check_datasets(resolved)
    other = None if interpolate is None else one_target(interpolate, None, "--interpolate")
    torch_device = resolve_device(device)
    out_dir = _out_dir(out, resolved[0])
    prepare_output_dir(out_dir, ["landscape-*"], overwrite=overwrite, create=False)  # before any work
    results, curves, grids, paths, first = [], {}, {}, {}, None
    for target in resolved:
        run = load_run(target, torch_device)
        first = first or replace(run, states={})  # keep its description, not its weights
        check_compatible([first, run])
        prepare_output_dir(out_dir, ["landscape-*"], overwrite=overwrite)  # curves, surfaces, resumable grids
        for weights in WEIGHT_CHOICES if options.weights == "both" else (options.weights,):
            result, curve, grid, path = _landscape_of(run, replace(options, weights=weights), other, out_dir,
                                                      [t.checkpoint for t in resolved], progress)
            results.append(result)
            key = target.name if options.weights != "both" else f"{target.name} ({weights})"
            curves[key], paths[key] = curve, path
            if grid is not None:
                grids[key] = grid
    samples = min(result["samples"] for result in results)  # every run has the same training set size
    plots = _plot_landscapes(out_dir, curves, grids, paths, other, options, samples)
    return [json_ready(result | {"plots": plots}) for result in results]


def _landscape_of(run: LoadedRun, options: LandscapeSettings, other: Target | None, out_dir: Path,
                  all_checkpoints: list[Path], progress: bool) -> tuple[dict, Any, Any, Any]:
    """One run's numbers (a JSON-ready dict) and its 1D curve, 2D grid and interpolation (None when not asked)."""
    model, (batches, subset) = run.network(options.weights), _training_batches(run, options)
    result: dict[str, Any] = {
        "run": str(run.target.run_dir), "name": run.target.name, "checkpoint": str(run.target.checkpoint),
        "epoch": run.epoch, "weights": options.weights, "labels": options.labels, "samples": len(subset),
        "seed": options.seed, "loss": mean_loss(model, batches)}
    curve, grid, interpolation = _cuts(run, model, batches, options, other, out_dir, all_checkpoints, progress)
    result |= _sharpness(model, batches, options)
    result |= {"directions": "Gaussian, filter-normalised (Li et al. 2018), biases and BatchNorm zero",
               "span": [-options.span, options.span], "points": options.points,
               "curve": [{"alpha": a, "loss": loss} for a, loss in zip(curve.coordinates, curve.losses, strict=True)]}
    if grid is not None:
        result["grid"] = {"alphas": grid.alphas, "betas": grid.betas, "losses": grid.losses}
    if interpolation is not None:
        assert other is not None  # an interpolation is made only towards --interpolate's target
        points = zip(interpolation.coordinates, interpolation.losses, strict=True)
        result["interpolation"] = {"to": str(other.checkpoint), "curve": [{"t": t, "loss": loss} for t, loss in points]}
    return result, curve, grid, interpolation


def _sharpness(model: torch.nn.Module, batches: list[Batch], options: LandscapeSettings) -> dict[str, Any]:
    """Top Hessian eigenvalues (Lanczos), the Hutchinson trace, average- and worst-case sharpness within rho."""
    from sln_cli.analyze.hessian import hessian_trace, top_eigenvalues
    from sln_cli.analyze.landscape import sharpness_average, sharpness_worst_case

    eigen = top_eigenvalues(model, batches, k=options.top_k, tolerance=options.tolerance,
                            max_iterations=options.lanczos_iterations, seed=options.seed)
    trace = hessian_trace(model, batches, samples=options.hutchinson_samples, seed=options.seed)
    average = sharpness_average(model, batches, rho=options.rho, samples=options.sharpness_samples, seed=options.seed)
    worst = sharpness_worst_case(model, batches, rho=options.rho, steps=options.ascent_steps, seed=options.seed)
    return {"hessian_eigenvalues": eigen.eigenvalues, "hessian": eigen.to_dict() | {"method": "Lanczos"},
            "hessian_trace": trace.estimate, "hessian_trace_stderr": trace.standard_error,
            "hutchinson_samples": trace.samples, "rho": options.rho,
            "sharpness_avg": average.increase, "sharpness_avg_stderr": average.standard_error,
            "sharpness_worst": worst.increase, "sharpness": {"average": average.to_dict(), "worst": worst.to_dict()}}


def _cuts(run: LoadedRun, model: torch.nn.Module, batches: list[Batch], options: LandscapeSettings,
          other: Target | None, out_dir: Path, all_checkpoints: list[Path], progress: bool) -> tuple[Any, Any, Any]:
    """The 1D curve, the resumable 2D grid (with --grid) and the interpolation (with --interpolate)."""
    from sln_cli.analyze.landscape import interpolate_states, loss_curve, random_direction

    generator = torch.Generator().manual_seed(options.seed)  # same seed, same architecture: same directions
    direction_x, direction_y = random_direction(model, generator), random_direction(model, generator)
    curve = loss_curve(model, batches, direction_x, span=(-options.span, options.span), points=options.points)
    grid = interpolation = None
    if options.grid:
        stem = out_dir / f"landscape-grid-{file_label(run.target.name)}-{options.weights}"
        grid = _resumable_grid(model, batches, direction_x, direction_y, options, stem,
                               _grid_fingerprint(run, options, all_checkpoints), progress, run.target.name)
    if other is not None:
        end, _ = load_states(other.checkpoint, run.device)
        interpolation = interpolate_states(model, batches, run.states[options.weights], end[options.weights],
                                           points=options.points)
    return curve, grid, interpolation


def _training_batches(run: LoadedRun, options: LandscapeSettings) -> tuple[list[Batch], np.ndarray]:
    """A seeded subset of `samples` training samples as fixed (inputs, labels) batches on the run's device."""
    size = len(run.trainset.noisy)
    subset = np.sort(np.random.default_rng(options.seed).choice(size, size=min(options.samples, size), replace=False))
    data = split_data(run, "train", subset=subset, true_labels=options.labels == "true")
    labels = torch.as_tensor(data.noisy if options.labels == "noisy" else data.labels, device=run.device)
    order = torch.arange(len(subset), device=run.device)
    return [(images, labels[index]) for images, index in data.images.batches(order, options.batch_size)], subset


def _grid_fingerprint(run: LoadedRun, options: LandscapeSettings, all_checkpoints: list[Path]) -> dict[str, Any]:
    """What a saved partial grid must have been computed with to be resumed."""
    stat = run.target.checkpoint.stat()
    return {"runs": [str(path.resolve()) for path in all_checkpoints],
            "checkpoint": str(run.target.checkpoint.resolve()), "checkpoint_bytes": stat.st_size,
            "checkpoint_mtime_ns": stat.st_mtime_ns, "weights": options.weights, "seed": options.seed,
            "span": options.span, "points": options.points, "samples": options.samples, "labels": options.labels}


def _resumable_grid(model: torch.nn.Module, batches: list[Batch], direction_x: dict, direction_y: dict,
                    options: LandscapeSettings, stem: Path, fingerprint: dict[str, Any], progress: bool,
                    name: str) -> Any:
    """The 2D grid, saved (atomically) after every point as STEM.npy with its settings in STEM.json; a re-run
    with the same settings resumes from it (or returns it at once when it is complete)."""
    from sln_cli.analyze.landscape import loss_surface

    grid_path, meta_path = stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")
    partial = _saved_grid(grid_path, meta_path, fingerprint, (options.points, options.points))
    if partial is None:  # grid first, then settings: a kill in between never pairs new settings with an old grid
        _save_grid(grid_path, np.full((options.points, options.points), np.nan))
        atomic_write_json(meta_path, fingerprint)
    span = (-options.span, options.span)
    with _grid_progress(progress, name, options.points ** 2, partial) as advance:
        def on_point(done: int, total: int, losses: np.ndarray) -> None:
            _save_grid(grid_path, losses)
            advance(done)

        return loss_surface(model, batches, direction_x, direction_y, span_x=span, span_y=span,
                            points_x=options.points, points_y=options.points, partial=partial, on_point=on_point)


def _saved_grid(grid_path: Path, meta_path: Path, fingerprint: dict[str, Any], shape: tuple[int, int]
                ) -> np.ndarray | None:
    try:
        if readers.read_json(meta_path, what="landscape grid record") != fingerprint:
            return None
        partial = readers.read_npy(grid_path, what="landscape grid", max_bytes=1 << 30)
    except SlnError:  # missing, unreadable, truncated or not ours (bounded readers): start over
        return None
    return partial if partial.shape == shape else None


def _save_grid(path: Path, losses: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, losses)


@contextlib.contextmanager
def _grid_progress(show: bool, name: str, total: int, partial: np.ndarray | None):
    """A rich progress bar on stderr (stdout stays for tables and JSON); `advance(done)` moves it."""
    if not show:
        yield lambda done: None
        return
    from rich.console import Console

    from sln_cli.render.progress import progress_bar

    done = 0 if partial is None else int(np.count_nonzero(~np.isnan(partial)))
    with progress_bar(Console(stderr=True)) as bar:
        resumed = f" (resumed at {done})" if done else ""
        task = bar.add_task(f"2D grid {name}{resumed}", total=total, completed=done)
        yield lambda count: bar.update(task, completed=count)


def _plot_landscapes(out_dir: Path, curves: dict, grids: dict, interpolations: dict, other: Target | None,
                     options: LandscapeSettings, samples: int) -> dict[str, str]:
    from sln_cli.render.plots import plot_landscape_curves, plot_landscape_surfaces

    where = f"{options.weights} weights, {samples} samples, {options.labels} labels, seed {options.seed}"
    plots = {"curves": str(out_dir / f"landscape-curve-{options.weights}.png")}
    plot_landscape_curves(plots["curves"], curves, title=f"Loss along a random filter-normalised direction\n{where}")
    if grids:
        plots["surfaces"] = str(out_dir / f"landscape-surface-{options.weights}.png")
        plot_landscape_surfaces(plots["surfaces"], grids, max_loss=CONTOUR_MAX_LOSS,
                                title=f"Loss surface on shared levels: {where}")
    if other is not None:
        plots["interpolation"] = str(out_dir / f"landscape-interpolation-{options.weights}.png")
        plot_landscape_curves(plots["interpolation"], interpolations, xlabel=f"t (0 = run, 1 = {other.name})",
                              title=f"Linear interpolation towards {other.name}\n{where}")
    return plots
