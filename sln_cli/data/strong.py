"""SOP+'s strong view of a batch, made where the uint8 images live (the device for in-memory datasets).

The official SOP code (shengliu66/SOP `data_loader/data_loaders.py`, `transform_train_aug`) draws, per image, one
sub-policy of the AutoAugment paper's CIFAR-10 policy (`autoaug_paper_cifar10`), then the weak crop and flip,
normalises, and zeroes a Cutout square (`CutoutDefault(16)`). Here the policy is torchvision's
`AutoAugment(AutoAugmentPolicy.CIFAR10)` (the same 25 sub-policies), per image; crop, flip and Cutout are batched.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sln_cli.data.augment import crop_flip, normalize

_AUTOAUGMENT = None


def autoaugment(images: Tensor, seed: int) -> Tensor:
    """torchvision's AutoAugment (CIFAR-10 policy) applied to each uint8 (C, H, W) image on its own draw.

    torchvision draws its choices from torch's global CPU generator; they are drawn here from one seeded for
    this batch, and the global generator is left as it was (a resumed run repeats the same views).
    """
    global _AUTOAUGMENT
    if _AUTOAUGMENT is None:  # torchvision's transforms import lazily: `sln --help` stays torch-free
        from torchvision.transforms import v2

        _AUTOAUGMENT = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([_AUTOAUGMENT(image) for image in images])  # (B, C, H, W) uint8


def cutout(images: Tensor, generator: torch.Generator, length: int) -> Tensor:
    """The official `CutoutDefault(length)` on normalised images: a centre uniform over the pixels, the square
    [y - L//2, y + L//2) × [x - L//2, x + L//2) clipped to the image, set to 0 (the mean colour)."""
    n, _, h, w = images.shape
    centres = torch.stack([torch.randint(0, h, (n,), generator=generator, device=generator.device),
                           torch.randint(0, w, (n,), generator=generator, device=generator.device)]).to(images.device)
    rows = torch.arange(h, device=images.device)[None, :]  # (1, H)
    cols = torch.arange(w, device=images.device)[None, :]
    inside_rows = (rows >= centres[0, :, None] - length // 2) & (rows < centres[0, :, None] + length // 2)  # (N, H)
    inside_cols = (cols >= centres[1, :, None] - length // 2) & (cols < centres[1, :, None] + length // 2)  # (N, W)
    square = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]  # (N, 1, H, W)
    return images.masked_fill(square, 0.0)


def strong_views(images: Tensor, seed: int, generator: torch.Generator, constants: tuple[Tensor, Tensor], *,
                 padding: int, flip: bool) -> Tensor:
    """(B, C, H, W) float32 strong views of uint8 `images`: AutoAugment (its choices from `seed`), crop and flip,
    normalise, Cutout of half the side (16 on CIFAR's 32 pixels, as the official code); `generator` draws the
    crops, flips and Cutout centres on its device."""
    n = images.shape[0]
    policy = autoaugment(images, seed)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=generator.device)
    flips = torch.rand(n, generator=generator, device=generator.device) < 0.5
    flips = flips if flip else torch.zeros_like(flips)
    cropped = crop_flip(policy, offsets[0].to(images.device), offsets[1].to(images.device),
                        flips.to(images.device), padding)
    return cutout(normalize(cropped, *constants, dtype=torch.float32), generator, images.shape[-1] // 2)
