"""Batched random crop + horizontal flip and normalisation of uint8 N×C×H×W images on whatever device they live on.

Same distribution as torchvision `RandomCrop(H, padding=p)` + `RandomHorizontalFlip()`, the official SLN CIFAR
augmentation, but one vectorised gather per batch instead of a Python call per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def random_crop_flip(images_uint8: torch.Tensor, *, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding`, crop back to H×W at a random offset, flip half of the images left-right."""
    n = images_uint8.shape[0]
    # torchvision RandomCrop.get_params: torch.randint(0, (H + 2p) - H + 1), i.e. uniform on {0, …, 2p} per axis;
    # RandomHorizontalFlip: flip when torch.rand(1) < 0.5. Drawn on the generator's device, then moved.
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=generator.device)  # (2, N)
    flips = torch.rand(n, generator=generator, device=generator.device) < 0.5  # (N,)
    offsets, flips = offsets.to(images_uint8.device), flips.to(images_uint8.device)
    return crop_flip(images_uint8, offsets[0], offsets[1], flips, padding)


def crop_flip(
    images: torch.Tensor,
    offsets_y: torch.Tensor,
    offsets_x: torch.Tensor,
    flips: torch.Tensor,
    padding: int,
) -> torch.Tensor:
    """Deterministic core: pad with zeros, crop H×W at (offsets_y, offsets_x) ∈ [0, 2p]², then flip where `flips`.

    Equals torchvision `F.hflip(F.crop(F.pad(x, p), y, x, H, W))` per sample (flip applied when flips[i]).
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (N, C, H+2p, W+2p)
    rows = offsets_y.long()[:, None] + torch.arange(h, device=images.device)  # (N, H) source rows
    cols = offsets_x.long()[:, None] + torch.arange(w, device=images.device)  # (N, W) source columns
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flip reads the crop's columns right to left
    batch = torch.arange(n, device=images.device)[:, None, None, None]  # (N, 1, 1, 1)
    channel = torch.arange(c, device=images.device)[None, :, None, None]  # (1, C, 1, 1)
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)


def normalize(
    images_uint8: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """(x / 255 − mean) / std per channel, as torchvision `ToTensor()` then `Normalize(mean, std)`.

    Pass `mean`/`std` as tensors on the images' device (`channel_constants`) when normalising batch after
    batch: built from Python numbers, they are a host-to-device copy, and a stream synchronisation, every call.
    """
    c = images_uint8.shape[1]
    assert len(mean) == len(std) == c, f"need {c} per-channel mean/std values, got {len(mean)} and {len(std)}"
    if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
        mean, std = channel_constants(mean, std, images_uint8.device)
    # Same float32 operations in the same order as ToTensor + Normalize (exact match); cast only at the end.
    out = (images_uint8.float().div(255) - mean.view(1, c, 1, 1)) / std.view(1, c, 1, 1)  # (N, C, H, W)
    out = out.to(dtype)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def channel_constants(mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std as float32 (C,) tensors on `device`: made once, used for every batch."""
    return (torch.as_tensor(mean, dtype=torch.float32, device=device),
            torch.as_tensor(std, dtype=torch.float32, device=device))
