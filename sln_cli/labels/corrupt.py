"""`sln corrupt`: build a noisy-label file for a dataset, or summarise an existing one, and render the summary.

`generate` and `inspect` return the same JSON-ready summary (`labels.summarize` plus what was asked for).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sln_cli.errors import SlnError
from sln_cli.labels import official
from sln_cli.labels.labelfile import (
    check_against,
    is_label_manifest,
    manifest_path,
    read_label_file,
    summarize,
    write_label_file,
)
from sln_cli.labels.make import MODES, check_request, load_source_dataset, make_labels

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["MODES", "generate", "inspect", "load_source_dataset", "make_labels", "render"]  # make_labels: old path

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
    overwrite: bool = False,
) -> dict:
    """Corrupt the training labels of `dataset` with `mode`, write `out` (+ manifest), return the summary.

    An existing `out` is replaced only with `overwrite`, and only when it is a label file sln wrote (its
    manifest beside it says so); an unrelated `.json` in the manifest's place is never replaced."""
    check_request(dataset, mode, rate, seed, exact, matrix, probs, source_dataset)
    _check_out(out, overwrite)
    assert dataset is not None and mode is not None and out is not None
    from sln_cli.data import load_dataset

    data = load_dataset(dataset, data_dir, download=download)
    labels, _ = make_labels(
        data, mode=mode, rate=rate, seed=seed, exact=exact, matrix=matrix, probs=probs,
        source_dataset=source_dataset, source_data_dir=source_data_dir or data_dir, download=download,
    )
    assert labels.clean is not None, "labels made here know the true ones"
    summary = summarize(labels.clean, labels.noisy, data.num_classes, requested_rate=rate,
                        source_index=labels.source_index, mode=mode)
    written = write_label_file(out, labels)
    return _finish(summary, written, data.classes, expected=written["expected_noise_rate"], file=out)


def _check_out(out: Path | None, overwrite: bool) -> None:
    if out is None:
        raise SlnError("pass --out FILE.csv: where to write the noisy labels")
    if Path(out).suffix.lower() != ".csv":
        raise SlnError(f"--out {out} must end in .csv (its manifest is written beside it as .json)")
    manifest = manifest_path(out)
    for path in (Path(out), manifest):
        if path.is_dir():
            raise SlnError(f"{path} is a directory; choose another --out")
    if not (os.path.lexists(out) or os.path.lexists(manifest)):
        return
    if not overwrite:
        raise SlnError(f"{out} or its manifest {manifest.name} already exists; pass --overwrite to replace a label "
                       "file sln wrote, or choose another --out")
    if not is_label_manifest(manifest):
        raise SlnError(f"{manifest} is not the manifest of an sln label file, so --overwrite will not replace "
                       f"{Path(out).name} or it; choose another --out")


def inspect(
    path: Path, *, label_set: str | None = None, dataset: str | None = None, data_dir: Path | None = None,
    plot: Path | None = None, overwrite: bool = False,
) -> dict:
    """Summarise an existing label file (ours, an official SLN CSV, or CIFAR-N); check it against `dataset`;
    with `plot`, draw its noise (`sln_cli.labels.pictures`)."""
    if plot is not None:
        from sln_cli.labels.pictures import draw_noise, plot_paths

        plot_paths_ = plot_paths(plot, with_examples=dataset is not None, overwrite=overwrite)  # before any work
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
    if plot is not None:
        summary["plots"] = draw_noise(plot_paths_, summary, labels.clean, labels.noisy,
                                      data if dataset is not None else None)
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
    corrupted = summary.get("num_replaced_images", summary["num_mislabelled"])
    rates.add_row("realised overall rate", f"{_rate(summary['realized_noise_rate'])} ({corrupted} samples)")
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
    for what, plot in (summary.get("plots") or {}).items():
        console.print(f"{what}: {plot}", markup=False, highlight=False)


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
