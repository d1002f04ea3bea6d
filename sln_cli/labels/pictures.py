"""Pictures of a label file's noise for `sln corrupt --inspect FILE --plot PNG`: the row-normalised transition
matrix as a heat map (PNG), and with a dataset a grid of flipped training images per class, true -> noisy
(PNG-examples.png), as users of re-implementations of the SLN paper draw them by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sln_cli.errors import SlnError
from sln_cli.rundir.ownership import check_replaceable

if TYPE_CHECKING:
    from sln_cli.data import Dataset

EXAMPLES_PER_CLASS = 8
MAX_CLASS_ROWS = 20  # with more classes the grid shows the 20 with the most flipped samples
SEED = 0  # which flipped samples are shown: a seeded shuffle, the same every time


def plot_paths(plot: Path, *, with_examples: bool, overwrite: bool = False) -> dict[str, Path]:
    """The PNGs `--plot` will write, checked before any work: a .png path; a file in the way is replaced only with
    `overwrite` (a path the user chose, as every output file of sln)."""
    plot = Path(plot)
    if plot.suffix.lower() != ".png":
        raise SlnError(f"--plot {plot} must end in .png")
    paths = {"transition_matrix": plot}
    if with_examples:
        paths["examples"] = plot.with_name(f"{plot.stem}-examples.png")
    for path in paths.values():
        check_replaceable(path, overwrite=overwrite)
    return paths


def draw_noise(paths: dict[str, Path], summary: dict, clean: np.ndarray, noisy: np.ndarray,
               dataset: Dataset | None) -> dict[str, str]:
    """Write the heat map (and, with `dataset`, the example grid); return {what: path}."""
    from sln_cli.render.plots import plot_transition_matrix

    names = summary.get("classes") or [str(i) for i in range(summary["num_classes"])]
    title = (f"{Path(summary['file']).name}: realised noise {summary['realized_noise_rate']:.3f} "
             f"({summary['num_mislabelled']} of {summary['num_samples']})")
    plot_transition_matrix(paths["transition_matrix"], np.asarray(summary["transition_matrix"]), names, title=title)
    if dataset is not None and "examples" in paths:
        draw_examples(paths["examples"], dataset, clean, noisy, title=title)
    return {what: str(path) for what, path in paths.items()}


def draw_examples(path: Path, dataset: Dataset, clean: np.ndarray, noisy: np.ndarray, *, title: str) -> None:
    """Rows of flipped training images, one row per true class (the most-flipped classes when there are many)."""
    from sln_cli.render.gallery import Tile, class_grid, split_images

    flipped = np.flatnonzero(noisy != clean)
    order = flipped[np.random.default_rng(SEED).permutation(len(flipped))]
    counts = np.bincount(clean[flipped], minlength=dataset.num_classes)
    classes = np.arange(dataset.num_classes)
    if len(classes) > MAX_CLASS_ROWS:
        classes = np.sort(np.argsort(-counts, kind="stable")[:MAX_CLASS_ROWS])
        title += f"\nthe {MAX_CLASS_ROWS} classes with the most flipped samples"
    rows = []
    for true_class in classes:
        chosen = [int(i) for i in order[clean[order] == true_class][:EXAMPLES_PER_CLASS]]
        images = split_images(dataset.train, chosen)
        names = dataset.classes
        tiles = [Tile(image, f"{names[clean[i]]} → {names[noisy[i]]}", "tab:red")
                 for i, image in zip(chosen, images, strict=True)]
        rows.append((f"{names[true_class]}\n({counts[true_class]} flipped)", tiles))
    class_grid(path, rows, title=f"{title}\nflipped training images: true → noisy label", columns=EXAMPLES_PER_CLASS)
