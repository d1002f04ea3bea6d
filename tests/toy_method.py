"""A method defined outside sln_cli, for tests/test_methods_registry.py: `SLN_METHODS=toy_method` (this folder on
PYTHONPATH) registers it, and `sln train --method toy` trains with its loss: cross-entropy plus a constant
OFFSET, so a run's train_loss shows that this loss, and no other, was used."""

from __future__ import annotations

from torch import Tensor

from sln_cli.methods.base import Configured
from sln_cli.methods.catalog import MethodSpec, Reference, register
from sln_cli.methods.sln import soft_cross_entropy

OFFSET = 100.0


class ToyLoss(Configured):
    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        return soft_cross_entropy(logits, targets) + OFFSET


SPEC = register(MethodSpec("toy", "(test)", "cross-entropy + 100", True,
                           reference=Reference("owner/toy", "toy.py", "0" * 40), factory="toy_method:ToyLoss"))
