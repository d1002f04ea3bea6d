"""Symmetric cross-entropy (Wang et al., ICCV 2019): `alpha·CE + beta·RCE`.

SLN's noise, when asked for, enters the CE term's soft targets; RCE reads the given hard label.
"""

from __future__ import annotations

from torch import Tensor

from sln_cli.methods.base import Configured, reverse_cross_entropy
from sln_cli.methods.sln import soft_cross_entropy


class SymmetricCrossEntropy(Configured):
    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        alpha, beta = self.settings.sce_alpha, self.settings.sce_beta
        ce = soft_cross_entropy(logits, targets)
        return alpha * ce + beta * reverse_cross_entropy(logits, self.labels[index], self.num_classes)
