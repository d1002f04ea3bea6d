"""The input size of a file-backed dataset: `data.resize`/`data.crop` when set, else the dataset's own.

Photos (Clothing1M, WebVision, large image folders) default to the usual shorter side 256 and crop 224. An image
folder of small images (32×32 CIFAR as files, 64×64 thumbnails) is read at its own size, never blown up to 224.
"""

from __future__ import annotations

from sln_cli.config import DataConfig
from sln_cli.data import Dataset

PHOTO_RESIZE, PHOTO_CROP = 256, 224  # the ImageNet-style defaults (shorter side, crop), in pixels


def input_size(data: DataConfig, dataset: Dataset) -> tuple[int, int]:
    """(resize, crop) in pixels: explicit settings win; a missing one follows the images (or 256/224)."""
    side = dataset.image_side
    natural = (side, side) if side is not None and side < PHOTO_CROP else (PHOTO_RESIZE, PHOTO_CROP)
    if data.resize is None and data.crop is None:
        return natural
    if data.crop is None:
        assert data.resize is not None
        return data.resize, min(natural[1], data.resize)
    if data.resize is None:  # a crop alone: small images keep their side, photos keep the 256:224 ratio
        if side is not None and side < PHOTO_CROP:  # small
            return max(side, data.crop), data.crop
        return max(data.crop, round(data.crop * PHOTO_RESIZE / PHOTO_CROP)), data.crop
    return data.resize, data.crop
