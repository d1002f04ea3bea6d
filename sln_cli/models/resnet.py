"""ResNet-50 with a fresh `num_classes`-way head, optionally started from ImageNet weights.

The official SLN Clothing1M script does the same: `resnet50(pretrained=True)`, then `net.fc = Linear(2048, 14)`.
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sln_cli.errors import SlnError

IMAGENET_FILE = "resnet50-0676ba61.pth"  # torchvision ResNet50_Weights.IMAGENET1K_V1
NO_NETWORK_MESSAGE = (
    f"cannot download ImageNet weights (no network?): download {IMAGENET_FILE} elsewhere "
    "and pass --set model.weights=PATH"
)


def build_resnet50(*, num_classes: int, in_channels: int = 3, weights: str | None = None) -> nn.Module:
    """torchvision's ResNet-50; `weights` is None (random init), "imagenet" (download) or a state-dict path."""
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    if in_channels != 3:
        if weights is not None:
            raise SlnError(f"ImageNet weights expect 3-channel images, not {in_channels}; drop model.weights")
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # (N, 2048) -> (N, num_classes), PyTorch default init
    if weights == "imagenet":
        _load_backbone(model, _download_imagenet_state_dict(), source="the ImageNet download")
    elif weights is not None:
        _load_backbone(model, _read_state_dict(Path(weights)), source=str(weights))
    return model


def _download_imagenet_state_dict() -> Mapping[str, torch.Tensor]:
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V1.url
    try:
        # Cached under $TORCH_HOME/hub/checkpoints after the first success, like torchvision's own loader.
        return torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, weights_only=True)
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise SlnError(NO_NETWORK_MESSAGE) from exc


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise SlnError(f"weights file {path} does not exist; pass an ImageNet ResNet-50 state dict or 'imagenet'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file can fail anywhere inside the (weights-only, so safe) unpickler
        from sln_cli.rundir.torchfile import reason

        raise SlnError(f"cannot read {path} as a PyTorch state dict ({reason(exc)}); pass a ResNet-50 .pth "
                       "file") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SlnError(f"{path} is not a state dict (a mapping of names to tensors); pass a ResNet-50 .pth file")
    return state


def _load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    # The ImageNet head (`fc.*`, 1000 classes) is dropped; every other tensor must match by name and shape.
    backbone = {key: value for key, value in state.items() if not key.startswith("fc.")}
    expected = {key: value.shape for key, value in model.state_dict().items() if not key.startswith("fc.")}
    problems = _mismatches(expected, {key: value.shape for key, value in backbone.items()})
    if problems:
        raise SlnError(f"{source} is not a ResNet-50 state dict ({problems}); pass torchvision's {IMAGENET_FILE}")
    model.load_state_dict(backbone, strict=False)  # strict=False only because fc.* was removed above


def _mismatches(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Size]) -> str:
    # Older torchvision files (e.g. resnet50-19c8e357.pth, the one the official code used) predate the
    # BatchNorm `num_batches_tracked` buffer; BatchNorm fills it in when loading, so its absence is fine.
    missing = [key for key in expected if key not in found and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in found if key not in expected]
    wrong_shape = [key for key in found if key in expected and found[key] != expected[key]]
    groups = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
    return "; ".join(f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}" for label, keys in groups if keys)
