"""Wide ResNet exactly as the official SLN code builds it (chenpf1025/SLN, `networks/wideresnet.py`).

Module names match that file, so the official `net.pth` / `ema_net.pth` state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sln_cli.errors import SlnError

# Deliberate matches with chenpf1025/SLN networks/wideresnet.py (commit 621c6c8):
# - every conv (3×3 and the 1×1 shortcut) has a bias, and the shortcut has no BatchNorm;
# - dropout_rate is 0 (the CIFAR script calls `Wide_ResNet(num_classes=...)`), so no Dropout module exists;
# - the stride of a stage sits on the *second* 3×3 conv of its first block;
# - the final BatchNorm uses momentum=0.9 (PyTorch's convention: running = 0.1·running + 0.9·batch),
#   a likely port of Keras' 0.9, kept on purpose because it changes the eval-mode statistics;
# - initialisation is PyTorch's default: the file defines `conv_init` but noise_cifar_train.py never applies it.
FINAL_BN_MOMENTUM = 0.9


class WideBasic(nn.Module):
    """Pre-activation block: BN-ReLU-conv3×3, BN-ReLU-conv3×3(stride), plus a 1×1-conv shortcut when shapes change."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        # The official code wraps both cases in nn.Sequential; an empty one has no parameters, so keys still match.
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))  # (N, planes, H, W)
        out = self.conv2(F.relu(self.bn2(out)))  # (N, planes, H/stride, W/stride)
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """WRN-depth-k: a 3×3 stem with 16 channels, three stages of 16k/32k/64k channels, BN-ReLU, pool, linear."""

    def __init__(self, *, depth: int = 28, widen_factor: int = 2, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise SlnError(f"a Wide-ResNet's depth is 6n+4 with n >= 1 (10, 16, 22, 28, ...), not {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=True)
        self.layer1 = _stage(widths[0], widths[1], blocks_per_stage, stride=1)
        self.layer2 = _stage(widths[1], widths[2], blocks_per_stage, stride=2)
        self.layer3 = _stage(widths[2], widths[3], blocks_per_stage, stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3], momentum=FINAL_BN_MOMENTUM)
        self.linear = nn.Linear(widths[3], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (the official `get_feat=True`), shape (N, 64k)."""
        out = self.conv1(x)  # (N, 16, H, W)
        out = self.layer3(self.layer2(self.layer1(out)))  # (N, 64k, H/4, W/4)
        out = F.relu(self.bn1(out))
        # Official: avg_pool2d(out, 8), i.e. a global average for 32×32 inputs; adaptive pooling equals it
        # there and also accepts other image sizes.
        return F.adaptive_avg_pool2d(out, 1).flatten(1)  # (N, 64k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))  # (N, num_classes)


def _stage(in_planes: int, planes: int, num_blocks: int, *, stride: int) -> nn.Sequential:
    # Only the first block changes width and resolution, as in the official `_wide_layer`.
    blocks = [WideBasic(in_planes, planes, stride)]
    blocks += [WideBasic(planes, planes, 1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)
