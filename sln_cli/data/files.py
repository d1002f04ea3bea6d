"""Decoding for file-backed splits (imagefolder, Clothing1M): a torch Dataset and the two standard pipelines.

The pipelines are the official SLN Clothing1M ones: Resize(256) → RandomCrop(224) → flip for training,
Resize(256) → CenterCrop(224) for evaluation, then to [0, 1] and normalised; both sizes are configurable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sln_cli.data import Split
from sln_cli.errors import SlnError

if TYPE_CHECKING:
    from PIL import Image


def read_image(path: Path) -> Image.Image:
    """The image at `path` as a fully decoded RGB PIL image (grey, palette and RGBA are converted)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() forces the decode, so a truncated file fails here
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # missing, unreadable, corrupt, huge
        raise SlnError(f"cannot decode image {path} ({exc}); replace or remove it (and its line in the list)") from exc


def decode_image(path: Path) -> torch.Tensor:
    """The image at `path` as uint8 3×H×W RGB."""
    pixels = np.asarray(read_image(path), dtype=np.uint8)  # H×W×3
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def train_transform(
    mean: tuple[float, ...], std: tuple[float, ...], *, resize: int = 256, crop: int = 224
) -> Callable[[Any], torch.Tensor]:
    """Resize the short side to `resize`, random `crop`×`crop`, random horizontal flip, to [0, 1], normalise."""
    from torchvision.transforms import v2

    _check_sizes(resize, crop)
    return v2.Compose(
        [
            v2.Resize(resize),
            v2.RandomCrop(crop),
            v2.RandomHorizontalFlip(),
            *_to_normalised_tensor(mean, std),
        ]
    )


def eval_transform(
    mean: tuple[float, ...], std: tuple[float, ...], *, resize: int = 256, crop: int = 224
) -> Callable[[Any], torch.Tensor]:
    """Resize the short side to `resize`, centre `crop`×`crop`, to [0, 1], normalise."""
    from torchvision.transforms import v2

    _check_sizes(resize, crop)
    return v2.Compose([v2.Resize(resize), v2.CenterCrop(crop), *_to_normalised_tensor(mean, std)])


def _to_normalised_tensor(mean: tuple[float, ...], std: tuple[float, ...]) -> list[Any]:
    from torchvision.transforms import v2

    # ToImage + ToDtype(scale=True) is v2's spelling of ToTensor: uint8 0..255 -> float32 0..1.
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def _check_sizes(resize: int, crop: int) -> None:
    if not 0 < crop <= resize:
        raise SlnError(f"the crop size ({crop}) must be positive and at most the resize size ({resize})")


class FileDataset(torch.utils.data.Dataset):
    """Item `i` is `(transform(image i), i)`: the index lets the training loop look up its (soft) label."""

    def __init__(self, split: Split, transform: Callable[[Any], torch.Tensor]) -> None:
        if split.files is None:
            raise ValueError("FileDataset needs a file-backed split; in-memory splits are batched on the device")
        self.files = split.files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_image(self.files[index])), index


class FileImageDataset(FileDataset):
    """`FileDataset` with the standard pipeline: `train_transform` when `train`, else `eval_transform`."""

    def __init__(
        self,
        split: Split,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        resize: int = 256,
        crop: int = 224,
    ) -> None:
        pipeline = train_transform if train else eval_transform
        super().__init__(split, pipeline(mean, std, resize=resize, crop=crop))
