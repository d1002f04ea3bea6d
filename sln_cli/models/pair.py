"""Two networks trained side by side (DivideMix) and evaluated as one: the mean of their logits.

DivideMix's `test` takes the argmax of `net1(x) + net2(x)` (official `Train_CIFAR.py`); the mean has the same
argmax. Saved as one state dict (`first.*`, `second.*`), so evaluate, analyze and the EMA see one model.
"""

from __future__ import annotations

from torch import Tensor, nn


class NetworkPair(nn.Module):
    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: Tensor) -> Tensor:
        return (self.first(x) + self.second(x)) / 2  # (N, K)
