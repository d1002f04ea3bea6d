"""A re-creation of the official SLN CIFAR training loop (chenpf1025/SLN), the baseline `sln bench` measures against.

It does what `noise_cifar_train.py`, `utils.train_noise`, `utils.test`, `utils.WeightEMA` and `dataset.py` do, in
our words: per-sample PIL transforms behind a DataLoader, host-side one-hot and noise copied to the device, two
`.item()` reads per step, the per-tensor EMA loop over the state dict, and evaluation through a DataLoader.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sln_cli.bench.hardware import synchronize

# The official scripts: `{'num_workers': 4, 'pin_memory': True} if torch.cuda.is_available() else {}`.
OFFICIAL_WORKERS = 4
OFFICIAL_EMA_ALPHA = 0.999  # utils.WeightEMA default


class OfficialCifar(torch.utils.data.Dataset):
    """Like torchvision's `datasets.CIFAR10`: H×W×C uint8 arrays, one PIL image and one transform call per item."""

    def __init__(self, images_uint8: Tensor, labels: np.ndarray, transform: Any) -> None:
        self.data = images_uint8.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C), the release's layout
        self.targets = [int(label) for label in labels]  # a list of ints, as torchvision keeps them
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        image = Image.fromarray(self.data[index])
        return self.transform(image), self.targets[index]


def official_transforms(mean: tuple[float, ...], std: tuple[float, ...], *, train: bool) -> Any:
    """dataset.py: RandomCrop(32, padding=4) + RandomHorizontalFlip for training, then ToTensor + Normalize."""
    from torchvision import transforms

    to_tensor = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if not train:
        return transforms.Compose(to_tensor)
    return transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *to_tensor])


def official_loader(dataset: OfficialCifar, device: torch.device, *, batch_size: int, shuffle: bool,
                    num_samples: int | None = None) -> torch.utils.data.DataLoader:
    """The official DataLoader: 4 workers and pinned memory when a GPU is present, the defaults otherwise.

    `num_samples` (training only) chains reshuffled passes so one iterator, and one start of its workers, serves
    the whole benchmark: a few-step measurement must not pay the once-per-epoch worker start-up each time.
    """
    extra: dict[str, Any] = {"num_workers": OFFICIAL_WORKERS, "pin_memory": True} if device.type == "cuda" else {}
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=num_samples) if shuffle else None
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, **extra)


def official_targets(labels: Tensor, num_classes: int, sigma: float, device: torch.device) -> Tensor:
    """train_noise: one-hot built on the host, copied over, then `target += sigma * randn(...).to(device)`."""
    target = torch.zeros(labels.size(0), num_classes).scatter_(1, labels.view(-1, 1), 1)  # (B, K) on the host
    target = target.to(device)
    if sigma > 0:
        target += sigma * torch.randn(target.size()).to(device)  # drawn on the host, then copied
    return target


class OfficialEMA:
    """utils.WeightEMA: a Python loop over the state dict, `ema.mul_(alpha); ema.add_(param * (1 - alpha))`.

    The official loop skips `torch.cuda.LongTensor` entries (its `ema_param = param` rebinds a local name, so the
    EMA's `num_batches_tracked` never changes); we skip every integer entry, which is the same on a GPU and avoids
    the error the official line raises on a CPU long tensor.
    """

    def __init__(self, model: nn.Module, ema_model: nn.Module, alpha: float = OFFICIAL_EMA_ALPHA) -> None:
        self.alpha = alpha
        self.params = list(model.state_dict().values())
        self.ema_params = list(ema_model.state_dict().values())
        for param, ema_param in zip(self.params, self.ema_params, strict=True):  # the official init copies ema -> model
            param.data.copy_(ema_param.data)

    def step(self) -> None:
        # No no_grad() needed, nor in the official code: state_dict() tensors are already detached.
        one_minus_alpha = 1.0 - self.alpha
        for param, ema_param in zip(self.params, self.ema_params, strict=True):
            if not param.is_floating_point():
                continue
            ema_param.mul_(self.alpha)
            ema_param.add_(param * one_minus_alpha)


class ReferenceRun:
    """The official training loop, a given number of steps at a time, and its per-epoch evaluation."""

    def __init__(self, model: nn.Module, train: torch.utils.data.DataLoader, test: torch.utils.data.DataLoader, *,
                 num_classes: int, sigma: float, lr: float, device: torch.device) -> None:
        self.device, self.num_classes, self.sigma = device, num_classes, sigma
        self.model = model.to(device)
        self.ema_model = copy.deepcopy(self.model)
        for param in self.ema_model.parameters():
            param.detach_()
        # noise_cifar_train.py: optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.ema = OfficialEMA(self.model, self.ema_model)
        self.test_loader = test
        self._batches: Iterator[tuple[Tensor, Tensor]] = iter(train)
        self.train_loss, self.correct, self.seen = 0.0, 0, 0

    def train_steps(self, steps: int) -> int:
        """`steps` iterations of utils.train_noise's loop body; returns the number of images trained on."""
        _official_cudnn(self.device)
        self.model.train()
        images_seen = 0
        for _ in range(steps):
            data, labels = next(self._batches)
            target = official_targets(labels, self.num_classes, self.sigma, self.device)
            data = data.to(self.device)
            output = self.model(data)
            loss = -torch.mean(torch.sum(F.log_softmax(output, dim=1) * target, dim=1))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.ema.step()
            self.train_loss += data.size(0) * loss.item()  # a host sync every step, as the official loop
            pred = output.argmax(dim=1, keepdim=True)
            hard = target.argmax(dim=1, keepdim=True)
            self.correct += pred.eq(hard.view_as(pred)).sum().item()  # and a second one
            images_seen += data.size(0)
        synchronize(self.device)
        self.seen += images_seen
        return images_seen

    def ema_steps(self, count: int) -> int:
        """`count` calls of the official EMA step alone."""
        for _ in range(count):
            self.ema.step()
        synchronize(self.device)
        return count

    def evaluate(self) -> int:
        """noise_cifar_train.py's end of epoch: utils.test of the EMA network, then of the raw one."""
        _official_cudnn(self.device)
        count = 0
        for model in (self.ema_model, self.model):
            count += _official_test(model, self.test_loader, self.device)
        synchronize(self.device)
        return count


@torch.no_grad()
def _official_test(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> int:
    model.eval()
    test_loss, correct, count = 0.0, 0, 0
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        output = model(data)
        test_loss += F.cross_entropy(output, target, reduction="sum").item()
        pred = output.argmax(dim=1, keepdim=True)
        correct += pred.eq(target.view_as(pred)).sum().item()
        count += data.size(0)
    return count


def _official_cudnn(device: torch.device) -> None:
    # noise_cifar_train.py sets cudnn.benchmark = True; `sln train` runs deterministic kernels instead.
    if device.type == "cuda":
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
