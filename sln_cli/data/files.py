"""Decoding and cropping for file-backed splits (imagefolder, Clothing1M) on uint8 tensors, one image at a time.

The views are the official SLN Clothing1M ones: Resize(256) → RandomCrop(224) → flip for training, Resize(256) →
CenterCrop(224) for evaluation (both sizes configurable), computed on uint8 tensors instead of PIL images; turning
them into normalised floats (ToTensor + Normalize) is left to `augment.normalize`, on the training device.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sln_cli.data import Split
from sln_cli.errors import SlnError

JPEG_MAGIC = [0xFF, 0xD8, 0xFF]  # every JPEG file starts with an SOI marker and the next marker's 0xFF


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def read_bytes(path: Path) -> Tensor:
    """The file's contents as a uint8 (n,) tensor."""
    try:
        return torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    except OSError as exc:  # missing, a folder, unreadable
        raise _cannot_decode(path, exc) from exc


def decode_image(path: Path) -> Tensor:
    """The image at `path` as uint8 3×H×W RGB (see `decode_bytes`)."""
    return decode_bytes(read_bytes(path), path)


def decode_bytes(data: Tensor, path: Path, *, device: torch.device | None = None) -> Tensor:
    """uint8 3×H×W RGB from a file's bytes: JPEGs by `torchvision.io.decode_jpeg` (libjpeg-turbo; nvJPEG on a CUDA
    `device`), every other format, and any JPEG it refuses, by PIL's `Image.open(...).convert("RGB")` as the
    official loader reads them (grey, palette, RGBA and CMYK become RGB). `path` only names the file in errors."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if _is_jpeg(data):
        try:
            if device is not None and device.type == "cuda":
                return decode_jpegs_on_cuda([data], device)[0]
            return decode_jpeg(data, mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # a JPEG variant libjpeg-turbo rejects, or a corrupt file: PIL decides, and its error names the file
    image = _decode_with_pil(data, path)
    return image if device is None else image.to(device)


def decode_batch(datas: Sequence[Tensor], paths: Sequence[Path], *, device: torch.device) -> list[Tensor]:
    """`decode_bytes` of many files on `device`, the JPEGs in one batched `decode_jpeg` call (nvJPEG on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    images: list[Tensor | None] = [None] * len(datas)
    jpegs = [i for i, data in enumerate(datas) if _is_jpeg(data)]
    if jpegs:
        try:
            selected = [datas[i] for i in jpegs]
            decoded = (decode_jpegs_on_cuda(selected, device) if device.type == "cuda"
                       else decode_jpeg(selected, mode=ImageReadMode.RGB, device=device))
            for i, image in zip(jpegs, decoded, strict=True):
                images[i] = image
        except RuntimeError:
            pass  # one bad file fails the whole call: decode them one by one below, which names it
    return [decode_bytes(data, path, device=device) if image is None else image
            for image, data, path in zip(images, datas, paths, strict=True)]


_DECODE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def decode_jpegs_on_cuda(datas: Sequence[Tensor], device: torch.device) -> list[Tensor]:
    """nvJPEG's batched decode, made safe against the kernels already queued on the current stream.

    torchvision (0.29) allocates the outputs on the caller's current stream but writes them on a stream of its
    own without waiting for the caller's: memory just freed by a tensor that queued kernels still read can be
    overwritten mid-flight (upstream saw corrupted images on H100s). So the decode runs with a side stream
    current: its outputs come from that stream's pool, which nothing queued on the main stream uses. The main
    stream then waits for the side stream (which waited for nvJPEG's), and `record_stream` keeps each output's
    memory from being reused by the side stream until the main stream's work on it is done. No host sync.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    current = torch.cuda.current_stream(device)
    side = _DECODE_STREAMS.get(device)
    if side is None:
        side = _DECODE_STREAMS[device] = torch.cuda.Stream(device)
    with torch.cuda.stream(side):
        images = decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device)
    current.wait_stream(side)
    for image in images:
        image.record_stream(current)
    return images


def _is_jpeg(data: Tensor) -> bool:
    return data[:3].tolist() == JPEG_MAGIC  # by content, not suffix: a PNG named .jpg still decodes


def _decode_with_pil(data: Tensor, path: Path) -> Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
            pixels = np.array(image.convert("RGB"))  # H×W×3; convert() forces the decode, so truncation fails here
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # not an image, corrupt, truncated, huge
        raise _cannot_decode(path, exc) from exc
    return torch.from_numpy(pixels).permute(2, 0, 1)  # 3×H×W, the same channels-last strides decode_jpeg returns


def _cannot_decode(path: Path, exc: Exception) -> SlnError:
    return SlnError(f"cannot decode image {path} ({exc}); replace or remove it (and its line in the list)")


# --------------------------------------------------------------------------------------------------
# Resizing and cropping
# --------------------------------------------------------------------------------------------------


def resize_shorter(image: Tensor, size: int) -> Tensor:
    """Shorter side to `size` by antialiased bilinear on uint8: the output size torchvision's Resize(size) picks and,
    on the CPU, its uint8 kernel, which rounds within 1 grey level of PIL's resampling (the official pipeline's)."""
    from torchvision.transforms.v2 import functional

    if min(image.shape[-2:]) == size:  # already there (a cached image): Resize would not change it either
        return image
    return functional.resize(image, [size], antialias=True)


def random_crop_flip(image: Tensor, crop: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniform `crop`×`crop` window of a C×H×W image, flipped left-right with probability 1/2.

    The draws are torchvision's `RandomCrop(crop)` then `RandomHorizontalFlip()` (top, then left, none when the
    image is already crop×crop; then `rand(1) < 0.5`), so one seed picks the official pipeline's window and flip.
    Without `generator` they come from torch's global RNG, as torchvision's transforms do in DataLoader workers.
    There is no padding: an image smaller than `crop` raises ValueError, as RandomCrop(pad_if_needed=False) does.
    The training view never needs any, since its resize leaves the shorter side at `resize` ≥ `crop`.
    """
    height, width = image.shape[-2:]
    if height < crop or width < crop:
        raise ValueError(f"a {crop}×{crop} crop needs an image at least that large, got {height}×{width}")
    top = left = 0
    if (height, width) != (crop, crop):
        top = int(torch.randint(0, height - crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - crop + 1, (1,), generator=generator))
    window = image[..., top:top + crop, left:left + crop]  # (C, crop, crop)
    return window.flip(-1) if bool(torch.rand(1, generator=generator) < 0.5) else window


def center_crop(image: Tensor, crop: int) -> Tensor:
    """The central `crop`×`crop` window, placed as torchvision's CenterCrop places it (offsets rounded)."""
    from torchvision.transforms.v2 import functional

    return functional.center_crop(image, [crop, crop])


def train_view(image: Tensor, *, resize: int, crop: int, generator: torch.Generator | None = None) -> Tensor:
    """Resize(resize) → RandomCrop(crop) → RandomHorizontalFlip() of a decoded image: uint8 C×crop×crop."""
    return random_crop_flip(resize_shorter(image, resize), crop, generator)


def eval_view(image: Tensor, *, resize: int, crop: int) -> Tensor:
    """Resize(resize) → CenterCrop(crop) of a decoded image: uint8 C×crop×crop."""
    return center_crop(resize_shorter(image, resize), crop)


def train_transform(*, resize: int = 256, crop: int = 224) -> Callable[[Tensor], Tensor]:
    """`train_view` with these sizes (a partial: it pickles into DataLoader workers)."""
    _check_sizes(resize, crop)
    return functools.partial(train_view, resize=resize, crop=crop)


def eval_transform(*, resize: int = 256, crop: int = 224) -> Callable[[Tensor], Tensor]:
    """`eval_view` with these sizes."""
    _check_sizes(resize, crop)
    return functools.partial(eval_view, resize=resize, crop=crop)


def _check_sizes(resize: int, crop: int) -> None:
    if not 0 < crop <= resize:
        raise SlnError(f"the crop size ({crop}) must be positive and at most the resize size ({resize})")


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


class FileDataset(torch.utils.data.Dataset):
    """Item `i` is `(transform(decoded image i), i)`: the index lets the training loop look up its (soft) label."""

    def __init__(self, split: Split, transform: Callable[[Tensor], Tensor]) -> None:
        if split.files is None:
            raise ValueError("FileDataset needs a file-backed split; in-memory splits are batched on the device")
        self.files = split.files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(decode_image(self.files[index])), index
