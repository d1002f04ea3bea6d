"""ResNet-34 for 32×32 images (`resnet34`), the network SOP was published with on CIFAR-10/100.

The layout of shengliu66/SOP `model/ResNet_Zoo.py` (kuangliu's CIFAR ResNet; commit 4d991ce): a 3×3 stem of 64
channels without max-pool, BasicBlocks [3, 4, 6, 3] of 64-512 channels, 1×1-conv shortcuts, global average
pooling (the official `avg_pool2d(out, 4)` on CIFAR's final 4×4 map; adaptive here so any size ≥ 8 works), linear.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            for stride in [1 if i == 0 else 2] + [1] * (count - 1):
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))  # (N, 512, H/8, W/8)
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))  # (N, K)


def build_resnet34(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    return CifarResNet((3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)
