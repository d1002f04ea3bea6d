"""Finding and loading what `sln evaluate` and `sln analyze` measure: runs, their checkpoints, and their data.

A target is a run directory (its `final.pt` by default) or a checkpoint file inside one; loading rebuilds
the run's exact data (its labels.csv, limits, open-set swaps) and network from its config.yaml.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sln_cli.config import Config, load_yaml, resolve
from sln_cli.data.batches import DeviceImages, FileImages
from sln_cli.errors import SlnError
from sln_cli.labels import noisy_val as noisy_val_lib
from sln_cli.labels.trainset import TrainSet, build_trainset
from sln_cli.rundir import runs
from sln_cli.rundir.experiments import as_it_ran
from sln_cli.training.state import image_shape, place_split

NOISY_VAL = "noisy-val"  # the samples a run held out of training (data.noisy_val, recorded in noisy_val.csv)
SPLITS = ("test", "train", "val", "ilsvrc12", NOISY_VAL)  # ilsvrc12: mini-WebVision's second test set


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
    if choice == "best-noisy-val":
        return _best_noisy_val(run_dir)
    if match := re.fullmatch(r"epoch-(\d+)", choice):
        path = run_dir / "checkpoints" / f"epoch-{int(match[1]):04d}.pt"
        if not path.is_file():
            kept = ", ".join(p.stem for p in epoch_checkpoints(run_dir)) or "none (train with run.keep_checkpoints=N)"
            raise SlnError(f"{run_dir} has no checkpoint for {choice}; kept epochs: {kept}")
        return path
    if choice not in named:
        raise SlnError(f"unknown --checkpoint {choice!r}; use best, best-noisy-val, final, last or epoch-N")
    path = run_dir / named[choice]
    if not path.is_file():
        hints = {"final": "training has not finished: use --checkpoint last",
                 "best": "its dataset has no validation split and it held out no noisy one (data.noisy_val): "
                         "use --checkpoint final",
                 "last": "the run never completed an epoch"}
        raise SlnError(f"{run_dir} has no {named[choice]} ({hints[choice]})")
    return path


def _best_noisy_val(run_dir: Path) -> Path:
    """best.pt of a run that held out a noisy validation split (its selection, see `train.selection_key`)."""
    from sln_cli.labels import noisy_val

    if not (run_dir / noisy_val.FILE).is_file():
        raise SlnError(f"{run_dir} held out no noisy validation split; train with --set data.noisy_val=N (a count or "
                       "a fraction) to select on one, or use --checkpoint final")
    if not (run_dir / runs.BEST).is_file():
        raise SlnError(f"{run_dir} has no {runs.BEST} yet (no epoch has finished): use --checkpoint last")
    return run_dir / runs.BEST


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
        channels, size = image_shape(dataset, config)
        from sln_cli.models import build_model

        # weights=None: the checkpoint provides every parameter, so never fetch pretrained ones again.
        def build() -> nn.Module:
            return build_model(config.model.name, num_classes=dataset.num_classes, in_channels=channels,
                               image_size=size)

        model = build()
        if config.method.name == "dividemix":  # both networks, evaluated as the mean of their logits
            from sln_cli.models.pair import NetworkPair

            model = NetworkPair(model, build())
        try:
            model.load_state_dict(self.states[weights] if state is None else state)
        except RuntimeError as exc:
            raise SlnError(f"{self.target.checkpoint} does not fit the {config.model.name} of {self.target.run_dir}"
                           "; was the run directory modified?") from exc
        return model.to(self.device).eval()


def read_config(run_dir: Path) -> Config:
    """The run's config, with relative paths found from where it ran (`runs.relocate`)."""
    return resolve(as_it_ran(runs.relocate(load_yaml(run_dir / runs.CONFIG), run_dir)))


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
    elif split == NOISY_VAL:  # scored on its noisy labels; `labels` are the true ones when known
        held = _held_out(run)
        data, noisy = held.split, held.noisy if held.clean is not None else None
        labels = held.clean if held.clean is not None else held.noisy
        indices, indices_of = held.indices, "the full training split (noisy_val.csv)"
    elif split not in ("val", "test"):  # a further test set of the dataset
        if split not in dataset.extra_tests:
            raise SlnError(f"{run.config.data.dataset} has no {split} test set (webvision-mini reads the ILSVRC12 "
                           "validation images from DATA_DIR/imagenet/val/); use --split test")
        data = dataset.extra_tests[split]
        labels, indices, indices_of = data.labels, np.arange(len(data.labels)), f"the {split} test set"
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


def _held_out(run: LoadedRun) -> Any:
    """The run's noisy validation split, rebuilt from its config and checked against its noisy_val.csv."""
    run_dir, held = run.target.run_dir, run.trainset.noisy_val
    if held is None:
        raise SlnError(f"{run_dir} held out no noisy validation split (data.noisy_val); use --split test, or train "
                       "with --set data.noisy_val=N (a count or a fraction)")
    path = run_dir / noisy_val_lib.FILE
    if not path.is_file():
        raise SlnError(f"{run_dir} has no {noisy_val_lib.FILE} though its config holds out a noisy validation split; "
                       "it is not a complete run: evaluate another")
    if not np.array_equal(noisy_val_lib.read(path), held.indices):
        raise SlnError(f"{path} names other samples than the split data.noisy_val and data.noisy_val_seed make now; "
                       "the held-out samples cannot be rebuilt: use --split test")
    return held


def _place(split: Any, run: LoadedRun) -> DeviceImages | FileImages:
    return place_split(split, run.trainset.dataset, run.config, run.device)


@torch.inference_mode()
def predict(model: nn.Module, images: DeviceImages | FileImages, *, batch_size: int) -> np.ndarray:
    """Softmax probabilities (N, K) float32 of an eval-mode network on un-augmented images, in split order."""
    if batch_size < 1:
        raise SlnError(f"--batch-size must be at least 1, got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    order = torch.arange(len(images), device=device)
    chunks = [torch.softmax(model(batch).float(), dim=1).cpu() for batch, _ in images.batches(order, batch_size)]
    return torch.cat(chunks).numpy()
