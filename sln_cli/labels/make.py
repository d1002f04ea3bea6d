"""Noisy labels for a dataset: a label-noise mode applied to its training labels, with the manifest that says how.

`sln corrupt` writes them to a file (`sln_cli.labels.corrupt`); `sln train` makes them the same way on the fly.
The noise generators themselves are `sln_cli.labels.corruption` (pure numpy); the file format is
`sln_cli.labels.labelfile`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sln_cli import __version__
from sln_cli.errors import SlnError
from sln_cli.labels import corruption as noise
from sln_cli.labels.labelfile import NoisyLabels, summarize
from sln_cli.rundir import readers

if TYPE_CHECKING:
    from sln_cli.data import Dataset

MODES: tuple[str, ...] = ("sym", "uniform", "asym", "asym-superclass", "transition", "dependent", "idn", "openset")
EXACT_MODES = ("sym", "uniform")  # the other modes either flip exactly round(r*N) already or follow a matrix


def make_labels(
    data: Dataset,
    *,
    mode: str,
    rate: float | None,
    seed: int = 0,
    exact: bool = False,
    matrix: Path | None = None,
    probs: Path | None = None,
    source_dataset: str | None = None,
    source_data_dir: Path | None = None,
    download: bool = False,
) -> tuple[NoisyLabels, Dataset | None]:
    """The noisy labels of `data` for a mode (their manifest included), and the open-set source dataset if any.

    `sln corrupt` writes them to a file; `sln train` generates them on the fly the same way.
    """
    check_request(data.name, mode, rate, seed, exact, matrix, probs, source_dataset)
    clean = np.asarray(data.train.labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    manifest: dict = {"dataset": data.name, "num_classes": data.num_classes, "mode": mode, "requested_noise_rate": rate}
    manifest |= {"seed": seed, "exact": exact, "sln_version": __version__, "classes": list(data.classes)}
    source_index, source = None, None
    if mode == "openset":
        assert source_dataset is not None and rate is not None
        from sln_cli.data import load_dataset

        source = load_dataset(source_dataset, source_data_dir, download=download)
        source_index = _openset(data, source, rate, rng)
        noisy, expected = clean.copy(), noise.count_for_rate(rate, clean.size) / max(clean.size, 1)
        manifest |= {"source_dataset": source.name, "num_source_samples": len(source.train)}
    else:
        noisy, expected, inputs = _corrupt(data, mode, rate, rng, exact=exact, matrix=matrix, probs=probs)
        manifest |= inputs
    summary = summarize(clean, noisy, data.num_classes, requested_rate=rate, source_index=source_index, mode=mode)
    manifest["realized_noise_rate"] = summary["realized_noise_rate"]
    manifest["expected_noise_rate"] = expected
    return NoisyLabels(noisy, clean, source_index, manifest), source


def load_source_dataset(manifest: dict, data: Dataset, data_dir: Path | None = None) -> Dataset:
    """The open-set source dataset a label file's manifest names (its images replace some of ours)."""
    name = manifest.get("source_dataset")
    if not name:
        raise SlnError(
            f"this label file replaces images of {data.name} (it has a source_index column) but its manifest "
            "names no source_dataset; regenerate it with `sln corrupt --mode openset --source-dataset NAME`"
        )
    from sln_cli.data import load_dataset

    return load_dataset(name, data_dir)


def check_request(
    dataset: str | None,
    mode: str | None,
    rate: float | None,
    seed: int,
    exact: bool,
    matrix: Path | None,
    probs: Path | None,
    source_dataset: str | None,
) -> None:
    """Refuse an incomplete or contradictory request before any data is read."""
    if mode is None or mode not in MODES:
        what = "pass --mode" if mode is None else f"unknown mode {mode!r}"
        raise SlnError(f"{what}; choose one of {', '.join(MODES)}")
    if dataset is None:
        raise SlnError("pass --dataset (e.g. --dataset cifar10), or --inspect FILE to summarise an existing file")
    uses_matrix = mode == "transition" or (mode == "asym" and matrix is not None)
    if mode == "transition" and matrix is None:
        raise SlnError("mode transition needs --matrix: a KxK row-stochastic matrix (.npy or .csv, rows = true class)")
    if matrix is not None and not uses_matrix:
        raise SlnError(f"--matrix applies to modes transition and asym, not {mode}; drop it")
    if uses_matrix and rate is not None:
        raise SlnError("the transition matrix sets the noise; drop --rate (the summary reports the expected rate)")
    if not uses_matrix:
        if rate is None:
            raise SlnError(f"mode {mode} needs --rate, the noise rate in [0, 1] (e.g. --rate 0.4)")
        noise.check_rate(rate)
    if mode == "dependent" and probs is None:
        raise SlnError(
            "mode dependent needs --probs (sln train: --set noise.probs=...): an NxK .npy of softmax outputs "
            "averaged over training on clean labels, or a run directory trained with --record-probs "
            "(e.g. `sln train --preset cifar10-clean`)"
        )
    if probs is not None and mode != "dependent":
        raise SlnError(f"--probs applies to mode dependent only, not {mode}; drop it")
    if mode == "openset" and source_dataset is None:
        raise SlnError("mode openset needs --source-dataset: whose images replace ours (cifar100 in the paper)")
    if source_dataset is not None and mode != "openset":
        raise SlnError(f"--source-dataset applies to mode openset only, not {mode}; drop it")
    if exact and mode not in EXACT_MODES:
        raise SlnError(f"--exact applies to modes {' and '.join(EXACT_MODES)}; drop it for mode {mode}")
    if seed < 0:
        raise SlnError(f"--seed must be a non-negative integer, got {seed}")


def _corrupt(
    data: Dataset,
    mode: str,
    rate: float | None,
    rng: np.random.Generator,
    *,
    exact: bool,
    matrix: Path | None,
    probs: Path | None,
) -> tuple[np.ndarray, float, dict]:
    """Noisy labels for a label-noise mode, the expected realised rate, and what the manifest records of inputs."""
    clean = np.asarray(data.train.labels, dtype=np.int64)
    num_classes = data.num_classes
    if mode in ("sym", "uniform"):
        assert rate is not None
        generator = noise.symmetric if mode == "sym" else noise.uniform
        chosen = noise.count_for_rate(rate, clean.size) / max(clean.size, 1) if exact else rate
        # sym always changes a chosen label; uniform redraws it from all K classes, keeping it 1 time in K.
        expected = chosen if mode == "sym" else chosen * (num_classes - 1) / num_classes
        return generator(clean, num_classes, rate, rng, exact=exact), expected, {}
    if matrix is not None:  # transition, or asym with a user matrix
        transition = noise.check_transition_matrix(_read_matrix(matrix), num_classes)
        expected = float(np.mean(1.0 - np.diag(transition)[clean])) if clean.size else 0.0
        inputs = {"matrix_file": os.fspath(matrix), "matrix_sha256": _sha256_file(matrix)}
        return noise.transition(clean, transition, rng), expected, inputs
    assert rate is not None
    if mode in ("asym", "asym-superclass"):
        targets = _asym_targets(data, mode)
        expected = rate * float(np.mean(targets[clean] != clean)) if clean.size else 0.0
        return noise.pair_flip(clean, targets, rate, rng), expected, {}
    if mode == "dependent":
        assert probs is not None
        probs_file = probs / "probs.npy" if probs.is_dir() else probs
        if probs.is_dir() and not probs_file.is_file():
            raise SlnError(
                f"{probs} holds no probs.npy: train that run with --record-probs, or pass an NxK .npy to --probs"
            )
        averaged = noise.check_probs(_read_matrix(probs_file), clean.size, num_classes)
        noisy = noise.dependent(clean, averaged, rate)
        return (
            noisy,
            noise.count_for_rate(rate, clean.size) / max(clean.size, 1),
            {"probs_file": os.fspath(probs_file), "probs_sha256": _sha256_file(probs_file)},
        )
    assert mode == "idn"
    images = _in_memory_images(data, "idn")
    return noise.idn(clean, images, num_classes, rate, rng), noise.idn_expected_rate(rate), {}


def _asym_targets(data: Dataset, mode: str) -> np.ndarray:
    if mode == "asym-superclass":
        if data.superclass is None:
            raise SlnError(f"mode asym-superclass needs super-classes, which {data.name} has none of; use cifar100")
        return noise.superclass_targets(data.superclass)
    if data.name == "cifar10":
        return noise.cifar10_asym_targets(data.classes)
    if data.name == "cifar100":
        return noise.next_class_targets(data.num_classes)
    raise SlnError(
        f"mode asym has no built-in map for {data.name} (only cifar10 and cifar100); "
        "pass --matrix with a KxK row-stochastic transition matrix"
    )


def _in_memory_images(data: Dataset, mode: str) -> np.ndarray:
    if data.train.images is None:
        raise SlnError(f"mode {mode} needs the training images in memory; {data.name} is file-backed")
    return data.train.images.numpy()


def _openset(data: Dataset, source: Dataset, rate: float, rng: np.random.Generator) -> np.ndarray:
    ours, theirs = _in_memory_images(data, "openset"), _in_memory_images(source, "openset")
    if ours.shape[1:] != theirs.shape[1:]:
        raise SlnError(
            f"--source-dataset {source.name} has images of shape {theirs.shape[1:]} but {data.name} has "
            f"{ours.shape[1:]}; pick a source dataset with the same image size"
        )
    return noise.openset(len(ours), len(theirs), rate, rng)


def _read_matrix(path: Path) -> np.ndarray:
    """A matrix from `.npy` (pickles refused) or comma/whitespace-separated text (`.csv`, `.txt`), bounded."""
    return readers.read_matrix(path, what="matrix file")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
