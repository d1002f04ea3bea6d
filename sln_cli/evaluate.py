"""`sln evaluate`: load runs and checkpoints, predict un-augmented class probabilities, and compare accuracy and
calibration across runs (mean ± std over seeds) as a table, JSON, CSV, saved predictions and a reliability diagram.
Finding and loading runs lives in `sln_cli.training.checkpoints`, shared with `sln analyze`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from sln_cli.analyze.calibration import BINS, calibration_report
from sln_cli.config import Config, to_dict
from sln_cli.errors import SlnError
from sln_cli.methods import display_name
from sln_cli.rundir import experiments
from sln_cli.rundir.files import atomic_write, atomic_write_text
from sln_cli.rundir.ownership import check_replaceable, prepare_output_dir
from sln_cli.training.checkpoints import (
    NOISY_VAL,
    SPLITS,
    LoadedRun,
    SplitData,
    Target,
    check_compatible,
    check_datasets,
    file_label,
    load_run,
    predict,
    resolve_targets,
    split_data,
)
from sln_cli.training.devices import resolve_device

WEIGHTS = ("raw", "ema")  # the network trained (SLN) and its weight EMA (SLN-MO)
SEED_KEYS = experiments.SEED_KEYS  # runs whose configs differ only here are repeats over seeds (as `sln report`)
METRICS = ("accuracy", "top5", "nll", "brier", "ece", "ece_adaptive", "mce", "accuracy_noisy", "memorized")
TOP5_MIN_CLASSES = 20


# --------------------------------------------------------------------------------------------------
# sln evaluate
# --------------------------------------------------------------------------------------------------


class _Row(TypedDict):
    run: str
    name: str
    checkpoint: str
    epoch: int | None
    weights: str  # raw or ema
    method: str  # the method that trained the run and these weights (CE, SLN-MO, GCE-MO, ...)
    split: str
    num_samples: int
    num_classes: int
    seed: int
    sigma: float
    accuracy: float
    nll: float
    brier: float
    ece: float
    ece_adaptive: float
    mce: float
    ece_bins: int
    binning: str
    ece_adaptive_bins: int
    ece_adaptive_binning: str
    nll_probability_floor: float
    brier_convention: str
    labels: str  # which labels the metrics use
    reliability: dict[str, Any]  # the equal-width bins: edges, counts, confidence, accuracy
    reliability_diagram: str  # its PNG


class EvaluationRow(_Row, total=False):
    """One run and weights of `sln evaluate --json` (the seed aggregates after them are `SeedAggregate`s); the
    keys below only where they apply."""

    top5: float  # K >= 20
    accuracy_noisy: float  # against the labels trained on (train split), or the only labels (noisy-val)
    clean: dict[str, Any]  # train split: num_samples, accuracy of the correctly labelled samples
    mislabelled: dict[str, Any]  # the same for the mislabelled ones
    memorized: float | None  # mislabelled samples predicted as their wrong label
    per_class: dict[str, Any]  # --per-class: accuracy, count, confusion matrix
    confusion_matrix_png: str  # --per-class
    predictions: str  # --save-predictions: this row's .npz


class _Aggregate(TypedDict):
    aggregate: bool  # true
    run: str  # the names of its runs
    name: str
    runs: list[str]
    seeds: list[int]
    weights: str
    method: str
    split: str
    num_runs: int
    num_samples: int
    std_ddof: int


class SeedAggregate(_Aggregate, total=False):
    """Mean and sample std (`<metric>` and `<metric>_std`) of runs that differ only in their seed; a metric
    some run lacks is left out."""

    accuracy: float
    accuracy_std: float
    top5: float
    top5_std: float
    nll: float
    nll_std: float
    brier: float
    brier_std: float
    ece: float
    ece_std: float
    ece_adaptive: float
    ece_adaptive_std: float
    mce: float
    mce_std: float
    accuracy_noisy: float
    accuracy_noisy_std: float
    memorized: float
    memorized_std: float


@dataclass(frozen=True)
class Evaluation:
    rows: list[dict[str, Any]]  # `EvaluationRow`s (one per run and weights), then `SeedAggregate`s
    split: str
    files: dict[str, str]  # what was written: reliability diagram, csv, predictions


def evaluate(targets: Sequence[str | Path], *, checkpoint: str | None = None, weights: str = "both",
             split: str = "test", out: Path | None = None, csv_path: Path | None = None,
             save_predictions: Path | None = None, device: str = "auto",
             batch_size: int | None = None, overwrite: bool = False, per_class: bool = False) -> Evaluation:
    """Accuracy (top-5 when K >= 20), NLL, Brier, ECE / adaptive ECE / MCE (15 bins) of every target and weights.

    Several (run, weights) with `save_predictions`: each file gets `-<run>-<weights>` before its suffix.
    `per_class`: each row also gets "per_class" (accuracy, count, confusion matrix), drawn as confusion-*.png.
    """
    chosen = _weights(weights)
    if split not in SPLITS:
        raise SlnError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
    resolved = resolve_targets(targets, checkpoint=checkpoint)
    check_datasets(resolved)
    out_dir = out if out is not None else resolved[0].run_dir / "analysis"
    _check_outputs(resolved, chosen, csv_path, save_predictions, out_dir, split, overwrite)  # before any work
    torch_device = resolve_device(device)
    rows, diagrams, configs, first = [], {}, {}, None
    for target in resolved:
        run = load_run(target, torch_device)
        first = first or dataclasses.replace(run, states={})  # keep its description, not its weights
        check_compatible([first, run])
        data = split_data(run, split)
        configs[target.name] = run.config
        batch = run.config.run.eval_batch_size if batch_size is None else batch_size  # 0 is an error, not a default
        for weight in chosen:
            probs = predict(run.network(weight), data.images, batch_size=batch)
            row, bins = _metrics_row(run, data, weight, probs)
            if per_class:
                row["per_class"] = per_class_report(probs.argmax(axis=1), data.labels, run.trainset.dataset.classes)
            if save_predictions is not None:
                path = _predictions_path(save_predictions, target.name, weight, several=len(resolved) * len(chosen) > 1)
                _save_predictions(path, probs, data, row)
                row["predictions"] = str(path)
            rows.append(row)
            diagrams[f"{target.name} ({weight})"] = bins
    files = {}
    prepare_output_dir(out_dir, _owned_names(split), overwrite=overwrite)
    files["reliability_diagram"] = str(out_dir / f"reliability-{split}.png")
    from sln_cli.render.plots import plot_reliability

    plot_reliability(files["reliability_diagram"], diagrams,
                     title=f"Reliability diagram, {split} split ({BINS} equal-width bins)")
    rows = [row | {"reliability_diagram": files["reliability_diagram"]} for row in rows]
    if per_class:
        rows = [row | {"confusion_matrix_png": _plot_confusion(out_dir, row)} for row in rows]
        files["confusion_matrices"] = ", ".join(row["confusion_matrix_png"] for row in rows)
    rows += seed_aggregates(rows, configs)
    if csv_path is not None:
        write_csv(csv_path, rows)
        files["csv"] = str(csv_path)
    if save_predictions is not None:
        files["predictions"] = ", ".join(row["predictions"] for row in rows if "predictions" in row)
    return Evaluation(rows, split, files)


def _check_outputs(resolved: Sequence[Target], chosen: tuple[str, ...], csv_path: Path | None,
                   save_predictions: Path | None, out_dir: Path, split: str, overwrite: bool) -> None:
    """Files the user named are replaced only with --overwrite; the diagram's folder by `prepare_output_dir`."""
    if csv_path is not None:
        check_replaceable(csv_path, overwrite=overwrite)
    if save_predictions is not None:
        several = len(resolved) * len(chosen) > 1
        for target in resolved:
            for weight in chosen:
                check_replaceable(_predictions_path(save_predictions, target.name, weight, several=several),
                                  overwrite=overwrite)
    prepare_output_dir(out_dir, _owned_names(split), overwrite=overwrite, create=False)


def _owned_names(split: str) -> list[str]:
    """What evaluate writes into its output folder (refreshed there when sln made the folder)."""
    return [f"reliability-{split}.png", f"confusion-{split}-*.png"]


def per_class_report(predicted: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class accuracy (recall) and sample count, and the confusion matrix (row = true class, column =
    predicted; counts). A class with no samples in the split has accuracy None."""
    size = len(classes)
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    counts = matrix.sum(axis=1)
    accuracy = [float(matrix[k, k] / counts[k]) if counts[k] else None for k in range(size)]
    return {"classes": list(classes), "accuracy": accuracy, "count": counts.tolist(),
            "confusion_matrix": matrix.tolist()}


def _plot_confusion(out_dir: Path, row: dict[str, Any]) -> str:
    from sln_cli.render.plots import plot_confusion_matrix

    path = out_dir / f"confusion-{row['split']}-{file_label(row['name'])}-{row['weights']}.png"
    report = row["per_class"]
    plot_confusion_matrix(path, np.asarray(report["confusion_matrix"]), report["classes"],
                          title=f"{row['name']} ({row['method']}), {row['split']} split: accuracy "
                                f"{100 * row['accuracy']:.1f}%")
    return str(path)


def _weights(weights: str) -> tuple[str, ...]:
    if weights == "both":
        return WEIGHTS
    if weights not in WEIGHTS:
        raise SlnError(f"unknown --weights {weights!r}; use raw, ema or both")
    return (weights,)


def _metrics_row(run: LoadedRun, data: SplitData, weights: str, probs: np.ndarray) -> tuple[dict, Any]:
    report = calibration_report(probs, data.labels, top5=run.num_classes >= TOP5_MIN_CLASSES)
    row: dict[str, Any]  # values of every JSON type
    row = {"run": str(run.target.run_dir), "name": run.target.name, "checkpoint": str(run.target.checkpoint),
           "epoch": run.epoch, "weights": weights, "split": data.name, "num_samples": len(data.labels),
           "num_classes": run.num_classes, "seed": run.config.run.seed, "sigma": run.config.sln.sigma,
           "method": display_name(run.config, weights)}
    row |= report.to_dict()
    row["labels"] = "dataset labels"
    if data.noisy is not None:
        predicted, mislabelled = probs.argmax(axis=1), data.noisy != data.labels
        row["labels"] = "true labels of the label file"
        row["accuracy_noisy"] = float(np.mean(predicted == data.noisy))
        for group, mask in (("clean", ~mislabelled), ("mislabelled", mislabelled)):
            row[group] = _group_accuracy(predicted[mask], data.labels[mask])
        # the fraction of mislabelled samples predicted as their wrong label (of clean ones: their accuracy)
        fitted = predicted[mislabelled] == data.noisy[mislabelled]
        row["memorized"] = float(fitted.mean()) if fitted.size else None
    elif data.name == NOISY_VAL:  # true labels unknown: the held-out samples are scored on their noisy labels
        row["labels"] = "noisy labels (true labels unknown)"
        row["accuracy_noisy"] = row["accuracy"]
    row["reliability"] = report.reliability.to_dict()
    return row, report.reliability


def _group_accuracy(predicted: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    """How many samples of a group (clean or mislabelled) and the accuracy against their true label."""
    if len(predicted) == 0:
        return {"num_samples": 0, "accuracy": None}
    return {"num_samples": len(predicted), "accuracy": float(np.mean(predicted == true))}


def _predictions_path(path: Path, name: str, weights: str, *, several: bool) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    return path.with_name(f"{path.stem}-{file_label(name)}-{weights}.npz") if several else path


def _save_predictions(path: Path, probs: np.ndarray, data: SplitData, row: dict[str, Any]) -> None:
    """probs (N, K), labels (those the metrics use), indices (into `indices_of`), and the train split's
    noisy_labels; strings are plain unicode arrays, so `np.load` needs no pickle."""
    arrays: dict[str, Any]
    arrays = {"probs": probs, "labels": data.labels, "indices": data.indices, "indices_of": np.str_(data.indices_of),
              "run": np.str_(row["run"]), "checkpoint": np.str_(row["checkpoint"]), "weights": np.str_(row["weights"]),
              "split": np.str_(row["split"])}
    if data.noisy is not None:
        arrays["noisy_labels"] = data.noisy
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


# --------------------------------------------------------------------------------------------------
# Seeds, CSV, the table
# --------------------------------------------------------------------------------------------------


def seed_aggregates(rows: list[dict[str, Any]], configs: dict[str, Config]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1) of each metric over runs of the same experiment
    (`sln_cli.rundir.experiments`, as `sln report` pools them), per checkpoint choice and weights; groups of one run
    give nothing."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        choice = Path(row["checkpoint"]).stem
        key = experiments.experiment_key(to_dict(configs[row["name"]])) + choice
        groups.setdefault((key, row["weights"]), []).append(row)
    aggregates = []
    for members in groups.values():
        if len({row["run"] for row in members}) < 2:
            continue
        seeds = [row["seed"] for row in members]
        summary = {"aggregate": True, "run": ", ".join(row["name"] for row in members),
                   "name": f"mean ± std over {len(members)} seeds", "runs": [row["run"] for row in members],
                   "seeds": seeds, "weights": members[0]["weights"], "method": members[0]["method"],
                   "split": members[0]["split"],
                   "num_runs": len(members), "num_samples": members[0]["num_samples"], "std_ddof": 1}
        for metric in METRICS:
            values = [row[metric] for row in members if row.get(metric) is not None]
            if len(values) == len(members):
                summary[metric], summary[f"{metric}_std"] = float(np.mean(values)), float(np.std(values, ddof=1))
        aggregates.append(summary)
    return aggregates


CSV_COLUMNS = ("aggregate", "name", "run", "checkpoint", "epoch", "weights", "method", "split", "num_samples", "seed",
               "sigma", *(f"{metric}{suffix}" for metric in METRICS for suffix in ("", "_std")),
               "clean_accuracy", "mislabelled_accuracy", "ece_bins", "binning", "predictions")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One line per row; nested entries flattened (clean/mislabelled accuracy), the rest left out."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = dict(row, aggregate=bool(row.get("aggregate")))
        for group in ("clean", "mislabelled"):
            if isinstance(row.get(group), dict):
                flat[f"{group}_accuracy"] = row[group]["accuracy"]
        writer.writerow(flat)
    atomic_write_text(path, buffer.getvalue())


def render(evaluation: Evaluation, console: Any) -> None:
    """The comparison table (per run and weights, then mean ± std over seeds) and the files written."""
    from sln_cli.render.tables import Column, print_table

    rows = evaluation.rows
    columns = [("accuracy", "acc", True), ("top5", "top-5", True), ("nll", "NLL", False), ("brier", "Brier", False),
               ("ece", "ECE", False), ("ece_adaptive", "aECE", False), ("mce", "MCE", False),
               ("accuracy_noisy", "acc vs noisy", True), ("memorized", "memorised", True)]
    columns = [column for column in columns if any(row.get(column[0]) is not None for row in rows)]
    caption = (f"ECE and MCE: {BINS} equal-width bins; aECE (adaptive): {BINS} equal-mass bins; Brier: sum over "
               "classes" + ("; ± is the std over seeds (ddof=1)" if any(row.get("aggregate") for row in rows) else ""))
    # Whole cells at any width: a table wider than the terminal is split by columns, run and weights repeated.
    keys = [Column("run", left=True), Column("weights", left=True)]
    values = [Column("method", left=True), Column("epoch"), Column("N")] + [Column(header) for _, header, _ in columns]
    table_rows: list[list[str]] = []
    sections: list[int] = []
    for row in rows:
        if row.get("aggregate") and not sections:
            sections.append(len(table_rows))
        label = f"mean ± std ({row['num_runs']} seeds)" if row.get("aggregate") else row["name"]
        epoch = "" if row.get("epoch") is None else str(row["epoch"])
        table_rows.append([label, row["weights"], row["method"], epoch, str(row["num_samples"]),
                           *(_cell(row, key, percent) for key, _, percent in columns)])
    print_table(console, title=f"sln evaluate: {evaluation.split} split", keys=keys, values=values, rows=table_rows,
                caption=caption, sections=sections)
    if any("per_class" in row for row in rows):
        _render_per_class([row for row in rows if "per_class" in row], evaluation.split, console)
    groups = {row["run"]: row["seeds"] for row in rows if row.get("aggregate")}
    for names, seeds in groups.items():
        console.print(f"mean ± std over {names} (seeds {', '.join(map(str, seeds))})", markup=False, highlight=False)
    for what, path in evaluation.files.items():
        console.print(f"{what.replace('_', ' ')}: {path}", markup=False, highlight=False)


def _render_per_class(rows: list[dict[str, Any]], split: str, console: Any) -> None:
    """One line per class: its sample count and every (run, weights)'s accuracy on it."""
    from sln_cli.render.tables import Column, print_table

    classes, counts = rows[0]["per_class"]["classes"], rows[0]["per_class"]["count"]
    values = [Column("N")] + [Column(f"{row['name']} {row['weights']}") for row in rows]
    table_rows = [[name, str(counts[k]), *("-" if row["per_class"]["accuracy"][k] is None
                                            else f"{100 * row['per_class']['accuracy'][k]:.1f}%" for row in rows)]
                  for k, name in enumerate(classes)]
    print_table(console, title=f"per-class accuracy, {split} split", keys=[Column("class", left=True)],
                values=values, rows=table_rows)


def _cell(row: dict[str, Any], key: str, percent: bool) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    scale, unit, digits = (100, "%", 1) if percent else (1, "", 3)
    text = f"{value * scale:.{digits}f}"
    if f"{key}_std" in row:
        text += f" ± {row[f'{key}_std'] * scale:.{digits}f}"
    return text + unit
