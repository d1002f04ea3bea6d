"""What the training step asks of a method, and the default: cross-entropy against soft targets (CE, SLN).

A method sees each batch once as a `Batch`; `observe` updates per-sample state once per step (ELR),
`loss` may be evaluated twice per step (SAM's second pass), so it must not change state.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sln_cli.config import MethodConfig
from sln_cli.losses import soft_cross_entropy


@dataclass(frozen=True)
class Batch:
    images: Tensor  # (B, C, H, W) as the network saw them (augmented)
    index: Tensor  # (B,) int64 positions in the training set
    labels: Tensor  # (B,) int64 the given (possibly wrong) labels
    targets: Tensor  # (B, K) float32 soft targets: one-hot labels (or LC's), plus SLN's noise when it applies


@dataclass(frozen=True)
class MethodContext:
    """What building a method may need from the run."""

    num_classes: int
    num_samples: int
    device: torch.device
    noisy: np.ndarray  # (N,) the given labels
    clean: np.ndarray | None  # (N,) true labels when known
    make_network: Callable[[], nn.Module]  # a freshly initialised network like the trained one
    forward: Callable[[], AbstractContextManager]  # the run's autocast
    world_size: int = 1  # processes under torchrun


class Method:
    """Soft-target cross-entropy (`sln`, `ce`); subclasses replace `loss` and use the hooks they need."""

    def __init__(self, settings: MethodConfig, context: MethodContext) -> None:
        self.settings, self.num_classes = settings, context.num_classes

    def networks(self) -> list[nn.Module]:
        """Extra networks trained beside the model by the same optimiser (co-teaching's peer)."""
        return []

    def start_epoch(self, epoch: int) -> None:
        """Host-side schedules, once per epoch (co-teaching's forget rate)."""

    def observe(self, logits: Tensor, batch: Batch) -> None:
        """Per-sample state updated once per step, before the loss (ELR's target EMA)."""

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        return soft_cross_entropy(logits, batch.targets)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold for an exact resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SoftCrossEntropy(Method):
    """CE and SLN: `-mean_i sum_k t_ik log softmax(z_i)_k` (SLN's noise is added to t by the step)."""


def probabilities(logits: Tensor) -> Tensor:
    """softmax in fp32 (under autocast the logits may be bf16)."""
    return torch.softmax(logits.float(), dim=1)


def reverse_cross_entropy(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """`-sum_k p_k log q_k` with the one-hot label q clipped to [1e-4, 1] (log 0 := log 1e-4 = A, Wang et al.
    2019), p clipped to [1e-7, 1] as in their and Ma et al.'s official code: equals -A·(1 - p_y) per sample."""
    p = probabilities(logits).clamp(1e-7, 1.0)
    q = torch.nn.functional.one_hot(labels, num_classes).float().clamp(1e-4, 1.0)
    return -(p * q.log()).sum(dim=1).mean()
