"""VGG-19 with BatchNorm, as the PyTorch Animal-10N code of most papers builds it: torchvision's `vgg19_bn`.

Randomly initialised (torchvision's own init), with a `num_classes`-way head; the 3×3 stem is rebuilt for grey images.
"""

from __future__ import annotations

from torch import nn


def build_vgg19_bn(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision's VGG-19-BN: 16 conv-BN-ReLU layers in 5 max-pooled stages, 7×7 adaptive pooling, 4096-4096-K head.

    On 64×64 Animal-10N images the last stage is 2×2, which the adaptive pooling spreads to 7×7 (as torchvision does
    for any input size), so the head has the ImageNet shapes; dropout 0.5 in the head, as torchvision's default.
    """
    from torchvision.models import vgg19_bn

    model = vgg19_bn(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
    return model
