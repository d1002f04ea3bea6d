"""`sln evaluate`: load runs and checkpoints, predict un-augmented class probabilities, and compare accuracy and
calibration across runs (mean ± std over seeds) as a table, JSON, CSV, saved predictions and a reliability diagram.
The loading half (targets, runs, splits, predictions) is shared with `sln analyze`.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sln_cli import runs
from sln_cli.calibration import BINS, calibration_report
from sln_cli.config import Config, load_yaml, resolve, to_dict
from sln_cli.data.batches import DeviceImages, FileImages
from sln_cli.devices import resolve_device
from sln_cli.errors import SlnError
from sln_cli.files import atomic_write, atomic_write_text
from sln_cli.trainset import TrainSet, build_trainset

WEIGHTS = ("raw", "ema")  # the network trained (SLN) and its weight EMA (SLN-MO)
SPLITS = ("test", "train", "val")
SEED_KEYS = (("run", "seed"), ("run", "out"))  # runs whose configs differ only here are repeats over seeds
METRICS = ("accuracy", "top5", "nll", "brier", "ece", "ece_adaptive", "mce", "accuracy_noisy", "memorized")
TOP5_MIN_CLASSES = 20


# --------------------------------------------------------------------------------------------------
# Targets: which checkpoint of which run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    run_dir: Path
    checkpoint: Path
    choice: str  # "final", "best", "last", "epoch-N", or the file name of a checkpoint given directly
    name: str  # short label, unique among the targets of one command


def resolve_targets(paths: Sequence[str | Path], *, checkpoint: str | None = None) -> list[Target]:
    """Run directories (their `checkpoint` choice, default final.pt) or .pt files inside one; globs expanded here
    too, since Windows shells do not. Duplicates are dropped, order kept."""
    if not paths:
        raise SlnError("give at least one run directory or checkpoint file")
    found: dict[Path, tuple[Path, str]] = {}
    for path in _expand(paths):
        if path.is_dir():
            runs.check_run_dir(path)
            choice = checkpoint or "final"
            found.setdefault(checkpoint_path(path, choice).resolve(), (path, choice))
        elif path.is_file() and path.suffix == ".pt":
            if checkpoint is not None:
                raise SlnError(f"{path} is already a checkpoint file; drop --checkpoint or give its run directory")
            run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
            runs.check_run_dir(run_dir)
            found.setdefault(path.resolve(), (run_dir, path.stem))
        else:
            raise SlnError(f"{path} is neither a run directory nor a .pt checkpoint; give a directory made by "
                           "`sln train` or a checkpoint inside one")
    names = _unique_names([(run_dir, choice) for run_dir, choice in found.values()])
    return [Target(run_dir, ckpt, choice, name)
            for (ckpt, (run_dir, choice)), name in zip(found.items(), names, strict=True)]


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    expanded = []
    for raw in map(str, paths):
        if glob.has_magic(raw):
            matches = sorted(glob.glob(raw))
            if not matches:
                raise SlnError(f"no run directory or checkpoint matches {raw!r}; check the pattern")
            expanded += [Path(match) for match in matches]
        else:
            expanded.append(Path(raw))
    return expanded


def checkpoint_path(run_dir: Path, choice: str) -> Path:
    """The file behind `--checkpoint final|best|last|epoch-N` in a run directory, or an SlnError saying why not."""
    named = {"final": runs.FINAL, "best": runs.BEST, "last": runs.CHECKPOINT}
    if match := re.fullmatch(r"epoch-(\d+)", choice):
        path = run_dir / "checkpoints" / f"epoch-{int(match[1]):04d}.pt"
        if not path.is_file():
            kept = ", ".join(p.stem for p in epoch_checkpoints(run_dir)) or "none (train with run.keep_checkpoints=N)"
            raise SlnError(f"{run_dir} has no checkpoint for {choice}; kept epochs: {kept}")
        return path
    if choice not in named:
        raise SlnError(f"unknown --checkpoint {choice!r}; use best, final, last or epoch-N")
    path = run_dir / named[choice]
    if not path.is_file():
        hints = {"final": "training has not finished: use --checkpoint last",
                 "best": "its dataset has no validation split: use --checkpoint final",
                 "last": "the run never completed an epoch"}
        raise SlnError(f"{run_dir} has no {named[choice]} ({hints[choice]})")
    return path


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """`checkpoints/epoch-XXXX.pt` of a run, in epoch order."""
    paths = (run_dir / "checkpoints").glob("epoch-*.pt")
    numbered = [(int(m[1]), p) for p in paths if (m := re.fullmatch(r"epoch-(\d+)", p.stem))]
    return [path for _, path in sorted(numbered)]


def _unique_names(items: list[tuple[Path, str]]) -> list[str]:
    """The run directory's name (with @checkpoint unless final), with parent folders added until unique."""
    def name(run_dir: Path, choice: str, depth: int) -> str:
        parts = run_dir.resolve().parts[-depth:]
        return "/".join(parts) + ("" if choice == "final" else f"@{choice}")

    names = [name(run_dir, choice, 1) for run_dir, choice in items]
    for depth in range(2, 64):
        if len(set(names)) == len(names):
            break
        names = [name(run_dir, choice, depth) for run_dir, choice in items]
    return names


def file_label(name: str) -> str:
    """A target's name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


# --------------------------------------------------------------------------------------------------
# Loading a run: its config, its exact training data, its networks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedRun:
    target: Target
    config: Config
    trainset: TrainSet  # the run's labels, open-set swaps and train/test limits applied
    device: torch.device
    epoch: int | None  # epoch the checkpoint was written after
    states: dict[str, dict[str, torch.Tensor]]  # "raw" / "ema" -> state dict

    @property
    def num_classes(self) -> int:
        return self.trainset.dataset.num_classes

    def network(self, weights: str, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """The run's architecture with the `weights` of this checkpoint (or the given `state`), in eval mode."""
        dataset, config = self.trainset.dataset, self.config
        images = dataset.train.images
        channels, size = (images.shape[1], images.shape[-1]) if images is not None else (3, config.data.crop)
        from sln_cli.models import build_model

        # weights=None: the checkpoint provides every parameter, so never fetch pretrained ones again.
        model = build_model(config.model.name, num_classes=dataset.num_classes, in_channels=channels,
                            image_size=size)
        try:
            model.load_state_dict(self.states[weights] if state is None else state)
        except RuntimeError as exc:
            raise SlnError(f"{self.target.checkpoint} does not fit the {config.model.name} of {self.target.run_dir}"
                           "; was the run directory modified?") from exc
        return model.to(self.device).eval()


def read_config(run_dir: Path) -> Config:
    return resolve(load_yaml(run_dir / runs.CONFIG))


def load_states(path: Path, device: torch.device) -> tuple[dict[str, dict[str, torch.Tensor]], int | None]:
    """The raw and EMA state dicts of a checkpoint file and the epoch it was written after."""
    saved = runs.load_torch(path, map_location=device)
    if not isinstance(saved, dict) or not all(isinstance(saved.get(key), dict) for key in ("model", "ema")):
        raise SlnError(f"{path} holds no model and EMA weights; give a checkpoint written by `sln train`")
    return {"raw": saved["model"], "ema": saved["ema"]}, saved.get("epoch")


def load_run(target: Target, device: torch.device) -> LoadedRun:
    """Rebuild the run's training data from its own label file and load the checkpoint's weights."""
    config = read_config(target.run_dir)
    if device.type == "cpu" and config.run.cpu_threads > 0:
        torch.set_num_threads(config.run.cpu_threads)  # as `sln train` did: tiny models run faster on one thread
    states, epoch = load_states(target.checkpoint, device)  # the cheap checks first
    labels = target.run_dir / "labels.csv"
    if not labels.is_file():
        raise SlnError(f"{target.run_dir} has no labels.csv; give a run directory written by `sln train`")
    trainset = build_trainset(config.data, dataclasses.replace(config.noise, labels=str(labels), label_set=None))
    return LoadedRun(target, config, trainset, device, epoch, states)


def check_compatible(loaded: Sequence[LoadedRun]) -> None:
    """Runs compared in one table or plot must share the dataset and its classes."""
    first = loaded[0]
    for other in loaded[1:]:
        a, b = (first.config.data.dataset, first.num_classes), (other.config.data.dataset, other.num_classes)
        if a != b:
            raise SlnError(f"incompatible runs: {first.target.name} uses {a[0]} ({a[1]} classes) but "
                           f"{other.target.name} uses {b[0]} ({b[1]} classes); evaluate them separately")


def check_datasets(targets: Sequence[Target]) -> None:
    """The cheap half of `check_compatible`, from the configs alone, before any data is loaded."""
    datasets = [read_config(target.run_dir).data.dataset for target in targets]
    for target, dataset in zip(targets[1:], datasets[1:], strict=True):
        if dataset != datasets[0]:
            raise SlnError(f"incompatible runs: {targets[0].name} uses {datasets[0]} but {target.name} uses "
                           f"{dataset}; evaluate them separately")


# --------------------------------------------------------------------------------------------------
# Splits and predictions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitData:
    name: str
    images: DeviceImages | FileImages
    labels: np.ndarray  # (N,) labels the metrics use: the true labels (train: as given by the label file)
    noisy: np.ndarray | None  # (N,) train split: the labels the run trained on
    indices: np.ndarray  # (N,) positions of the samples in `indices_of`
    indices_of: str


def split_data(run: LoadedRun, split: str, *, subset: np.ndarray | None = None,
               true_labels: bool = True) -> SplitData:
    """A split of the run's data on its device, un-augmented; `subset` picks positions within the split.

    The train split needs the true labels unless `true_labels` is False; then `labels` falls back to the noisy
    labels where the truth is unknown (Clothing1M)."""
    if split not in SPLITS:
        raise SlnError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
    trainset, dataset = run.trainset, run.trainset.dataset
    noisy = None
    if split == "train":
        if trainset.clean is None and true_labels:
            raise SlnError(f"{run.target.run_dir}'s label file has no true labels ({run.config.data.dataset} labels "
                           "are themselves noisy); use --split test")
        clean = trainset.noisy if trainset.clean is None else trainset.clean
        data, labels, noisy = dataset.train, clean, trainset.noisy
        indices, indices_of = trainset.train_indices, "the full training split"
    elif split == "val":
        if dataset.val is None:
            raise SlnError(f"{run.config.data.dataset} has no validation split; use --split test or train")
        data, labels = dataset.val, dataset.val.labels
        indices, indices_of = np.arange(len(labels)), "the validation split"
    else:
        data, labels = dataset.test, dataset.test.labels
        limited = run.config.data.test_limit is not None  # the trainset does not expose the subset's positions
        indices = np.arange(len(labels))
        indices_of = "the seeded test subset of data.test_limit" if limited else "the test split"
    if subset is not None:
        data = dataclasses.replace(data, labels=data.labels[subset],
                                   images=None if data.images is None else data.images[subset],
                                   files=None if data.files is None else [data.files[i] for i in subset])
        labels, indices = labels[subset], indices[subset]
        noisy = None if noisy is None else noisy[subset]
    return SplitData(split, _place(data, run), np.asarray(labels, np.int64), noisy, indices, indices_of)


def _place(split: Any, run: LoadedRun) -> DeviceImages | FileImages:
    dataset, data = run.trainset.dataset, run.config.data
    if split.images is not None:
        return DeviceImages(split.images.to(run.device), dataset.mean, dataset.std)
    return FileImages(split, dataset.mean, dataset.std, device=run.device, resize=data.resize, crop=data.crop,
                      workers=data.workers)


@torch.inference_mode()
def predict(model: nn.Module, images: DeviceImages | FileImages, *, batch_size: int) -> np.ndarray:
    """Softmax probabilities (N, K) float32 of an eval-mode network on un-augmented images, in split order."""
    model.eval()
    device = next(model.parameters()).device
    order = torch.arange(len(images), device=device)
    chunks = [torch.softmax(model(batch).float(), dim=1).cpu() for batch, _ in images.batches(order, batch_size)]
    return torch.cat(chunks).numpy()


# --------------------------------------------------------------------------------------------------
# sln evaluate
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    rows: list[dict[str, Any]]  # one per run and weights, then the seed aggregates ("aggregate": true)
    split: str
    files: dict[str, str]  # what was written: reliability diagram, csv, predictions


def evaluate(targets: Sequence[str | Path], *, checkpoint: str | None = None, weights: str = "both",
             split: str = "test", out: Path | None = None, csv_path: Path | None = None,
             save_predictions: Path | None = None, device: str = "auto",
             batch_size: int | None = None) -> Evaluation:
    """Accuracy (top-5 when K >= 20), NLL, Brier, ECE / adaptive ECE / MCE (15 bins) of every target and weights.

    Several (run, weights) with `save_predictions`: each file gets `-<run>-<weights>` before its suffix.
    """
    chosen = _weights(weights)
    if split not in SPLITS:
        raise SlnError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
    resolved = resolve_targets(targets, checkpoint=checkpoint)
    check_datasets(resolved)
    torch_device = resolve_device(device)
    rows, diagrams, configs, first = [], {}, {}, None
    for target in resolved:
        run = load_run(target, torch_device)
        first = first or dataclasses.replace(run, states={})  # keep its description, not its weights
        check_compatible([first, run])
        data = split_data(run, split)
        configs[target.name] = run.config
        for weight in chosen:
            probs = predict(run.network(weight), data.images, batch_size=batch_size or run.config.run.eval_batch_size)
            row, bins = _metrics_row(run, data, weight, probs)
            if save_predictions is not None:
                path = _predictions_path(save_predictions, target.name, weight, several=len(resolved) * len(chosen) > 1)
                _save_predictions(path, probs, data, row)
                row["predictions"] = str(path)
            rows.append(row)
            diagrams[f"{target.name} ({weight})"] = bins
    files = {}
    out_dir = out if out is not None else resolved[0].run_dir / "analysis"
    files["reliability_diagram"] = str(out_dir / f"reliability-{split}.png")
    from sln_cli.plots import plot_reliability

    plot_reliability(files["reliability_diagram"], diagrams,
                     title=f"Reliability diagram, {split} split ({BINS} equal-width bins)")
    rows = [row | {"reliability_diagram": files["reliability_diagram"]} for row in rows]
    rows += seed_aggregates(rows, configs)
    if csv_path is not None:
        write_csv(csv_path, rows)
        files["csv"] = str(csv_path)
    if save_predictions is not None:
        files["predictions"] = ", ".join(row["predictions"] for row in rows if "predictions" in row)
    return Evaluation(rows, split, files)


def _weights(weights: str) -> tuple[str, ...]:
    if weights == "both":
        return WEIGHTS
    if weights not in WEIGHTS:
        raise SlnError(f"unknown --weights {weights!r}; use raw, ema or both")
    return (weights,)


def _metrics_row(run: LoadedRun, data: SplitData, weights: str, probs: np.ndarray) -> tuple[dict, Any]:
    report = calibration_report(probs, data.labels, top5=run.num_classes >= TOP5_MIN_CLASSES)
    row = {"run": str(run.target.run_dir), "name": run.target.name, "checkpoint": str(run.target.checkpoint),
           "epoch": run.epoch, "weights": weights, "split": data.name, "num_samples": len(data.labels),
           "num_classes": run.num_classes, "seed": run.config.run.seed, "sigma": run.config.sln.sigma}
    row |= report.to_dict()
    row["labels"] = "dataset labels"
    if data.noisy is not None:
        predicted, mislabelled = probs.argmax(axis=1), data.noisy != data.labels
        row["labels"] = "true labels of the label file"
        row["accuracy_noisy"] = float(np.mean(predicted == data.noisy))
        for group, mask in (("clean", ~mislabelled), ("mislabelled", mislabelled)):
            row[group] = _group_fit(predicted[mask], data.labels[mask], data.noisy[mask])
        row["memorized"] = row["mislabelled"]["fitted_noisy_label"]
    row["reliability"] = report.reliability.to_dict()
    return row, report.reliability


def _group_fit(predicted: np.ndarray, true: np.ndarray, noisy: np.ndarray) -> dict[str, Any]:
    """accuracy against the true label, and the fraction predicted as the label trained on (for mislabelled
    samples that label is wrong, so this is the memorised fraction; for clean samples it equals accuracy)."""
    if len(predicted) == 0:
        return {"num_samples": 0, "accuracy": None, "fitted_noisy_label": None}
    return {"num_samples": len(predicted), "accuracy": float(np.mean(predicted == true)),
            "fitted_noisy_label": float(np.mean(predicted == noisy))}


def _predictions_path(path: Path, name: str, weights: str, *, several: bool) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    return path.with_name(f"{path.stem}-{file_label(name)}-{weights}.npz") if several else path


def _save_predictions(path: Path, probs: np.ndarray, data: SplitData, row: dict[str, Any]) -> None:
    """probs (N, K), labels (those the metrics use), indices (into `indices_of`), and the train split's
    noisy_labels; strings are plain unicode arrays, so `np.load` needs no pickle."""
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
    """Mean and sample standard deviation (ddof=1) of each metric over runs whose configs differ only in
    run.seed / run.out, per checkpoint choice and weights; groups of one run give nothing."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        tree = to_dict(configs[row["name"]])
        for section, key in SEED_KEYS:
            tree[section].pop(key)
        choice = Path(row["checkpoint"]).stem
        groups.setdefault((json.dumps(tree, sort_keys=True) + choice, row["weights"]), []).append(row)
    aggregates = []
    for members in groups.values():
        if len({row["run"] for row in members}) < 2:
            continue
        seeds = [row["seed"] for row in members]
        summary = {"aggregate": True, "run": ", ".join(row["name"] for row in members),
                   "name": f"mean ± std over {len(members)} seeds", "runs": [row["run"] for row in members],
                   "seeds": seeds, "weights": members[0]["weights"], "split": members[0]["split"],
                   "num_runs": len(members), "num_samples": members[0]["num_samples"], "std_ddof": 1}
        for metric in METRICS:
            values = [row[metric] for row in members if row.get(metric) is not None]
            if len(values) == len(members):
                summary[metric], summary[f"{metric}_std"] = float(np.mean(values)), float(np.std(values, ddof=1))
        aggregates.append(summary)
    return aggregates


CSV_COLUMNS = ("aggregate", "name", "run", "checkpoint", "epoch", "weights", "split", "num_samples", "seed",
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
    from rich.table import Table

    rows = evaluation.rows
    columns = [("accuracy", "acc", True), ("top5", "top-5", True), ("nll", "NLL", False), ("brier", "Brier", False),
               ("ece", "ECE", False), ("ece_adaptive", "adaptive ECE", False), ("mce", "MCE", False),
               ("accuracy_noisy", "acc vs noisy", True), ("memorized", "memorised", True)]
    columns = [column for column in columns if any(row.get(column[0]) is not None for row in rows)]
    caption = (f"ECE and MCE: {BINS} equal-width bins; adaptive ECE: {BINS} equal-mass bins; Brier: sum over "
               "classes" + ("; ± is the std over seeds (ddof=1)" if any(row.get("aggregate") for row in rows) else ""))
    table = Table(title=f"sln evaluate: {evaluation.split} split", caption=caption)
    for header in ("run", "weights", "epoch", "N"):
        table.add_column(header, justify="left" if header in ("run", "weights") else "right", overflow="fold")
    for _, header, _ in columns:
        table.add_column(header, justify="right", overflow="fold")
    in_aggregates = False
    for row in rows:
        if row.get("aggregate") and not in_aggregates:
            table.add_section()
            in_aggregates = True
        label = f"mean ± std ({row['num_runs']} seeds)" if row.get("aggregate") else row["name"]
        cells = [label, row["weights"], "" if row.get("epoch") is None else str(row["epoch"]), str(row["num_samples"])]
        table.add_row(*cells, *(_cell(row, key, percent) for key, _, percent in columns))
    console.print(table)
    groups = {row["run"]: row["seeds"] for row in rows if row.get("aggregate")}
    for names, seeds in groups.items():
        console.print(f"mean ± std over {names} (seeds {', '.join(map(str, seeds))})", markup=False, highlight=False)
    for what, path in evaluation.files.items():
        console.print(f"{what.replace('_', ' ')}: {path}", markup=False, highlight=False)


def _cell(row: dict[str, Any], key: str, percent: bool) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    scale, unit, digits = (100, "%", 2) if percent else (1, "", 4)
    text = f"{value * scale:.{digits}f}"
    if f"{key}_std" in row:
        text += f" ± {row[f'{key}_std'] * scale:.{digits}f}"
    return text + unit
