"""Serving a split as normalised float batches on the training device, in a given index order.

In-memory datasets (CIFAR, digits) stay on the device as uint8 and are cropped, flipped and normalised
there in whole batches; file-backed ones (Clothing1M, imagefolder) are decoded and cropped as uint8 by DataLoader
workers and normalised on the device.
Both yield `(images, indices)` so the training step does not care which.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sln_cli.data import Split
from sln_cli.data.augment import channel_constants, crop_flip, normalize
from sln_cli.errors import SlnError

if TYPE_CHECKING:
    from sln_cli.data.files import FileDataset


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
        self._constants = channel_constants(mean, std, images.device)  # once: no host-to-device copy per batch
        self._plain = self._normalize(images) if cache_plain else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def _normalize(self, images: Tensor) -> Tensor:
        return normalize(images, *self._constants, dtype=self.dtype, channels_last=self.channels_last)

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
    """A file-backed split read by persistent DataLoader workers and normalised on the device.

    Workers decode, resize and crop/flip each image on uint8 tensors (`sln_cli.data.files`) and collate uint8 batches,
    pinned when the device is CUDA: a quarter of float32's host-to-device traffic; `normalize` then makes the model's
    inputs on the device. With `gpu_decode` (CUDA only) the workers only read the files' bytes, and this process
    decodes the JPEGs of a batch in one nvJPEG call and resizes and crops them there. Each sample's random crop and
    flip are seeded by (epoch seed, sample index), so a run is reproducible and resumable whatever the number of
    workers, and the GPU decode picks the same windows and flips. The crop is RandomCrop(crop) with a flip: the
    `Augmentation` settings (CIFAR's padding) only switch it on.
    """

    def __init__(self, split: Split, mean: tuple[float, ...], std: tuple[float, ...], *, device: torch.device,
                 resize: int, crop: int, workers: int, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, gpu_decode: bool = False) -> None:
        from sln_cli.data.files import FileDataset, eval_transform, train_transform

        if gpu_decode:
            _require_cuda(device)
        self.mean, self.std, self.device, self.dtype, self.channels_last = mean, std, device, dtype, channels_last
        self._constants = channel_constants(mean, std, device)  # once: no host-to-device copy per batch
        # no more workers than usable cores: more only slow the run, and DataLoader warns about them (each sample's
        # crop and flip come from its own seed, so the number of workers does not change the views)
        assert split.files is not None, "a file-backed split"
        self.files: Sequence[Path] = split.files
        self.resize, self.crop, self.workers = resize, crop, min(workers, _usable_cores())
        self.gpu_decode, self._length = gpu_decode, len(split.labels)
        views = {True: train_transform(resize=resize, crop=crop), False: eval_transform(resize=resize, crop=crop)}
        self._datasets: dict[bool, torch.utils.data.Dataset] = {
            train: _SeededBytes(self.files) if gpu_decode else _SeededItems(FileDataset(split, view))
            for train, view in views.items()
        }
        self._loaders: dict[tuple[bool, int], tuple[_OrderSampler, torch.utils.data.DataLoader]] = {}

    def __len__(self) -> int:
        return self._length

    def batches(self, order: Tensor, batch_size: int, *, augmentation: Augmentation | None = None,
                generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Normalised `dtype` batches of `order`, random views drawn from `generator` when `augmentation` is given."""
        train = augmentation is not None
        sampler, loader = self._loader(train, batch_size)
        seed = epoch_seed(generator)
        sampler.items = [(i, seed + i) for i in order.tolist()]
        for batch in loader:
            if self.gpu_decode:
                images, index = self._decode_on_device(*batch, train=train)
            else:
                images, index = batch  # (B, C, crop, crop) uint8
                images = images.to(self.device, non_blocking=True)
            images = normalize(images, *self._constants, dtype=self.dtype, channels_last=self.channels_last)
            yield images, index.to(self.device, non_blocking=True)

    def _decode_on_device(self, datas: list[Tensor], index: Tensor, seeds: Tensor, *,
                          train: bool) -> tuple[Tensor, Tensor]:
        from sln_cli.data.files import decode_batch, eval_view, train_view

        decoded = decode_batch(datas, [self.files[i] for i in index.tolist()], device=self.device)
        if not train:
            return torch.stack([eval_view(image, resize=self.resize, crop=self.crop) for image in decoded]), index
        # The seed a worker gives torch's global RNG, on a CPU generator: the same draws, so the same windows and flips.
        return torch.stack([
            train_view(image, resize=self.resize, crop=self.crop, generator=torch.Generator().manual_seed(seed))
            for image, seed in zip(decoded, seeds.tolist(), strict=True)
        ]), index  # (B, C, crop, crop) uint8 on the device

    def _loader(self, train: bool, batch_size: int) -> tuple[_OrderSampler, torch.utils.data.DataLoader]:
        if (train, batch_size) not in self._loaders:
            sampler = _OrderSampler()
            loader = torch.utils.data.DataLoader(
                self._datasets[train], batch_size=batch_size, sampler=sampler, num_workers=self.workers,
                collate_fn=_collate_bytes if self.gpu_decode else None,
                pin_memory=self.device.type == "cuda" and not self.gpu_decode,  # nvJPEG reads pageable bytes
                persistent_workers=self.workers > 0,
                generator=torch.Generator())  # its workers' base seeds: not drawn from training's global RNG
            self._loaders[train, batch_size] = (sampler, loader)
        return self._loaders[train, batch_size]


def epoch_seed(generator: torch.Generator | None) -> int:
    """The seed of an epoch's per-sample views, drawn from `generator` on the generator's own device (a CUDA
    generator cannot draw for a CPU tensor, nor a CPU one for a CUDA tensor); 0 without a generator."""
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31, (1,), generator=generator, device=generator.device))


def _require_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        raise SlnError(f"decoding JPEGs on the GPU needs a CUDA device, not {device}; turn GPU decoding off")


class _OrderSampler(torch.utils.data.Sampler):
    """Yields whatever `(index, seed)` items were set last, so one persistent loader serves every epoch."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class _SeededItems(torch.utils.data.Dataset):
    """Item `(index, seed)` is `base[index]` drawn with torch's global RNG seeded by `seed`."""

    def __init__(self, base: FileDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = item
        # The global CPU RNG drives the random crop and flip. Its state is restored afterwards: with workers=0 this
        # runs in the training process. (torch.manual_seed would also seed every other backend, 70 times slower.)
        rng = torch.default_generator
        state = rng.get_state()
        rng.manual_seed(seed)
        try:
            return self.base[index]
        finally:
            rng.set_state(state)


class _SeededBytes(torch.utils.data.Dataset):
    """Item `(index, seed)` is the file's bytes with both numbers: the main process decodes and draws (gpu_decode)."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int, int]:
        from sln_cli.data.files import read_bytes

        index, seed = item
        return read_bytes(self.files[index]), index, seed


def _collate_bytes(items: list[tuple[Tensor, int, int]]) -> tuple[list[Tensor], Tensor, Tensor]:
    """Files differ in length: their bytes stay a list; indices and seeds become int64 (B,) tensors."""
    datas, index, seeds = zip(*items, strict=True)
    return list(datas), torch.tensor(index), torch.tensor(seeds)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
