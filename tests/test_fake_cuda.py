"""The device paths on fake CUDA tensors (tests/fakecuda.py): no host-device copy or sync inside a training step.

This is the permanent guard of the "one host sync per epoch" design: a per-step `torch.as_tensor(host_data,
device=...)`, `.item()` or list index anywhere in the step makes these tests fail.
"""

from __future__ import annotations

import pytest
import torch

from tests.fakecuda import CUDA, fake_cuda


def test_the_harness_sees_a_host_to_device_copy_and_a_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_cuda(monkeypatch) as traffic:
        x = torch.zeros(4, device=CUDA)
        assert traffic.count() == {}
        x = x + torch.as_tensor([1.0, 2.0, 3.0, 4.0], device=CUDA)  # host data: a copy
        x.sum().item()  # a sync
        x[[0, 2]]  # a list index is a host tensor copied over
        torch.randn(3, generator=torch.Generator(), device=CUDA)  # a CPU generator for a CUDA draw
        x * torch.tensor(2.0)  # a CPU 0-dim tensor in a CUDA op
    assert traffic.count() == {"h2d": 2, "sync": 1, "generator": 1, "mixed": 1}


def test_augmenting_and_normalising_a_resident_batch_moves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from sln_cli.data.batches import Augmentation, DeviceImages

    with fake_cuda(monkeypatch) as traffic:
        images = DeviceImages(torch.zeros(10, 3, 8, 8, dtype=torch.uint8, device=CUDA), (0.5,) * 3, (0.25,) * 3,
                              channels_last=True, cache_plain=True)
        generator = torch.Generator(device="cuda").manual_seed(0)
        order = torch.randperm(10, generator=generator, device=CUDA)
        start = len(traffic.events)
        for augmentation in (Augmentation(), None):
            for batch, index in images.batches(order, 4, augmentation=augmentation, generator=generator):
                assert batch.device.type == index.device.type == "cuda" and batch.dtype == torch.float32
    assert traffic.count(start) == {}  # before the cached constants: 2 copies (mean, std) per batch
