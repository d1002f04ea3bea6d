"""What the training step asks of a method (`Method`), and its default: cross-entropy against soft targets.

The step calls, per batch: `start_step` (the batch's indices), `forward` (under autocast), `observe` once, then
the method itself as the loss `(logits (B, K), targets (B, K), index (B,)) -> scalar`; the method's own
`optimizers` (SOP's u, v) are zeroed and stepped beside the network's. SAM evaluates the loss a second time on the same
batch, so a method changes its per-sample state in `observe`, never in the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sln_cli.methods.sln import soft_cross_entropy
from sln_cli.training.distributed import SINGLE, World


@dataclass(frozen=True)
class MethodContext:
    """What building a method may need from the run."""

    num_classes: int
    num_samples: int
    device: torch.device
    noisy: np.ndarray  # (N,) the given labels
    clean: np.ndarray | None  # (N,) true labels when known
    make_network: Callable[[], nn.Module]  # a freshly (and differently) initialised network like the trained one
    forward: Callable[[], AbstractContextManager]  # the run's autocast
    world_size: int = 1  # processes under torchrun
    rank: int = 0  # this process's rank under torchrun (draws that must differ across ranks: SOP+'s strong views)
    seed: int = 0  # run.seed: per-method random state (SOP's u, v initialisation, SOP+'s strong views)
    images: torch.Tensor | None = None  # (N, C, H, W) uint8 training images of in-memory datasets, as indexed
    mean: tuple[float, ...] = ()  # the dataset's per-channel normalisation
    std: tuple[float, ...] = ()
    padding: int = 4  # data.padding and data.flip: the training augmentation
    flip: bool = True


@dataclass
class EpochPass:
    """What a method that runs its own training pass (`Method.train_pass`) is given by `epoch.train_pass`."""

    step: Any  # sln_cli.training.step.Step: optimizer, scaler, EMA, autocast, sigma and the epoch's noise generator
    model: nn.Module  # the trained model (DivideMix: its NetworkPair)
    train: Any  # sln_cli.training.state.Images: the training split
    epoch: int  # counted from 1
    batch_size: int
    eval_batch_size: int
    augmentation: Any  # sln_cli.data.batches.Augmentation
    metrics: Any  # sln_cli.training.step.EpochMetrics: the pass's sums
    noisy: Tensor  # (N,) the given labels
    clean: Tensor  # (N,) the true labels (the given ones when unknown)
    progress: Any  # sln_cli.render.progress.TrainProgress
    generator: Callable[[str], torch.Generator]  # an epoch generator for a purpose (resumes draw the same)
    seed: int  # the run's seed (host-side draws)
    world: World = SINGLE  # under torchrun: this rank's place (DivideMix shards its steps and gathers its division)


class Method:
    """The interface, and as it stands SLN's objective: `-mean_i sum_k t_ik log softmax(z_i)_k`
    (CE with sigma 0; SLN's noise is already in the targets the step passes)."""

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        return soft_cross_entropy(logits, targets)

    def start_step(self, index: Tensor) -> None:
        """Before the batch's forward: what the step needs from its indices (SOP+'s strong views)."""

    def forward(self, network: nn.Module, images: Tensor) -> Tensor:
        """The batch's logits (B, K), under the step's autocast; co-teaching also runs its peer here."""
        return network(images)

    def observe(self, logits: Tensor, index: Tensor) -> None:
        """Per-sample state, updated once per step before the loss (ELR's target EMA)."""

    def networks(self) -> list[nn.Module]:
        """Extra networks trained beside the model by the same optimiser (co-teaching's peer)."""
        return []

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The method's own optimisers (SOP's u, v), zeroed and stepped (through the scaler) beside the network's."""
        return []

    def start_epoch(self, epoch: int) -> None:
        """Host-side schedules, once per epoch (co-teaching's forget rate)."""

    def train_pass(self, run: EpochPass) -> dict[str, Any] | None:
        """Run the epoch's steps itself (DivideMix: division, then MixMatch) and return the extra metrics of its
        row; None (every method but DivideMix): the harness runs `step.sgd_step` over the batches."""
        return None

    def end_pass(self, world: World) -> None:
        """Under torchrun, after the pass and before the checkpoint: make per-sample state that each rank changed
        on its own shard the same on every rank (SOP's u, v). Not called with one process."""

    def rescores(self, epoch: int) -> bool:
        """Whether `epoch` starts with a scoring pass over the training set (truncated GCE's weights)."""
        return False

    def rescore(self, logits: Tensor, index: Tensor) -> None:
        """One batch of that pass: the network's logits (B, K) in eval mode on the augmented images."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold for an exact resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class FunctionLoss(Method):
    """A plain loss function `(logits, targets, index) -> scalar` as a method (tests inject recording ones)."""

    def __init__(self, function: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
        self.function = function

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        return self.function(logits, targets, index)


class Configured(Method):
    """A method built from its settings (`method` config section) and the run's context."""

    def __init__(self, settings: Any, context: MethodContext) -> None:
        self.settings, self.num_classes = settings, context.num_classes
        self.labels = torch.as_tensor(context.noisy, dtype=torch.int64, device=context.device)  # (N,) given labels


class SoftCrossEntropy(Configured):
    """`sln` and `ce`: the interface's own loss."""


def probabilities(logits: Tensor) -> Tensor:
    """softmax in fp32 (under autocast the logits may be bf16)."""
    return torch.softmax(logits.float(), dim=1)


def reverse_cross_entropy(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """`-sum_k p_k log q_k` with the one-hot label q clipped to [1e-4, 1] (log 0 := log 1e-4 = A, Wang et al.
    2019), p clipped to [1e-7, 1] as in their and Ma et al.'s official code: equals -A·(1 - p_y) per sample."""
    p = probabilities(logits).clamp(1e-7, 1.0)
    q = F.one_hot(labels, num_classes).float().clamp(1e-4, 1.0)
    return -(p * q.log()).sum(dim=1).mean()
