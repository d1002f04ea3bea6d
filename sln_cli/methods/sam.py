"""Sharpness-aware minimisation (Foret et al., ICLR 2021), an optimiser option for any method.

After the first backward holds g = ∇L(w): move to w + e, e = rho·g/‖g‖₂ (one norm over every trained
parameter), take the gradient there, move back, and let the base optimiser step from w with ∇L(w + e).
BatchNorm running statistics are not updated by the second pass (as the reference implementation advises).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn


class SharpnessAware:
    def __init__(self, networks: list[nn.Module], rho: float) -> None:
        self.networks, self.rho = networks, rho
        self.parameters = [p for network in networks for p in network.parameters() if p.requires_grad]

    def second_gradient(self, objective: Callable[[], Any]) -> None:
        """Replace the gradient ∇L(w) in `.grad` with ∇L(w + e); `objective` runs forward, loss and backward."""
        moved, steps = self._ascend()
        with self._batchnorm_frozen():
            objective()
        with torch.no_grad():
            torch._foreach_sub_(moved, steps)

    @torch.no_grad()
    def _ascend(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        moved: list[torch.Tensor] = [p for p in self.parameters if p.grad is not None]
        grads = [cast(torch.Tensor, p.grad) for p in moved]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # ‖g‖₂ on the device
        steps = torch._foreach_mul(grads, self.rho / (norm + 1e-12))
        torch._foreach_add_(moved, list(steps))
        for p in moved:
            p.grad = None  # the second backward writes ∇L(w + e) afresh
        return moved, list(steps)

    @contextmanager
    def _batchnorm_frozen(self) -> Iterator[None]:
        norms = [m for network in self.networks for m in network.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0  # running = (1 - 0)·running + 0·batch: unchanged
        try:
            yield
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
