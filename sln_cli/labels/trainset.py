"""The training data of a run: a dataset with its noisy labels applied (generated, or read from a file)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sln_cli.config import DataConfig, NoiseConfig
from sln_cli.data import Dataset, Split, load_dataset
from sln_cli.data.registry import REGISTRY
from sln_cli.errors import SlnError
from sln_cli.labels import noisy_val as noisy_val_lib
from sln_cli.labels import official
from sln_cli.labels.labelfile import DROPPED, NoisyLabels, check_against, read_label_file

# Datasets whose given training labels are themselves noisy: with no generated noise, the truth is unknown.
_INHERENTLY_NOISY = ("clothing1m", "imagefolder", "animal10n", "webvision-mini")


@dataclass(frozen=True)
class TrainSet:
    dataset: Dataset  # open-set images swapped in, limits applied
    noisy: np.ndarray  # (N,) the labels training sees
    clean: np.ndarray | None  # (N,) true labels when known
    labels: NoisyLabels  # the whole label set with its manifest, before limits: written into the run directory
    train_indices: np.ndarray  # positions of the kept training samples in the full training split
    test_indices: np.ndarray  # positions of the kept test samples in the full test split
    noisy_val: HeldOut | None = None  # data.noisy_val: the samples held out of training, to select on


@dataclass(frozen=True)
class HeldOut:
    """The noisy validation split: absent from `TrainSet.dataset.train`, so no training step, label correction
    or per-sample state of any method ever sees it."""

    split: Split  # its images, with their given (true) labels
    noisy: np.ndarray  # (M,) the noisy labels it is scored on
    clean: np.ndarray | None  # (M,) true labels when known (a diagnostic only)
    indices: np.ndarray  # positions in the full training split (noisy_val.csv)


def build_trainset(data: DataConfig, noise: NoiseConfig) -> TrainSet:
    """Load the dataset, apply the label noise, then the seeded train/test limits (label file first)."""
    dataset = load_dataset(data.dataset, _path(data.data_dir), download=data.download)
    labels, source = _noisy_labels(dataset, data, noise)
    dataset = _swap_openset_images(dataset, labels, source, _path(noise.source_data_dir or data.data_dir))
    rng = np.random.default_rng(noise.seed)
    train_indices = _subset(len(dataset.train.labels), data.train_limit, rng)
    test_indices = _subset(len(dataset.test.labels), data.test_limit, rng)
    # after the seeded subset, so that a file that drops samples keeps the subset of the run it came from
    train_indices = train_indices[labels.noisy[train_indices] != DROPPED]
    if not len(train_indices):
        raise SlnError("the label file drops every training sample (label_noisy -1); keep some")
    held = None
    if data.noisy_val is not None:
        if dataset.val is not None:
            raise SlnError(f"{dataset.name} has its own validation split, which selects the run's best epoch; "
                           "data.noisy_val is for datasets without one: drop it")
        count = noisy_val_lib.holdout_count(data.noisy_val, len(train_indices))
        positions = noisy_val_lib.split(labels.noisy[train_indices], count, data.noisy_val_seed)
        held_indices = train_indices[positions]
        train_indices = np.delete(train_indices, positions)
        held = HeldOut(_take(dataset.train, held_indices), labels.noisy[held_indices],
                       None if labels.clean is None else labels.clean[held_indices], held_indices)
    dataset = dataclasses.replace(
        dataset, train=_take(dataset.train, train_indices), test=_take(dataset.test, test_indices)
    )
    clean = None if labels.clean is None else labels.clean[train_indices]
    return TrainSet(dataset, labels.noisy[train_indices], clean, labels, train_indices, test_indices, held)


def _noisy_labels(dataset: Dataset, data: DataConfig, noise: NoiseConfig) -> tuple[NoisyLabels, Dataset | None]:
    """The label set to train on, with its manifest, and the open-set source dataset when it was just loaded."""
    if noise.labels is not None:
        labels = read_label_file(_label_file(noise, data), label_set=noise.label_set,
                                 expected_rows=len(dataset.train.labels))
        check_against(labels, dataset.train.labels, dataset.num_classes)
        return dataclasses.replace(labels, manifest=_manifest_of(labels, noise, dataset)), None
    if noise.mode == "none":
        clean = None if dataset.name in _INHERENTLY_NOISY else dataset.train.labels
        manifest = {"dataset": dataset.name, "mode": "none"}
        return NoisyLabels(noisy=dataset.train.labels, clean=clean, source_index=None, manifest=manifest), None
    from sln_cli.labels.make import make_labels

    return make_labels(
        dataset,
        mode=noise.mode,
        rate=None if noise.matrix is not None else noise.rate,  # a transition matrix sets the noise itself
        seed=noise.seed,
        exact=noise.exact,
        matrix=_path(noise.matrix),
        probs=_path(noise.probs),
        source_dataset=noise.source_dataset,
        source_data_dir=_path(noise.source_data_dir or data.data_dir),
        download=data.download,
    )


def _swap_openset_images(dataset: Dataset, labels: NoisyLabels, source: Dataset | None,
                         source_dir: Path | None) -> Dataset:
    """Open-set noise: the recorded source images replace ours; labels stay (paper Sec. 5.1)."""
    if labels.source_index is None or (labels.source_index < 0).all():
        return dataset
    if source is None:
        from sln_cli.labels.make import load_source_dataset

        source = load_source_dataset(labels.manifest, dataset, source_dir)
    ours, theirs = dataset.train.images, source.train.images
    if ours is None or theirs is None:  # a file-backed dataset: before, a traceback from None.clone()
        named = dataset.name if ours is None else source.name
        raise SlnError(f"open-set label files swap images of in-memory datasets only (CIFAR, digits); {named} is "
                       "read from files: use a label file without a source_index column")
    replaced = np.flatnonzero(labels.source_index >= 0)
    images = ours.clone()
    images[replaced] = theirs[labels.source_index[replaced]]
    return dataclasses.replace(dataset, train=dataclasses.replace(dataset.train, images=images))


def _subset(size: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or limit >= size:
        return np.arange(size)
    return np.sort(rng.permutation(size)[:limit])


def _take(split: Split, indices: np.ndarray) -> Split:
    if len(indices) == len(split.labels):
        return split
    images = None if split.images is None else split.images[indices]
    files = None if split.files is None else tuple(split.files[i] for i in indices)
    return dataclasses.replace(split, labels=split.labels[indices], images=images, files=files)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


def _label_file(noise: NoiseConfig, data: DataConfig) -> Path:
    """`official[:NAME]` from the verified cache (see `sln_cli.labels.official`), else a path."""
    assert noise.labels is not None
    if official.is_official(noise.labels):
        return official.label_path(noise.labels, dataset=data.dataset, mode=noise.mode, rate=noise.rate)
    return _existing(noise.labels, data)


def _manifest_of(labels: NoisyLabels, noise: NoiseConfig, dataset: Dataset) -> dict:
    """A file's own manifest; an official file has none, so the run's labels.json says where it came from."""
    if noise.labels is None or not official.is_official(noise.labels):  # is_official(None) is False
        return dict(labels.manifest)
    name = official.resolve_name(noise.labels, dataset=dataset.name, mode=noise.mode, rate=noise.rate)
    return {"dataset": dataset.name, "num_classes": dataset.num_classes, "official": name,
            "official_url": official.url(name), "official_sha256": official.OFFICIAL[name].sha256}


def _existing(path: str, data: DataConfig) -> Path:
    """A label file path as given, else inside the data directory (where presets expect CIFAR-N files)."""
    candidate = Path(path).expanduser()
    data_dir = Path(data.data_dir) if data.data_dir else REGISTRY[data.dataset].default_dir
    if not candidate.exists() and data_dir is not None and (data_dir / candidate).exists():
        return data_dir / candidate
    return candidate
