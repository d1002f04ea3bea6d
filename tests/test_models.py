"""Model registry, the official-SLN WRN-28-2, ResNet-50 weight loading (never the network), and the small models."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from sklearn.datasets import load_digits
from torch import nn

from sln_cli.errors import SlnError
from sln_cli.models import MODELS, build_model
from sln_cli.models.resnet import IMAGENET_FILE

# --- registry -----------------------------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert set(MODELS) == {"wrn-28-2", "wrn-28-10", "preact-resnet18", "resnet34", "resnet50", "vgg19-bn", "cnn", "mlp"}


@pytest.mark.parametrize(("typo", "hint"), [("wrn28-2", "wrn-28-2"), ("resnet-50", "resnet50"), ("cnnn", "cnn")])
def test_unknown_model_hints_the_near_name(typo: str, hint: str) -> None:
    with pytest.raises(SlnError, match=f"did you mean '{hint}'"):
        build_model(typo, num_classes=10, in_channels=3, image_size=32)


def test_unknown_model_without_near_name_lists_choices() -> None:
    choices = "wrn-28-2, wrn-28-10, preact-resnet18, resnet34, resnet50, vgg19-bn, cnn, mlp"
    with pytest.raises(SlnError, match=f"choose one of: {choices}") as info:
        build_model("transformer", num_classes=10, in_channels=3, image_size=32)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "cnn", "weights": "imagenet"}, "no pretrained weights"),
        ({"name": "cnn", "image_size": 4}, "too small"),
        ({"name": "mlp", "num_classes": 1}, "at least 2 classes"),
        ({"name": "wrn-27-2"}, "depth 6n\\+4"),
        ({"name": "wrn-4-2"}, "depth 6n\\+4"),
        ({"name": "wrn-28-0"}, "width of at least 1"),
        ({"name": "vgg19-bn", "image_size": 16}, "at least 32 pixels"),
    ],
)
def test_bad_arguments_raise_sln_error(kwargs: dict, message: str) -> None:
    arguments = {"num_classes": 10, "in_channels": 3, "image_size": 32} | kwargs
    with pytest.raises(SlnError, match=message):
        build_model(**arguments)


@pytest.mark.parametrize(
    ("name", "in_channels", "image_size"),
    [
        ("wrn-28-2", 3, 32),
        ("wrn-28-2", 1, 8),
        ("cnn", 1, 8),
        ("cnn", 3, 32),
        ("cnn", 3, 13),
        ("mlp", 1, 8),
        ("resnet50", 3, 32),
        ("resnet50", 1, 32),
        ("resnet34", 3, 32),
        ("resnet34", 1, 8),
        ("preact-resnet18", 3, 32),
        ("preact-resnet18", 1, 8),
    ],
)
def test_output_shape(name: str, in_channels: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=in_channels, image_size=image_size)
    x = torch.randn(2, in_channels, image_size, image_size)  # (N, C, H, W)
    assert model(x).shape == (2, 7)


def test_resnet34_has_the_official_cifar_layout() -> None:
    # shengliu66/SOP model/ResNet_Zoo.py: 3x3 stem (64), BasicBlocks [3, 4, 6, 3], 1x1-conv+BN shortcuts, linear
    def conv(cin, cout, k):
        return cin * cout * k * k

    def bn(c):
        return 2 * c

    count, cin = conv(3, 64, 3) + bn(64), 64
    for planes, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True):
        for _ in range(blocks):
            count += conv(cin, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            if cin != planes:
                count += conv(cin, planes, 1) + bn(planes)
            cin = planes
    count += 512 * 10 + 10
    model = build_model("resnet34", num_classes=10, in_channels=3, image_size=32)
    assert sum(p.numel() for p in model.parameters()) == count


# --- wrn-28-2 -----------------------------------------------------------------------------------------------------


def _official_wrn_parameter_count(in_channels: int, num_classes: int, depth: int = 28, k: int = 2) -> int:
    # From the layer shapes in chenpf1025/SLN networks/wideresnet.py: every conv carries a bias, each BatchNorm has
    # weight and bias, the shortcut is a 1×1 conv with bias where the width changes.
    def conv(cin: int, cout: int, kernel: int) -> int:
        return cin * cout * kernel * kernel + cout

    total = conv(in_channels, 16, 3)
    in_planes = 16
    for planes in (16 * k, 32 * k, 64 * k):
        for _ in range((depth - 4) // 6):
            total += 2 * in_planes + conv(in_planes, planes, 3) + 2 * planes + conv(planes, planes, 3)
            total += conv(in_planes, planes, 1) if in_planes != planes else 0
            in_planes = planes
    return total + 2 * in_planes + in_planes * num_classes + num_classes


@pytest.mark.parametrize(("in_channels", "num_classes"), [(3, 10), (3, 100), (1, 10)])
def test_wrn_parameter_count_matches_official(in_channels: int, num_classes: int) -> None:
    model = build_model("wrn-28-2", num_classes=num_classes, in_channels=in_channels, image_size=32)
    assert sum(p.numel() for p in model.parameters()) == _official_wrn_parameter_count(in_channels, num_classes)


@pytest.mark.parametrize(("name", "num_classes", "expected"), [
    ("wrn-28-10", 10, 36_489_290),  # the official IDN recipe's network (chenpf1025/IDN), as the issue states
    ("wrn-28-10", 100, 36_546_980),
    ("wrn-16-4", 10, None),
    ("wrn-40-2", 100, None),
])
def test_any_wrn_depth_and_width_has_the_official_layout(name: str, num_classes: int, expected: int | None) -> None:
    depth, width = map(int, name.split("-")[1:])
    with torch.device("meta"):  # counting needs no memory
        model = build_model(name, num_classes=num_classes, in_channels=3, image_size=32)
        assert model(torch.empty(2, 3, 32, 32)).shape == (2, num_classes)
    count = sum(p.numel() for p in model.parameters())
    assert count == _official_wrn_parameter_count(3, num_classes, depth=depth, k=width)
    assert expected is None or count == expected


@pytest.mark.parametrize(("in_channels", "image_size"), [(3, 64), (1, 32)])
def test_vgg19_bn_is_torchvisions(in_channels: int, image_size: int) -> None:
    with torch.device("meta"):
        model = build_model("vgg19-bn", num_classes=10, in_channels=in_channels, image_size=image_size)
        assert model(torch.empty(2, in_channels, image_size, image_size)).shape == (2, 10)
        reference = torchvision.models.vgg19_bn(weights=None, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16 and sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 16
    expected = sum(p.numel() for p in reference.parameters()) + (in_channels - 3) * 64 * 9
    assert sum(p.numel() for p in model.parameters()) == expected


def test_wrn_matches_official_details() -> None:
    torch.manual_seed(0)
    model = build_model("wrn-28-2", num_classes=10, in_channels=3, image_size=32)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(convs) == 1 + 3 * 4 * 2 + 3  # stem, 12 blocks × 2 convs, 3 shortcuts
    assert all(conv.bias is not None for conv in convs.values())
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    strided = sorted(name for name, conv in convs.items() if conv.stride != (1, 1))
    assert strided == ["layer2.0.conv2", "layer2.0.shortcut.0", "layer3.0.conv2", "layer3.0.shortcut.0"]
    momenta = {name: m.momentum for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta.pop("bn1") == 0.9 and set(momenta.values()) == {0.1}
    # State-dict names as in the official file, so its net.pth / ema_net.pth load unchanged.
    keys = set(model.state_dict())
    official = {"conv1.bias", "layer1.0.shortcut.0.weight", "layer3.3.conv2.bias", "bn1.running_var", "linear.weight"}
    assert official <= keys
    assert not any(key.startswith("layer1.1.shortcut") for key in keys)


def test_wrn_uses_pytorch_default_init_not_conv_init() -> None:
    # The official file defines conv_init (Xavier, zero bias) but never applies it: PyTorch's default init draws
    # weights and biases uniformly within ±1/sqrt(fan_in).
    torch.manual_seed(0)
    model = build_model("wrn-28-2", num_classes=10, in_channels=3, image_size=32)
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        bound = 1 / np.sqrt(conv.weight[0].numel())
        assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
        assert conv.bias.abs().max() > 0


# --- resnet50 -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_like_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    state = torchvision.models.resnet50(weights=None).state_dict()  # 1000-class head, like the ImageNet file
    path = tmp_path_factory.mktemp("weights") / IMAGENET_FILE
    torch.save(state, path)
    return path, state


def test_resnet50_loads_local_state_dict(imagenet_like_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = imagenet_like_file
    model = build_model("resnet50", num_classes=14, in_channels=3, image_size=224, weights=str(path))
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])
    assert torch.equal(loaded["layer4.2.bn3.running_mean"], state["layer4.2.bn3.running_mean"])
    assert loaded["fc.weight"].shape == (14, 2048)


def test_resnet50_loads_file_without_num_batches_tracked(
    tmp_path: Path, imagenet_like_file: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    # Older torchvision files (such as resnet50-19c8e357.pth, used by the official code) lack that buffer.
    _, state = imagenet_like_file
    path = tmp_path / "old.pth"
    torch.save({key: value for key, value in state.items() if "num_batches_tracked" not in key}, path)
    model = build_model("resnet50", num_classes=14, in_channels=3, image_size=224, weights=str(path))
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


@pytest.mark.parametrize("content", ["garbage", "resnet18", "tensor", "missing"])
def test_resnet50_rejects_wrong_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "weights.pth"
    if content == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif content == "resnet18":
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    with pytest.raises(SlnError, match=str(path)):
        build_model("resnet50", num_classes=14, in_channels=3, image_size=224, weights=str(path))


def test_resnet50_imagenet_weights_refuse_grey_images() -> None:
    with pytest.raises(SlnError, match="3-channel"):
        build_model("resnet50", num_classes=14, in_channels=1, image_size=224, weights="imagenet")


def test_resnet50_imagenet_download_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(url: str, **kwargs: object) -> None:
        calls.append((url, kwargs))
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(SlnError) as info:
        build_model("resnet50", num_classes=14, in_channels=3, image_size=224, weights="imagenet")
    expected = (
        "cannot download ImageNet weights (no network?): download resnet50-0676ba61.pth elsewhere "
        "and pass --set model.weights=PATH"
    )
    assert str(info.value) == expected
    ((url, kwargs),) = calls
    assert url.endswith("/resnet50-0676ba61.pth") and kwargs["weights_only"] is True and kwargs["check_hash"] is True


def test_resnet50_imagenet_download_is_loaded(
    monkeypatch: pytest.MonkeyPatch, imagenet_like_file: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    _, state = imagenet_like_file
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kwargs: state)
    model = build_model("resnet50", num_classes=14, in_channels=3, image_size=224, weights="imagenet")
    assert torch.equal(model.state_dict()["layer2.1.conv2.weight"], state["layer2.1.conv2.weight"])


# --- cnn and mlp --------------------------------------------------------------------------------------------------


def test_cnn_has_batchnorm_for_the_ema_to_average() -> None:
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(("name", "epochs"), [("cnn", 6), ("mlp", 15)])
def test_small_models_learn_digits_quickly(name: str, epochs: int) -> None:
    # sklearn's bundled 8×8 digits (no download): 1797 images, pixels 0..16, 10 classes (chance 10%).
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1, image_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        model.train()
        for batch in train[torch.randperm(len(train))].split(64):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
    assert accuracy > 0.85, f"{name} reached only {accuracy:.2%} on held-out digits"


@pytest.mark.parametrize("depth", [4, 27, 30])
def test_a_wide_resnet_depth_that_is_not_6n_plus_4_is_a_user_error(depth: int) -> None:
    from sln_cli.models.wrn import WideResNet

    with pytest.raises(SlnError, match="6n\\+4"):
        WideResNet(depth=depth)


# --- preact-resnet18 (DivideMix) ------------------------------------------------------------------------------------


def _official_preact18_parameter_count(in_channels: int, num_classes: int) -> int:
    # From LiJunnan1992/DivideMix PreResNet.py: bias-free 3×3 convs, BN (weight, bias) before each conv of a
    # PreActBlock, a stem conv + BN, a bias-free 1×1 shortcut conv where the shape changes, a linear head.
    total = in_channels * 64 * 9 + 2 * 64
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block_stride in (stride, 1):
            total += 2 * in_planes + in_planes * planes * 9 + 2 * planes + planes * planes * 9
            total += in_planes * planes if block_stride != 1 or in_planes != planes else 0
            in_planes = planes
    return total + 512 * num_classes + num_classes


def test_preact_resnet18_has_the_official_layers() -> None:
    model = build_model("preact-resnet18", num_classes=10, in_channels=3, image_size=32)
    assert sum(p.numel() for p in model.parameters()) == _official_preact18_parameter_count(3, 10)
    keys = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.bn1.weight", "layer2.0.shortcut.0.weight",
            "layer4.1.conv2.weight", "linear.bias"} <= keys
    assert not any(".shortcut.1" in key for key in keys)  # no BatchNorm in the pre-activation shortcut
