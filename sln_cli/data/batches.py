"""Serving a split as normalised float batches on the training device, in a given index order.

In-memory datasets (CIFAR, digits) stay on the device as uint8 and are cropped, flipped and normalised
there in whole batches; file-backed ones (Clothing1M, imagefolder) are decoded by DataLoader workers.
Both yield `(images, indices)` so the training step does not care which.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sln_cli.data import Split
from sln_cli.data.augment import crop_flip, normalize


@dataclass(frozen=True)
class Augmentation:
    padding: int = 4  # random crop with this much zero padding (0: no crop)
    flip: bool = True  # random horizontal flip with probability 0.5


class DeviceImages:
    """A uint8 N×C×H×W split resident on the device; the un-augmented normalised copy is cached for eval."""

    def __init__(self, images: Tensor, mean: tuple[float, ...], std: tuple[float, ...], *,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False, cache_plain: bool = False) -> None:
        self.images = images
        self.mean, self.std, self.dtype, self.channels_last = mean, std, dtype, channels_last
        self._plain = self._normalize(images) if cache_plain else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def _normalize(self, images: Tensor) -> Tensor:
        return normalize(images, self.mean, self.std, dtype=self.dtype, channels_last=self.channels_last)

    def batches(self, order: Tensor, batch_size: int, *, augmentation: Augmentation | None = None,
                generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of `order` (indices on the device); augmented with `generator` when `augmentation` is given."""
        for start in range(0, order.numel(), batch_size):
            index = order[start:start + batch_size]
            if augmentation is None:
                yield (self._plain[index] if self._plain is not None else self._normalize(self.images[index])), index
            else:
                yield self._normalize(self._augment(self.images[index], augmentation, generator)), index

    @staticmethod
    def _augment(images: Tensor, augmentation: Augmentation, generator: torch.Generator | None) -> Tensor:
        n, device, p = images.shape[0], images.device, augmentation.padding
        # One draw per sample and axis, uniform over {0, ..., 2p}, as torchvision's RandomCrop(padding=p).
        offsets = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=device)
        flips = torch.rand(n, generator=generator, device=device) < 0.5
        if not augmentation.flip:
            flips = torch.zeros_like(flips)
        return crop_flip(images, offsets[0], offsets[1], flips, padding=p)


class FileImages:
    """A file-backed split decoded by persistent DataLoader workers into pinned memory.

    Each sample's random crop and flip are seeded by (epoch seed, sample index), so a run is reproducible
    and resumable whatever the number of workers.
    """

    def __init__(self, split: Split, mean: tuple[float, ...], std: tuple[float, ...], *, device: torch.device,
                 resize: int, crop: int, workers: int, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        from sln_cli.data.files import FileImageDataset

        self.device, self.dtype, self.workers, self._length = device, dtype, workers, len(split.labels)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._datasets = {
            train: _SeededItems(FileImageDataset(split, mean=mean, std=std, train=train, resize=resize, crop=crop))
            for train in (True, False)
        }
        self._loaders: dict[tuple[bool, int], tuple[_OrderSampler, torch.utils.data.DataLoader]] = {}

    def __len__(self) -> int:
        return self._length

    def batches(self, order: Tensor, batch_size: int, *, augmentation: Augmentation | None = None,
                generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        sampler, loader = self._loader(augmentation is not None, batch_size)
        seed = int(torch.randint(0, 2**31, (1,), generator=generator, device=order.device)) if generator else 0
        sampler.items = [(i, seed + i) for i in order.tolist()]
        for images, index in loader:
            images = images.to(self.device, self.dtype, non_blocking=True, memory_format=self.memory_format)
            yield images, index.to(self.device, non_blocking=True)

    def _loader(self, train: bool, batch_size: int) -> tuple[_OrderSampler, torch.utils.data.DataLoader]:
        if (train, batch_size) not in self._loaders:
            sampler = _OrderSampler()
            loader = torch.utils.data.DataLoader(
                self._datasets[train], batch_size=batch_size, sampler=sampler, num_workers=self.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0)
            self._loaders[train, batch_size] = (sampler, loader)
        return self._loaders[train, batch_size]


class _OrderSampler(torch.utils.data.Sampler):
    """Yields whatever `(index, seed)` items were set last, so one persistent loader serves every epoch."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class _SeededItems(torch.utils.data.Dataset):
    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        torch.manual_seed(seed)  # the worker's global RNG drives torchvision's random transforms
        return self.base[index]
