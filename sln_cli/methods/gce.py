"""Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018) as its reference code trains it: the truncated Lq loss.

Lq(p_y) = (1 - p_y^q) / q lies between CE (q -> 0) and MAE (q = 1). Truncated at k, a sample whose Lq exceeds
Lq(k) is dropped: loss_i = w_i·(Lq(p_y) - Lq(k)), with w_i = [Lq(p_y) < Lq(k)] re-scored by a pass of the network
in eval mode over the (augmented) training set at the start of epochs gce_prune_from, +10, +20, ... (w = 1 before).
Checked against AlanChou/Truncated-Loss (TruncatedLoss.py and main.py, commit 93a2464): q = 0.7, k = 0.5,
`(epoch+1) >= start_prune (40) and (epoch+1) % 10 == 0`. That code re-scores with its best-test-accuracy
checkpoint; sln scores with the current network, as selecting on the test set is not a method.
`method.gce_k=0` is plain Lq: Lq(0) = 1/q bounds every loss, so every weight stays 1 and only a constant differs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sln_cli.errors import SlnError
from sln_cli.methods.base import Configured, MethodContext, probabilities

RESCORE_EVERY = 10  # epochs between re-scorings (hard-coded in the reference main.py)


class GeneralizedCrossEntropy(Configured):
    def __init__(self, settings, context: MethodContext) -> None:
        super().__init__(settings, context)
        self.truncated = bool(settings.gce_k)
        if self.truncated and context.world_size > 1:
            raise SlnError("truncated GCE keeps one weight per sample on one process; run it without torchrun, "
                           "or use plain Lq (--set method.gce_k=0)")
        self.weights = torch.ones(context.num_samples, device=context.device)  # (N,) w_i

    def _lq(self, logits: Tensor, index: Tensor) -> Tensor:
        q = self.settings.gce_q
        # p_y clipped at 1e-7 as in the official code: the gradient p_y^(q-1) is finite
        p_label = probabilities(logits).gather(1, self.labels[index][:, None]).squeeze(1).clamp(1e-7, 1.0)  # (B,)
        return (1 - p_label.pow(q)) / q

    def _lq_k(self) -> float:
        q = self.settings.gce_q
        return (1 - self.settings.gce_k ** q) / q

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        if not self.truncated:
            return self._lq(logits, index).mean()
        return (self.weights[index] * (self._lq(logits, index) - self._lq_k())).mean()

    def rescores(self, epoch: int) -> bool:
        return self.truncated and epoch >= self.settings.gce_prune_from and epoch % RESCORE_EVERY == 0

    def rescore(self, logits: Tensor, index: Tensor) -> None:
        self.weights[index] = (self._lq(logits, index) < self._lq_k()).float()

    def state_dict(self) -> dict[str, Any]:
        return {"gce_weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "gce_weights" in state:  # checkpoints of plain Lq runs made before truncation hold none
            self.weights.copy_(state["gce_weights"])
