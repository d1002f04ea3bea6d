"""Small, CPU-fast models for tiny images (8×8 digits, 32×32 thumbnails): a BatchNorm CNN and an MLP."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # BatchNorm on purpose: the weight-EMA model averages BN buffers too, so the small model exercises that path.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers (32, 64, 128 channels), two 2×2 max-pools, global average pool, linear head."""

    def __init__(self, *, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_relu(in_channels, 32),  # (N, 32, H, W)
            _conv_bn_relu(32, 64),  # (N, 64, H, W)
            nn.MaxPool2d(2),  # (N, 64, H/2, W/2)
            _conv_bn_relu(64, 128),  # (N, 128, H/2, W/2)
            nn.MaxPool2d(2),  # (N, 128, H/4, W/4)
            nn.AdaptiveAvgPool2d(1),  # (N, 128, 1, 1): any image size >= 8 works
            nn.Flatten(),  # (N, 128)
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (N, num_classes)


class SmallMLP(nn.Module):
    """Flatten, one hidden ReLU layer, linear head; the input size is fixed by `image_size`."""

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),  # (N, C·H·W)
            nn.Linear(in_channels * image_size * image_size, hidden),  # (N, hidden)
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),  # (N, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
