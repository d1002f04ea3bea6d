"""`sln corrupt`: build a noisy-label file for a dataset, or summarise an existing one, and render the summary.

`generate` and `inspect` return the same JSON-ready summary (`labels.summarize` plus what was asked for).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sln_cli import __version__, noise, official
from sln_cli.errors import SlnError
from sln_cli.labels import NoisyLabels, check_against, manifest_path, read_label_file, summarize, write_label_file

if TYPE_CHECKING:
    from rich.console import Console

    from sln_cli.data import Dataset

MODES: tuple[str, ...] = ("sym", "uniform", "asym", "asym-superclass", "transition", "dependent", "idn", "openset")
EXACT_MODES = ("sym", "uniform")  # the other modes either flip exactly round(r*N) already or follow a matrix
MATRIX_LIMIT = 20  # a transition matrix with more classes is shown as its top confusions


def generate(
    *,
    dataset: str | None,
    data_dir: Path | None,
    download: bool = False,
    mode: str | None,
    rate: float | None,
    seed: int = 0,
    exact: bool = False,
    matrix: Path | None = None,
    probs: Path | None = None,
    source_dataset: str | None = None,
    source_data_dir: Path | None = None,
    out: Path | None,
) -> dict:
    """Corrupt the training labels of `dataset` with `mode`, write `out` (+ manifest), return the summary."""
    _check_request(dataset, mode, rate, seed, exact, matrix, probs, source_dataset)
    _check_out(out)
    assert dataset is not None and mode is not None and out is not None
    from sln_cli.data import load_dataset

    data = load_dataset(dataset, data_dir, download=download)
    labels, manifest, _ = make_labels(
        data, mode=mode, rate=rate, seed=seed, exact=exact, matrix=matrix, probs=probs,
        source_dataset=source_dataset, source_data_dir=source_data_dir or data_dir, download=download,
    )
    summary = summarize(labels.clean, labels.noisy, data.num_classes, requested_rate=rate,
                        source_index=labels.source_index, mode=mode)
    written = write_label_file(out, labels, manifest)
    return _finish(summary, written, data.classes, expected=manifest["expected_noise_rate"], file=out)


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
) -> tuple[NoisyLabels, dict, Dataset | None]:
    """The noisy labels of `data` for a mode, their manifest, and the open-set source dataset (if any).

    `sln corrupt` writes them to a file; `sln train` generates them on the fly the same way.
    """
    _check_request(data.name, mode, rate, seed, exact, matrix, probs, source_dataset)
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
    return NoisyLabels(noisy, clean, source_index, {}), manifest, source


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


def _check_request(
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


def _check_out(out: Path | None) -> None:
    if out is None:
        raise SlnError("pass --out FILE.csv: where to write the noisy labels")
    if Path(out).suffix.lower() != ".csv":
        raise SlnError(f"--out {out} must end in .csv (its manifest is written beside it as .json)")


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
    """A matrix from `.npy` (pickles refused) or comma/whitespace-separated text (`.csv`, `.txt`)."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        text = path.read_text(encoding="utf-8")
        return np.loadtxt(io.StringIO(text), delimiter="," if "," in text else None, ndmin=2)
    except FileNotFoundError:
        raise SlnError(f"{path} does not exist; check the path") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SlnError(f"cannot read a matrix from {path} ({str(exc)[:200]}); pass a .npy or a numeric .csv") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect(
    path: Path, *, label_set: str | None = None, dataset: str | None = None, data_dir: Path | None = None
) -> dict:
    """Summarise an existing label file (ours, an official SLN CSV, or CIFAR-N); check it against `dataset`."""
    if official.is_official(path):  # `official:NAME`: the verified cached copy, fetched if missing
        path = official.label_path(os.fspath(path))
    labels = read_label_file(path, label_set=label_set)
    if labels.clean is None:
        raise SlnError(f"{path} has no `label` column (the true labels are unknown), so its noise cannot be measured")
    manifest = labels.manifest
    num_classes = manifest.get("num_classes")
    recorded = manifest.get("classes")
    classes = tuple(map(str, recorded)) if isinstance(recorded, list) and len(recorded) == num_classes else None
    if dataset is not None:
        from sln_cli.data import load_dataset

        data = load_dataset(dataset, data_dir)
        check_against(labels, data.train.labels, data.num_classes)
        num_classes, classes = data.num_classes, data.classes
    if not isinstance(num_classes, int):
        num_classes = int(max(labels.clean.max(), labels.noisy.max())) + 1 if labels.noisy.size else 0
    summary = summarize(
        labels.clean,
        labels.noisy,
        num_classes,
        requested_rate=manifest.get("requested_noise_rate"),
        source_index=labels.source_index,
        mode=manifest.get("mode"),
    )
    if label_set is not None:
        summary["label_set"] = label_set
    summary = _finish(summary, manifest, classes, expected=manifest.get("expected_noise_rate"), file=path)
    if dataset is not None:
        summary["dataset"] = summary["dataset"] or data.name  # checked against it just above
    return summary


def _finish(
    summary: dict, manifest: dict, classes: tuple[str, ...] | None, *, expected: float | None, file: Path
) -> dict:
    """Add what the summary does not know by itself: the file, its manifest, class names, the expected rate."""
    summary["expected_noise_rate"] = expected
    summary["dataset"] = manifest.get("dataset")
    summary["seed"] = manifest.get("seed")
    summary["file"] = os.fspath(file)
    summary["manifest"] = os.fspath(manifest_path(file)) if manifest else None
    summary["classes"] = list(classes) if classes is not None else None
    if manifest.get("source_dataset"):
        summary["source_dataset"] = manifest["source_dataset"]
    summary["note"] = _note(summary)
    return summary


def _note(summary: dict) -> str | None:
    """Say plainly when the realised rate differs by design from the requested one (e.g. CIFAR-10 asym)."""
    requested, realized = summary["requested_noise_rate"], summary["realized_noise_rate"]
    mode = summary["mode"]
    expected = summary["expected_noise_rate"]
    every_class_mapped = expected is not None and requested is not None and abs(expected - requested) < 1e-9
    if mode in ("asym", "asym-superclass") and requested is not None and not every_class_mapped:
        return (
            f"the requested rate {requested:g} applies to each sample of the mapped classes only (classes outside "
            f"the map keep their labels); the overall realised rate is {realized:.4f}"
        )
    if mode == "uniform" and requested is not None:
        return "uniform redraws from all K classes, so a redrawn label may stay correct: realised ≈ r(K-1)/K"
    if mode == "openset":
        return "open-set noise replaces images and keeps labels: the rate is the fraction of replaced images"
    return None


def render(summary: dict, console: Console) -> None:
    """Rich tables: requested vs realised rate, per-class rates, the transition matrix or its top confusions."""
    from rich.table import Table

    names = summary.get("classes") or [str(i) for i in range(summary["num_classes"])]
    rates = Table(title=f"Label noise · {summary.get('mode') or 'file'} · {summary['file']}", show_header=False)
    rates.add_row("dataset", str(summary.get("dataset") or "(not recorded)"))
    rates.add_row("samples / classes", f"{summary['num_samples']} / {summary['num_classes']}")
    rates.add_row("requested rate", _rate(summary.get("requested_noise_rate")))
    if summary.get("expected_noise_rate") is not None:
        rates.add_row("expected overall rate", _rate(summary["expected_noise_rate"]))
    rates.add_row("realised overall rate", f"{_rate(summary['realized_noise_rate'])} ({summary['num_noisy']} samples)")
    for key in ("label_set", "source_dataset", "seed", "manifest"):
        if summary.get(key) is not None:
            rates.add_row(key.replace("_", " "), str(summary[key]))
    console.print(rates)
    if summary.get("note"):
        console.print(f"[yellow]note:[/] {summary['note']}")
    console.print(_per_class_table(summary, names))
    console.print(
        _matrix_table(summary, names) if summary["num_classes"] <= MATRIX_LIMIT else _confusions(summary, names)
    )


def _per_class_table(summary: dict, names: list[str]):
    """One row per class; with many classes, three classes side by side so CIFAR-100 fits on a screen."""
    from rich.table import Table

    cells = [
        (name, str(count), _rate(rate))
        for name, count, rate in zip(names, summary["class_counts"], summary["per_class_noise_rate"], strict=True)
    ]
    table = Table(title="Per class: noisy fraction")
    if len(names) <= MATRIX_LIMIT:
        for column in ("class", "samples", "noisy"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for cell in cells:
            table.add_row(*cell)
        return table
    groups = 3
    height = -(-len(cells) // groups)
    for _ in range(groups):
        table.add_column("class", no_wrap=True)
        table.add_column("noisy", justify="right")
    for row in range(height):
        picked = [cells[i] if i < len(cells) else ("", "", "") for i in range(row, row + groups * height, height)]
        table.add_row(*(value for name, _, rate in picked for value in (name, rate)))
    return table


def _matrix_table(summary: dict, names: list[str]):
    from rich import box
    from rich.table import Table

    table = Table(title="Transition matrix: % of each true class (row) labelled as each class (column)", box=box.SIMPLE)
    table.add_column("true class", no_wrap=True, max_width=16)
    for j in range(len(names)):
        table.add_column(str(j), justify="right")
    for i, (name, row) in enumerate(zip(names, summary["transition_matrix"], strict=True)):
        table.add_row(f"{i} {name}", *(_percent(p) for p in row))
    return table


def _percent(fraction: float) -> str:
    if fraction == 0:
        return "·"
    return "<1" if fraction < 0.005 else f"{100 * fraction:.0f}"


def _confusions(summary: dict, names: list[str]):
    from rich.table import Table

    table = Table(title=f"Top confusions ({summary['num_classes']} classes: matrix in --json)")
    for column in ("true", "noisy", "samples", "% of true class"):
        table.add_column(column, justify="right" if column in ("samples", "% of true class") else "left")
    for cell in summary["top_confusions"]:
        table.add_row(
            names[cell["true"]], names[cell["noisy"]], str(cell["count"]), f"{100 * cell['fraction_of_class']:.1f}"
        )
    return table


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
