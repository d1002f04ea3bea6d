"""Model registry: build a network by name (`wrn-28-2`, any `wrn-D-W`, `preact-resnet18`, `resnet34`, `resnet50`,
`vgg19-bn`, `cnn`, `mlp`).

Torch is imported lazily, so `from sln_cli.models import MODELS` stays cheap for the CLI.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING

from sln_cli.errors import SlnError

if TYPE_CHECKING:
    import torch

# One canonical name per architecture; near misses get a "did you mean" hint instead of aliases. Wide ResNets of
# the official layout take any depth 6n+4 and width as `wrn-D-W` (wrn-28-10: the official IDN recipe's network).
MODELS: tuple[str, ...] = ("wrn-28-2", "wrn-28-10", "preact-resnet18", "resnet34", "resnet50", "vgg19-bn", "cnn",
                           "mlp")
WRN_PATTERN = re.compile(r"wrn-(\d+)-(\d+)")

MIN_IMAGE_SIZE = 8  # every model pools globally; below 8 pixels the strided stages collapse
VGG_MIN_IMAGE_SIZE = 32  # five 2×2 max-pools: 32 pixels leave one
# The CIFAR Wide ResNets have no downsampling stem: their first stage runs at the input's full resolution, so memory
# and time grow with the square of the side (224×224 costs 49× a 32×32 image; a batch of 128 needs ~40 GiB).
WRN_MAX_IMAGE_SIZE = 64


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    weights: str | None = None,
) -> torch.nn.Module:
    """A freshly initialised `name` network mapping (N, in_channels, image_size, image_size) to (N, num_classes).

    `weights` is only meaningful for `resnet50`: a local ImageNet state-dict path or "imagenet".
    """
    wrn = _wrn_shape(name)
    if wrn is None:
        _check_name(name)
    _check_sizes(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    if weights is not None and name != "resnet50":
        raise SlnError(f"model {name!r} has no pretrained weights; remove model.weights or use model resnet50")
    if wrn is not None:
        if image_size > WRN_MAX_IMAGE_SIZE:
            raise SlnError(
                f"{name} is a CIFAR network for 32×32 inputs (no downsampling stem) but the images arrive at "
                f"{image_size}×{image_size}; for small images set --set data.resize=32 --set data.crop=32, for "
                "photos use --set model.name=resnet50")
        from sln_cli.models.wrn import WideResNet

        return WideResNet(depth=wrn[0], widen_factor=wrn[1], num_classes=num_classes, in_channels=in_channels)
    if name == "vgg19-bn":
        if image_size < VGG_MIN_IMAGE_SIZE:
            raise SlnError(f"vgg19-bn needs images of at least {VGG_MIN_IMAGE_SIZE} pixels, got {image_size}")
        from sln_cli.models.vgg import build_vgg19_bn

        return build_vgg19_bn(num_classes=num_classes, in_channels=in_channels)
    if name == "resnet34":  # CIFAR-style (3×3 stem), as SOP's official code
        from sln_cli.models.cifar_resnet import build_resnet34

        return build_resnet34(num_classes=num_classes, in_channels=in_channels)
    if name == "preact-resnet18":
        from sln_cli.models.preact import PreActResNet18

        return PreActResNet18(num_classes=num_classes, in_channels=in_channels)
    if name == "resnet50":
        from sln_cli.models.resnet import build_resnet50

        return build_resnet50(num_classes=num_classes, in_channels=in_channels, weights=weights)
    from sln_cli.models.small import SmallCNN, SmallMLP

    if name == "cnn":
        return SmallCNN(num_classes=num_classes, in_channels=in_channels)
    return SmallMLP(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def _wrn_shape(name: str) -> tuple[int, int] | None:
    """(depth, width) of a `wrn-D-W` name; None for other names. A depth that is not 6n+4 is refused."""
    match = WRN_PATTERN.fullmatch(name)
    if match is None:
        return None
    depth, width = int(match[1]), int(match[2])
    if depth < 10 or (depth - 4) % 6 or width < 1:
        raise SlnError(f"model {name!r}: a Wide ResNet needs a depth 6n+4 of at least 10 (10, 16, 22, 28, 40, ...) "
                       f"and a width of at least 1, e.g. wrn-28-10")
    return depth, width


def _check_name(name: str) -> None:
    if name in MODELS:
        return
    close = difflib.get_close_matches(name, MODELS, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SlnError(f"unknown model {name!r}; {hint}choose one of: {', '.join(MODELS)} (or wrn-D-W for any depth and "
                   "width of the official Wide ResNet)")


def _check_sizes(*, num_classes: int, in_channels: int, image_size: int) -> None:
    if num_classes < 2:
        raise SlnError(f"num_classes is {num_classes}; use a dataset with at least 2 classes")
    if in_channels < 1:
        raise SlnError(f"in_channels is {in_channels}; images need at least 1 channel (1 for grey, 3 for RGB)")
    if image_size < MIN_IMAGE_SIZE:
        size = f"{MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE}"
        raise SlnError(f"image size {image_size} is too small; use images of at least {size} pixels")
