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


# --------------------------------------------------------------------------------------------------
# A whole training pass, label correction and evaluation on fake CUDA
# --------------------------------------------------------------------------------------------------

TINY = {"data": {"dataset": "digits", "train_limit": 40, "test_limit": 20, "padding": 1},
        "noise": {"mode": "sym", "rate": 0.4}, "model": {"name": "cnn"}, "optim": {"batch_size": 8},
        "sln": {"sigma": 0.5, "correction": 1}, "run": {"device": "cuda", "eval_batch_size": 16}}


class StepMarks:
    """A stand-in for TrainProgress that notes where each step's events end (and never reads the live loss)."""

    def __init__(self, traffic) -> None:
        self.traffic, self.marks = traffic, []

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.marks.append(len(self.traffic.events))

    def step(self, images: int, read_loss) -> None:
        self.marks.append(len(self.traffic.events))

    def per_step(self) -> list[dict[str, int]]:
        return [self.traffic.count_between(a, b) for a, b in zip(self.marks, self.marks[1:], strict=False)]


def _fake_state(monkeypatch: pytest.MonkeyPatch, sln: dict | None = None, **run: object):
    """Config, splits and state of a tiny digits run built on fake CUDA (inside the fake_cuda block)."""
    from sln_cli import config as config_lib
    from sln_cli.labels.trainset import build_trainset
    from sln_cli.training.state import initial_state, place_splits

    tree = {**TINY, "sln": {**TINY["sln"], **(sln or {})}, "run": {**TINY["run"], **run}}
    config = config_lib.resolve(tree)
    trainset = build_trainset(config.data, config.noise)  # numpy: outside the device

    def build():
        return place_splits(trainset, config, CUDA), initial_state(trainset, config, CUDA)

    return config, trainset, build


@pytest.mark.parametrize(("precision", "sln", "run"), [
    ("fp32", {}, {"channels_last": False}),
    ("bf16", {"grad_noise_sigma": 0.01}, {"record_probs": True}),
    ("fp16", {"logit_grad_noise_sigma": 0.5}, {}),  # GradScaler + fused SGD: the scale never leaves the device
])
def test_a_training_step_copies_nothing_and_never_waits_for_the_device(
        monkeypatch: pytest.MonkeyPatch, precision: str, sln: dict, run: dict) -> None:
    from sln_cli.training import epoch

    config, _, build = _fake_state(monkeypatch, sln, precision=precision, **run)
    with fake_cuda(monkeypatch) as traffic:
        splits, state = build()
        assert state.scaler.is_enabled() == (precision == "fp16")
        assert state.optimizer.defaults["fused"] is True
        marks = StepMarks(traffic)
        row = epoch.train_pass(state, splits.train, config, config.sln.sigma, 1, CUDA, marks)
    steps = marks.per_step()
    assert len(steps) == 5  # 40 images, batches of 8
    assert steps == [{}] * 5, steps  # before the step's refactor: a list-indexed sum, 2 copies per step
    assert set(traffic.count(marks.marks[-1])) == {"sync"}  # the end of the pass reads its sums back, once
    assert set(row) >= {"train_loss", "train_acc_noisy", "memorized"}


def test_label_correction_and_evaluation_copy_nothing_and_read_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-epoch passes: no copy at all, and the host reads only the final sums (evaluation) or the corrected
    accuracy (label correction), once, after the last batch."""
    from sln_cli.training import epoch

    config, _, build = _fake_state(monkeypatch)
    with fake_cuda(monkeypatch) as traffic:
        splits, state = build()
        start = len(traffic.events)
        generator = torch.Generator(device="cuda").manual_seed(3)
        row = epoch.correct_labels(state, splits.train, config, generator)
        assert traffic.count(start) == {"sync": 1} and row["corrected_acc"] == 1.0  # the stand-in read
        assert state.targets.device.type == "cuda"
        start = len(traffic.events)
        state.ema.update()
        assert traffic.count(start) == {}
        results = epoch.evaluate([state.model, state.ema.module], splits.test, splits.test_labels, batch_size=8,
                                 forward=lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        assert len(results) == 2
        assert traffic.count(start) == {"sync": 4}  # sums.tolist(): (loss, correct) of both networks


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_on_a_real_gpu_a_training_step_copies_nothing_either(precision: str) -> None:
    """The same recorder on real CUDA tensors (host reads give the real values): what the fake run promises."""
    from sln_cli import config as config_lib
    from sln_cli.labels.trainset import build_trainset
    from sln_cli.training import epoch
    from sln_cli.training.state import initial_state, place_splits
    from tests.fakecuda import DeviceTraffic

    config = config_lib.resolve({**TINY, "run": {**TINY["run"], "precision": precision}})
    trainset = build_trainset(config.data, config.noise)
    device = torch.device("cuda", torch.cuda.current_device())
    splits, state = place_splits(trainset, config, device), initial_state(trainset, config, device)
    traffic = DeviceTraffic(stand_ins=False)
    marks = StepMarks(traffic)
    with traffic:
        row = epoch.train_pass(state, splits.train, config, config.sln.sigma, 1, device, marks)
    assert marks.per_step() == [{}] * 5
    assert row["train_samples"] == 40


@pytest.mark.parametrize("method", ["sop"])  # SOP+: torchvision's AutoAugment draws on the host through
def test_a_sop_step_copies_nothing_and_never_waits_for_the_device(  # torch.randint + int(), which fake mode
        monkeypatch: pytest.MonkeyPatch, method: str) -> None:  # cannot answer: it needs a real GPU
    """SOP's u, v and their optimiser live on the device: a step adds no copy and no wait."""
    from sln_cli import config as config_lib
    from sln_cli.labels.trainset import build_trainset
    from sln_cli.training import epoch
    from sln_cli.training.state import initial_state, place_splits

    tree = {**TINY, "sln": {"sigma": 0.0}, "method": {"name": method}}
    config = config_lib.resolve(tree)
    trainset = build_trainset(config.data, config.noise)
    with fake_cuda(monkeypatch) as traffic:
        splits, state = place_splits(trainset, config, CUDA), initial_state(trainset, config, CUDA)
        marks = StepMarks(traffic)
        epoch.train_pass(state, splits.train, config, config.sln.sigma, 1, CUDA, marks)
    assert marks.per_step() == [{}] * 5, marks.per_step()


@pytest.mark.parametrize("epoch", [1, 2])  # the warm-up, then a MixMatch epoch
def test_dividemix_steps_copy_nothing_and_never_wait_for_the_device(monkeypatch: pytest.MonkeyPatch,
                                                                    epoch: int) -> None:
    """DivideMix's steps (warm-up and MixMatch) stay on the device; the division's copies come before them.
    The GMM needs real losses, so the division itself is stood in for (it is tested on the CPU)."""
    import numpy as np

    from sln_cli import config as config_lib
    from sln_cli.labels.trainset import build_trainset
    from sln_cli.methods.dividemix import DivideMix
    from sln_cli.training import epoch as epoch_lib
    from sln_cli.training.state import initial_state, place_splits

    method = {"name": "dividemix", "warmup_epochs": 1, "p_threshold": 0.5, "lambda_u": 25.0, "mixmatch_alpha": 4.0,
              "sharpen_t": 0.5, "rampup_epochs": 16, "gmm_window": 1, "warmup_penalty": True}
    config = config_lib.resolve({**TINY, "sln": {"sigma": 0.5}, "method": method})
    trainset = build_trainset(config.data, config.noise)
    probability = np.tile(np.linspace(0.0, 1.0, 40), (2, 1))  # 20 labelled, 20 unlabelled for each network
    monkeypatch.setattr(DivideMix, "divide", lambda self, run, nets: (probability, 0.0))
    with fake_cuda(monkeypatch) as traffic:
        splits, state = place_splits(trainset, config, CUDA), initial_state(trainset, config, CUDA)
        marks = StepMarks(traffic)
        epoch_lib.train_pass(state, splits.train, config, config.sln.sigma, epoch, CUDA, marks)
    steps = marks.per_step()
    assert len(steps) == 6  # warm-up: 2 networks × 40/16 batches; MixMatch: 2 networks × 20/8 labelled batches
    assert steps == [{}] * len(steps), steps
