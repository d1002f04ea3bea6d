"""Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018): `(1 - p_y^q) / q`, CE as q -> 0, MAE at q = 1."""

from __future__ import annotations

from torch import Tensor

from sln_cli.methods.base import Configured, probabilities


class GeneralizedCrossEntropy(Configured):
    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        q = self.settings.gce_q
        # p_y clipped at 1e-7 as in the official code: the gradient p_y^(q-1) is finite
        p_label = probabilities(logits).gather(1, self.labels[index][:, None]).squeeze(1).clamp(1e-7, 1.0)  # (B,)
        return ((1 - p_label.pow(q)) / q).mean()
