"""Bootstrapping (Reed et al., ICLR 2015 workshop): the target mixes the label with the network's own belief.

soft: `beta·t + (1 - beta)·p`, p not detached (the paper: CE plus a minimum-entropy term), beta = 0.95;
hard: `beta·t + (1 - beta)·onehot(argmax p)`, beta = 0.8.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sln_cli.methods.base import Configured, probabilities
from sln_cli.methods.sln import soft_cross_entropy


class SoftBootstrapping(Configured):
    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        beta = self.settings.bootstrap_beta
        return soft_cross_entropy(logits, beta * targets + (1 - beta) * probabilities(logits))


class HardBootstrapping(Configured):
    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        beta = self.settings.bootstrap_beta
        predicted = F.one_hot(logits.argmax(dim=1), self.num_classes).float()  # (B, K), no gradient
        return soft_cross_entropy(logits, beta * targets + (1 - beta) * predicted)
