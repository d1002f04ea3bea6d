"""Your own images: `ROOT/train/<class>/<image>`, `ROOT/test/<class>/<image>` and optionally `ROOT/val/...`.

Classes are the sorted folder names under train/ (as torchvision's ImageFolder); images are decoded lazily.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sln_cli.data import Dataset, Split
from sln_cli.errors import SlnError

# The suffixes torchvision's ImageFolder accepts; anything else in a class folder (notes, .DS_Store) is skipped.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# ImageNet statistics: the usual choice for photos, and what the pretrained ResNet-50 expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_imagefolder(root: Path) -> Dataset:
    """Read the folder tree under `root`; test/ and val/ may use only class names that train/ has."""
    for required in ("train", "test"):
        if not (root / required).is_dir():
            raise SlnError(
                f"no {required}/ folder in {root}: an imagefolder dataset needs ROOT/train/<class>/<image> and "
                "ROOT/test/<class>/<image>; pass --data-dir to that ROOT"
            )
    classes = tuple(_class_folders(root / "train"))
    if not classes:
        raise SlnError(f"{root / 'train'} has no class folders; put each class's images in train/<class>/")
    train = _read_split(root / "train", classes)
    test = _read_split(root / "test", classes)
    val = _read_split(root / "val", classes) if (root / "val").is_dir() else None
    assert train.files is not None, "_read_split makes file-backed splits"
    return Dataset("imagefolder", classes, train, test, val, IMAGENET_MEAN, IMAGENET_STD,
                   image_side=_typical_side(train.files))


def _typical_side(files: Sequence[Path], sample: int = 64) -> int | None:
    """The median shorter side of up to `sample` evenly spaced training images (PIL reads only their headers)."""
    from PIL import Image

    sides = []
    for path in files[:: max(1, len(files) // sample)][:sample]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (OSError, ValueError, Image.DecompressionBombError):  # unreadable here: the loader reports it later
            continue
    return int(np.median(sides)) if sides else None


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))


def _read_split(split_dir: Path, classes: tuple[str, ...]) -> Split:
    folders = _class_folders(split_dir)
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise SlnError(
            f"{split_dir} has class folders that train/ lacks ({', '.join(unknown)}); "
            "rename or remove them, or add them to train/"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        if name in folders:
            images = _images_under(split_dir / name)
            files += images
            labels += [label] * len(images)
    if not files:
        raise SlnError(f"{split_dir} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}); add some")
    return Split(labels=np.asarray(labels, dtype=np.int64), files=tuple(files))


def _images_under(folder: Path) -> list[Path]:
    """Image files below `folder` (subfolders too), in a fixed sorted order so that indices are stable."""
    found = []
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found += [Path(parent, name) for name in sorted(names) if name.lower().endswith(IMAGE_SUFFIXES)]
    return found


def read_imagefolder(data_dir: Path, download: bool) -> Dataset:
    return load_imagefolder(data_dir)
