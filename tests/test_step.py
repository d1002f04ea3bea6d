"""The paper's mechanism inside the real training loop
(`sln_cli.training.train.run_epoch` -> `sln_cli.training.step.sgd_step`).

Each test observes what the loop really does, through an injected loss, optimizer hooks or a recording
wrapper around the training split, never by reading the config back: the label noise the loss receives,
the EMA of the network's trajectory, label correction from the EMA, and the two gradient-noise ablations.
Tiny: 96 digits, the small CNN (it has BatchNorm buffers), one thread, a few steps.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from sln_cli import presets
from sln_cli.config import Config, resolve
from sln_cli.labels.trainset import build_trainset
from sln_cli.methods.base import FunctionLoss, Method
from sln_cli.methods.sln import correct_targets, soft_cross_entropy
from sln_cli.render.progress import TrainProgress
from sln_cli.training.distributed import SINGLE
from sln_cli.training.state import Splits, State, initial_state, place_splits
from sln_cli.training.step import EpochMetrics
from sln_cli.training.train import run_epoch

CPU = torch.device("cpu")
TINY = ["data.train_limit=96", "data.test_limit=16", "optim.batch_size=32", "model.name=cnn", "run.device=cpu"]


@dataclass
class Loop:
    config: Config
    state: State
    splits: Splits


def _loop(*overrides: str) -> Loop:
    config = resolve(presets.load("quickstart"), [*TINY, *overrides])
    trainset = build_trainset(config.data, config.noise)
    return Loop(config, initial_state(trainset, config, CPU), place_splits(trainset, config, CPU))


def _epochs(loop: Loop, epochs: range, loss=None) -> list[dict]:
    """`run_epoch` over `epochs`; `loss` (a function or a Method) replaces the run's method, as a plugin's would."""
    if loss is not None:
        loop.state.method = loss if isinstance(loss, Method) else FunctionLoss(loss)
    progress = TrainProgress(epochs.stop, quiet=True)
    return [run_epoch(loop.state, loop.splits, loop.config, epoch, CPU, progress) for epoch in epochs]


@dataclass
class RecordingLoss:
    """SLN's loss, remembering the targets and indices it was given and the gradient reaching the logits."""

    targets: list[Tensor] = field(default_factory=list)
    indices: list[Tensor] = field(default_factory=list)
    logit_grads: list[Tensor] = field(default_factory=list)

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        self.targets.append(targets.detach().clone())
        self.indices.append(index.clone())
        # registered after the loop's own hooks on the logits: sees the gradient they hand on
        logits.register_hook(lambda grad: self.logit_grads.append(grad.detach().clone()))
        return soft_cross_entropy(logits, targets)


def _one_hot(loop: Loop, index: Tensor) -> Tensor:
    return F.one_hot(loop.state.noisy[index], loop.state.targets.shape[1]).float()


# --------------------------------------------------------------------------------------------------
# Label noise (SLN)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_the_loss_receives_the_labels_plus_fresh_gaussian_noise_of_std_sigma(sigma):
    loop, loss = _loop(f"sln.sigma={sigma}"), RecordingLoss()
    _epochs(loop, range(1, 3), loss)
    noise = torch.cat([t - _one_hot(loop, i) for t, i in zip(loss.targets, loss.indices, strict=True)])
    n = noise.numel()  # 2 epochs x 96 samples x 10 classes
    assert n == 1920
    # std of a sample std is ~ sigma / sqrt(2n) (1.6%); 6% is ~4 standard errors
    assert noise.std().item() == pytest.approx(sigma, rel=0.06)
    assert abs(noise.mean().item()) < 4 * sigma / n**0.5
    # fresh every step: a sample's noise in epoch 2 is not its noise of epoch 1
    first, second = (noise[:96][torch.cat(loss.indices[:3]).argsort()],
                     noise[96:][torch.cat(loss.indices[3:]).argsort()])
    assert torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1].abs() < 0.1


def test_sigma_zero_gives_the_loss_the_one_hot_labels_exactly():
    loop, loss = _loop("sln.sigma=0"), RecordingLoss()
    _epochs(loop, range(1, 3), loss)
    for targets, index in zip(loss.targets, loss.indices, strict=True):
        assert torch.equal(targets, _one_hot(loop, index))


def test_once_label_correction_starts_the_loss_receives_the_corrected_targets_without_noise():
    loop, loss = _loop("sln.sigma=0.5", "sln.correction=1", "sln.ema_decay=0.5"), RecordingLoss()
    _epochs(loop, range(1, 3), loss)
    epoch_two = list(zip(loss.targets[3:], loss.indices[3:], strict=True))
    assert len(epoch_two) == 3
    for targets, index in epoch_two:
        assert torch.equal(targets, loop.state.targets[index])
    corrected = loop.state.targets
    assert not torch.equal(corrected, _one_hot(loop, torch.arange(96)))  # LC did change some targets


# --------------------------------------------------------------------------------------------------
# The weight EMA (SLN-MO)
# --------------------------------------------------------------------------------------------------


def test_the_ema_is_the_moving_average_of_the_networks_trajectory_buffers_included():
    decay = 0.7  # a short memory: every step leaves a visible mark on the average
    loop = _loop(f"sln.ema_decay={decay}")
    model = loop.state.model
    expected = {k: v.clone() for k, v in model.state_dict().items()}  # the EMA starts as the network
    assert torch.equal(loop.state.ema.state_dict()["head.weight"], expected["head.weight"])

    def follow(optimizer, args, kwargs):  # after each optimizer step: the network's new weights and buffers
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                expected[key] = decay * expected[key] + (1 - decay) * value
            else:
                expected[key] = value.clone()  # num_batches_tracked is copied

    loop.state.optimizer.register_step_post_hook(follow)
    _epochs(loop, range(1, 3))  # 6 steps
    ema = loop.state.ema.state_dict()
    assert any("running_mean" in k for k in ema) and any("running_var" in k for k in ema)
    for key, value in ema.items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.allclose(ema["head.weight"], model.state_dict()["head.weight"])  # an average, not a copy


# --------------------------------------------------------------------------------------------------
# Label correction (SLN-MO-LC)
# --------------------------------------------------------------------------------------------------


class RecordingImages:
    """The training split, remembering the batches of its first pass of an epoch (the label-correction pass)."""

    def __init__(self, images) -> None:
        self.images, self.first_pass, self._passes = images, [], 0

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, *args, **kwargs):
        self._passes += 1
        for images, index in self.images.batches(*args, **kwargs):
            if self._passes == 1:
                self.first_pass.append((images.clone(), index.clone()))
            yield images, index


def _correction_from(network: torch.nn.Module, batches, targets: Tensor, noisy: Tensor, mix_with: str) -> Tensor:
    losses, probs = torch.zeros(len(noisy)), torch.zeros_like(targets)
    with torch.no_grad():
        for images, index in batches:
            log_probs = F.log_softmax(network.eval()(images), dim=1)
            losses[index] = -(targets[index] * log_probs).sum(dim=1)
            probs[index] = log_probs.exp()
    return correct_targets(losses, noisy, probs, mix_with=mix_with)


@pytest.mark.parametrize("mix_with", ["argmax", "softmax"])
def test_label_correction_mixes_the_labels_with_the_ema_prediction_on_that_epochs_inputs(mix_with):
    loop = _loop("sln.correction=1", "sln.ema_decay=0.7", f"sln.correction_target={mix_with}")
    _epochs(loop, range(1, 2))
    ema, raw = copy.deepcopy(loop.state.ema.module), copy.deepcopy(loop.state.model)
    before = loop.state.targets.clone()
    recorder = RecordingImages(loop.splits.train)
    loop.splits = dataclasses.replace(loop.splits, train=recorder)
    _epochs(loop, range(2, 3))  # the first correction epoch: correct, then train with sigma 0
    assert sorted(torch.cat([i for _, i in recorder.first_pass]).tolist()) == list(range(96))
    noisy = loop.state.noisy
    from_ema = _correction_from(ema, recorder.first_pass, before, noisy, mix_with)
    from_raw = _correction_from(raw, recorder.first_pass, before, noisy, mix_with)
    torch.testing.assert_close(loop.state.targets, from_ema)
    assert not torch.allclose(from_raw, from_ema, atol=1e-3)  # the raw network would have given other targets


# --------------------------------------------------------------------------------------------------
# The ablations: gradient noise instead of label noise (paper Eq. 1 and 2)
# --------------------------------------------------------------------------------------------------


def _first_step(*overrides: str) -> tuple[RecordingLoss, list[Tensor]]:
    """One epoch of one step (all 96 samples in a batch): what the loss got and the gradients the optimizer used."""
    loop, loss, grads = _loop("sln.sigma=0", "optim.batch_size=96", *overrides), RecordingLoss(), []
    loop.state.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: grads.extend(p.grad.clone() for p in loop.state.model.parameters()))
    _epochs(loop, range(1, 2), loss)
    assert len(loss.targets) == 1
    assert torch.equal(loss.targets[0], _one_hot(loop, loss.indices[0]))  # no label noise at the same time
    return loss, grads


def test_parameter_gradient_noise_adds_gaussian_noise_of_std_sigma_to_every_gradient():
    sigma = 0.01
    _, plain = _first_step()
    _, noisy = _first_step(f"sln.grad_noise_sigma={sigma}")
    noise = torch.cat([(a - b).flatten() for a, b in zip(noisy, plain, strict=True)])
    assert noise.numel() > 90_000  # every parameter of the CNN
    assert noise.std().item() == pytest.approx(sigma, rel=0.02)  # ~4 standard errors
    assert abs(noise.mean().item()) < 4 * sigma / noise.numel() ** 0.5


def test_logit_gradient_noise_adds_gaussian_noise_of_std_sigma_over_batch_to_dloss_dlogits():
    sigma, batch = 0.5, 96
    plain, _ = _first_step()
    noisy, _ = _first_step(f"sln.logit_grad_noise_sigma={sigma}")
    noise = noisy.logit_grads[0] - plain.logit_grads[0]  # (B, K)
    assert noise.shape == (batch, 10)
    # 960 entries: the sample std is within 10% of sigma / B with ~4.4 standard errors to spare
    assert noise.std().item() == pytest.approx(sigma / batch, rel=0.10)
    assert abs(noise.mean().item()) < 4 * (sigma / batch) / noise.numel() ** 0.5


# --------------------------------------------------------------------------------------------------
# Reproducibility and the metrics accumulator
# --------------------------------------------------------------------------------------------------


def _everything(seed: int) -> dict[str, list[Tensor]]:
    loop, loss = _loop(f"run.seed={seed}", "sln.correction=2", "sln.ema_decay=0.7", "sln.grad_noise_sigma=0.01",
                       "sln.logit_grad_noise_sigma=0.5"), RecordingLoss()
    _epochs(loop, range(1, 4), loss)
    return {"targets": loss.targets, "logit_grads": loss.logit_grads, "corrected": [loop.state.targets],
            "ema": list(loop.state.ema.state_dict().values())}


def test_the_same_seed_reproduces_noise_ema_correction_and_gradient_noise_exactly():
    first, again, other = _everything(0), _everything(0), _everything(1)
    for key, tensors in first.items():
        assert all(torch.equal(a, b) for a, b in zip(tensors, again[key], strict=True)), key
        assert not all(torch.equal(a, b) for a, b in zip(tensors, other[key], strict=True)), key


def test_epoch_metrics_name_their_sums_and_find_the_first_non_finite_step():
    metrics = EpochMetrics(CPU)
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])  # predicts class 0 for all three
    noisy, clean = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])  # sample 1 is mislabelled and fitted
    metrics.add(0, torch.tensor(0.5), logits, noisy, clean)
    metrics.add(1, torch.tensor(float("nan")), logits, noisy, clean)
    metrics.add(2, torch.tensor(float("inf")), logits, noisy, clean)
    totals = metrics.totals(SINGLE)
    assert metrics.mean_loss() != metrics.mean_loss()  # NaN stays NaN
    assert totals["samples"] == 9 and totals["correct_noisy"] == 6 and totals["correct_clean"] == 3
    assert totals["mislabelled"] == 3 and totals["memorized"] == 3
    assert totals["first_bad_step"] == 2  # counted from 1
