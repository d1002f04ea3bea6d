"""Label smoothing (Szegedy et al., CVPR 2016; under label noise: Lukasik et al., ICML 2020):
cross-entropy against `(1 - eps)·t + eps/K`."""

from __future__ import annotations

from torch import Tensor

from sln_cli.methods.base import Configured
from sln_cli.methods.sln import soft_cross_entropy


class LabelSmoothing(Configured):
    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        epsilon = self.settings.smoothing
        return soft_cross_entropy(logits, (1 - epsilon) * targets + epsilon / self.num_classes)
