"""Batched crop/flip/normalise against torchvision's per-image transforms, and the offset/flip distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from scipy import stats

from sln_cli.data.augment import crop_flip, normalize, random_crop_flip


def _images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=generator, dtype=torch.uint8)  # (N, C, H, W)


@pytest.mark.parametrize(("padding", "h", "w"), [(0, 5, 7), (1, 5, 7), (4, 32, 32), (4, 6, 9)])
def test_crop_flip_equals_torchvision_per_sample(padding: int, h: int, w: int) -> None:
    images = _images(12, 3, h, w)
    generator = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 2 * padding + 1, (2, 12), generator=generator)
    offsets[:, :4] = torch.tensor([[0, 0, 2 * padding, 2 * padding], [0, 2 * padding, 0, 2 * padding]])  # corners
    flips = torch.arange(12) % 2 == 0
    out = crop_flip(images, offsets[0], offsets[1], flips, padding)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(12):
        expected = TF.crop(TF.pad(images[i], padding), int(offsets[0, i]), int(offsets[1, i]), h, w)
        expected = TF.hflip(expected) if flips[i] else expected
        assert torch.equal(out[i], expected), f"sample {i}"


def _decode(out: torch.Tensor, padding: int, center: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Channel 0 holds row+1 and channel 1 column+1, so the centre pixel gives the crop offset whether or not the
    # image was flipped, and the centre row's column values decrease left to right exactly when it was flipped.
    oy = out[:, 0, center, center].long() - 1 - (center - padding)
    ox = out[:, 1, center, center].long() - 1 - (center - padding)
    flipped = out[:, 1, center, center + 1] < out[:, 1, center, center - 1]
    return oy.numpy(), ox.numpy(), flipped.numpy()


def _coordinate_images(n: int, size: int) -> torch.Tensor:
    coords = torch.arange(1, size + 1, dtype=torch.uint8)
    rows, cols = coords[:, None].expand(size, size), coords[None, :].expand(size, size)
    return torch.stack([rows, cols])[None].expand(n, 2, size, size).contiguous()  # (N, 2, size, size)


def test_random_offsets_uniform_on_grid_and_flips_half() -> None:
    # 17×17 images with padding 4 keep the centre pixel and its neighbours inside the original image for every crop.
    padding, size, n = 4, 17, 81 * 200
    out = random_crop_flip(_coordinate_images(n, size), padding=padding, generator=torch.Generator().manual_seed(0))
    oy, ox, flipped = _decode(out, padding, center=size // 2)
    assert oy.min() == 0 and oy.max() == 8 and ox.min() == 0 and ox.max() == 8
    counts = np.bincount(oy * 9 + ox, minlength=81)
    # Joint uniformity over the 9×9 grid: with this fixed seed p must exceed 0.001 (a 1-in-1000 false alarm rate).
    assert stats.chisquare(counts).pvalue > 1e-3
    # Flip rate within 4 standard errors (sqrt(0.25 / n) ≈ 0.004) of 0.5.
    assert abs(flipped.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    # Flips independent of the offset: both halves see a uniform grid too.
    assert stats.chisquare(np.bincount((oy * 9 + ox)[flipped], minlength=81)).pvalue > 1e-3


def test_same_seed_same_output_and_other_seed_differs() -> None:
    images = _images(64, 3, 32, 32)
    first = random_crop_flip(images, padding=4, generator=torch.Generator().manual_seed(7))
    again = random_crop_flip(images, padding=4, generator=torch.Generator().manual_seed(7))
    other = random_crop_flip(images, padding=4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("n", [1, 2])
def test_small_and_partial_batches_are_valid_crops(n: int) -> None:
    # As in the last, partial batch of an epoch (e.g. 10 images in batches of 4 ends with 2) or a single image.
    padding, images = 2, _images(n, 3, 8, 8, seed=n)
    out = random_crop_flip(images, padding=padding, generator=torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.dtype == torch.uint8
    grid = torch.cartesian_prod(torch.arange(2 * padding + 1), torch.arange(2 * padding + 1))  # (25, 2)
    for i in range(n):
        candidates = [
            crop_flip(images[i : i + 1].expand(len(grid), -1, -1, -1), grid[:, 0], grid[:, 1], flips, padding)
            for flips in (torch.zeros(len(grid), dtype=torch.bool), torch.ones(len(grid), dtype=torch.bool))
        ]
        assert any(torch.equal(out[i], candidate) for batch in candidates for candidate in batch)


def test_normalize_matches_totensor_then_normalize() -> None:
    images = _images(5, 3, 6, 7)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the official SLN CIFAR-10 values
    out = normalize(images, mean, std)
    to_tensor, norm = T.ToTensor(), T.Normalize(mean, std)
    expected = torch.stack([norm(to_tensor(image.permute(1, 2, 0).numpy())) for image in images])
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert torch.allclose(out, expected, rtol=0, atol=1e-6)


def test_normalize_dtype_and_channels_last() -> None:
    images = _images(2, 3, 4, 4)
    out = normalize(images, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), dtype=torch.bfloat16, channels_last=True)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    reference = (images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(out.float(), reference, atol=2e-2)  # bfloat16 keeps ~3 significant digits
