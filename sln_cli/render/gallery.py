"""Pictures of training images with their labels, to check by eye: the contact sheet of `sln analyze issues`
(the most suspect samples, given -> suggested class) and the per-class example grid of `sln corrupt --inspect
--plot` (true -> noisy class). One PNG each, written atomically on an Agg canvas like `sln_cli.render.plots`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sln_cli.render.plots import save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from sln_cli.data import Split

THUMBNAIL = 128  # pixels: the longer side of a file-backed image on a sheet (in-memory images are small already)
CELL_INCHES = 1.7  # width of one image cell


@dataclass(frozen=True)
class Tile:
    image: np.ndarray  # uint8 H×W×C (C = 1 or 3)
    caption: str
    colour: str = "black"


def split_images(split: Split, indices: Sequence[int]) -> list[np.ndarray]:
    """uint8 H×W×C arrays of some samples of a data split: its in-memory images, or its files decoded (RGB) and
    shrunk to at most THUMBNAIL pixels on the longer side."""
    images = getattr(split, "images", None)
    if images is not None:
        return [images[i].permute(1, 2, 0).contiguous().numpy() for i in indices]
    from PIL import Image

    from sln_cli.data.files import decode_image

    assert split.files is not None, "a split holds images or files"
    tiles = []
    for i in indices:
        picture = Image.fromarray(decode_image(Path(split.files[i])).permute(1, 2, 0).numpy())
        picture.thumbnail((THUMBNAIL, THUMBNAIL))
        tiles.append(np.asarray(picture))
    return tiles


def _show(axis: Axes, tile: Tile) -> None:
    grey = tile.image.shape[2] == 1
    image = tile.image[:, :, 0] if grey else tile.image
    axis.imshow(image, cmap="gray" if grey else None, vmin=0, vmax=255, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(tile.caption, fontsize=8, color=tile.colour)


def contact_sheet(path: str | os.PathLike[str], tiles: Sequence[Tile], *, title: str, columns: int = 6) -> None:
    """Tiles in rows of `columns`, each image with its caption above it."""
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    figure, axes = _grid(rows, columns, height=CELL_INCHES * 1.25)
    for axis, tile in zip(axes, tiles, strict=False):
        _show(axis, tile)
    for axis in axes[len(tiles):]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)


def class_grid(path: str | os.PathLike[str], rows: Sequence[tuple[str, Sequence[Tile]]], *, title: str,
               columns: int) -> None:
    """One row per class (its name on the left), up to `columns` tiles each; an empty row says "none"."""
    figure, axes = _grid(max(1, len(rows)), columns, height=CELL_INCHES * 1.15)
    for row, (name, tiles) in enumerate(rows):
        for column in range(columns):
            axis = axes[row * columns + column]
            if column < len(tiles):
                _show(axis, tiles[column])
            else:
                axis.axis("off")
            if column == 0:
                axis.set_visible(True)
                axis.set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center")
                if not tiles:
                    axis.axis("on")
                    axis.set_xticks([])
                    axis.set_yticks([])
                    axis.text(0.5, 0.5, "none", ha="center", va="center", fontsize=8, color="gray")
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)


def _grid(rows: int, columns: int, *, height: float) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(CELL_INCHES * columns + 1.2, height * rows + 0.7), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False).ravel().tolist()
