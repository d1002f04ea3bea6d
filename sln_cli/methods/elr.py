"""Early-learning regularisation (Liu et al., NeurIPS 2020): `CE + lambda·log(1 - <t_i, p_i>)`, where t_i is a
per-sample moving average of the network's (clipped, renormalised) predictions, kept on the device.

As in the official code, t_i is updated first and the regulariser reads the updated t_i.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sln_cli.errors import SlnError
from sln_cli.methods.base import Configured, MethodContext, probabilities
from sln_cli.methods.sln import soft_cross_entropy


class EarlyLearningRegularization(Configured):
    def __init__(self, settings, context: MethodContext) -> None:
        super().__init__(settings, context)
        if context.world_size > 1:
            raise SlnError("method elr keeps one target per sample on one process; run it without torchrun")
        self.ema_targets = torch.zeros(context.num_samples, context.num_classes, device=context.device)  # (N, K)

    def observe(self, logits: Tensor, index: Tensor) -> None:
        beta = self.settings.elr_beta
        p = probabilities(logits.detach()).clamp(1e-4, 1 - 1e-4)  # (B, K)
        self.ema_targets[index] = beta * self.ema_targets[index] + (1 - beta) * p / p.sum(1, keepdim=True)

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        p = probabilities(logits).clamp(1e-4, 1 - 1e-4)  # (B, K)
        regulariser = (1 - (self.ema_targets[index] * p).sum(dim=1)).log().mean()
        return soft_cross_entropy(logits, targets) + self.settings.elr_lambda * regulariser

    def state_dict(self) -> dict[str, Any]:
        return {"elr_targets": self.ema_targets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema_targets.copy_(state["elr_targets"])
