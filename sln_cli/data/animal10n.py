"""Animal-10N (Song et al., "SELFIE", ICML 2019): 50,000 training and 5,000 test 64×64 photos of 5 confusable pairs.

As its authors distribute it: `ROOT/training/` and `ROOT/testing/`, JPEGs named `<label>_<id>.jpg` (e.g. `0_00001.jpg`;
the label is the part before the first underscore). The training labels come from web search and are noisy (about 8%
by the authors' estimate); the true labels are unknown. Images are decoded once into memory (~0.6 GB as uint8).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sln_cli.data import Dataset, Split
from sln_cli.errors import SlnError

# The dataset page's label order (0 cat ... 9 guinea pig). Names are for display only: the label is the file's number.
CLASSES = ("cat", "lynx", "wolf", "coyote", "cheetah", "jaguar", "chimpanzee", "orangutan", "hamster", "guinea pig")
FOLDERS = {"train": "training", "test": "testing"}
IMAGE_SIZE = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_animal10n(root: Path) -> Dataset:
    """Read `root/training` and `root/testing`; normalisation statistics are those of the training images."""
    splits = {split: _read_split(root, folder) for split, folder in FOLDERS.items()}
    assert splits["train"].images is not None, "_read_split loads the images"
    mean, std = channel_statistics(splits["train"].images)
    return Dataset("animal10n", CLASSES, splits["train"], splits["test"], None, mean, std)


def parse_label(path: Path) -> int:
    """The class of `<label>_<id>.jpg`; a name that does not parse is a one-line error naming the file."""
    head, underscore, rest = path.stem.partition("_")
    if not (underscore and head.isdigit() and rest and 0 <= int(head) < len(CLASSES)):
        raise SlnError(f"cannot read a label from the file name {path}: Animal-10N images are named "
                       f"<label 0..{len(CLASSES) - 1}>_<id>.jpg (e.g. 0_00001.jpg); rename or remove it")
    return int(head)


def channel_statistics(images: torch.Tensor, chunk: int = 2048) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 N×C×H×W images on [0, 1] pixels, in chunks (a float copy would be ~5 GB).

    Sums of pixel values (< 2^8) and their squares (< 2^16) are exact in float32 and accumulated in float64.
    """
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].float()  # (chunk, C, H, W), values 0..255
        total += block.sum(dim=(0, 2, 3), dtype=torch.float64)
        squares += block.square_().sum(dim=(0, 2, 3), dtype=torch.float64)
    count = images.numel() / images.shape[1]
    mean = total / count / 255
    std = (squares / count / 255**2 - mean.square()).clamp_min(0).sqrt()
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def _read_split(root: Path, folder: str) -> Split:
    directory = root / folder
    if not directory.is_dir():
        raise SlnError(f"no {folder}/ folder in {root}: Animal-10N needs ROOT/training/ and ROOT/testing/ as its "
                       "authors distribute them (raw_image.zip); pass --data-dir to that ROOT")
    names = sorted(entry.name for entry in os.scandir(directory)
                   if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES))  # the dataset order
    if not names:
        raise SlnError(f"{directory} holds no images; expected <label>_<id>.jpg files")
    paths = [directory / name for name in names]
    labels = np.array([parse_label(path) for path in paths], dtype=np.int64)  # every name checked before decoding
    return Split(labels=labels, images=_decode_all(paths))


def _decode_all(paths: list[Path], chunk: int = 512) -> torch.Tensor:
    from sln_cli.data.files import decode_batch, read_bytes

    images = torch.empty(len(paths), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)  # (N, 3, 64, 64)
    for start in range(0, len(paths), chunk):
        batch = paths[start:start + chunk]
        # one batched decode_jpeg call per chunk: ~2x faster than file by file on a CPU
        decoded = decode_batch([read_bytes(path) for path in batch], batch, device=torch.device("cpu"))
        for offset, (path, image) in enumerate(zip(batch, decoded, strict=True)):  # image: (3, H, W) RGB
            if image.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise SlnError(f"{path} is {image.shape[-1]}×{image.shape[-2]} pixels; Animal-10N images are "
                               f"{IMAGE_SIZE}×{IMAGE_SIZE}: restore the original file")
            images[start + offset] = image
    return images


def read_animal10n(data_dir: Path, download: bool) -> Dataset:
    return load_animal10n(data_dir)
