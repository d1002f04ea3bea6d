"""Building a run's optimiser: used by `state` (the first one, or the resumed one) and `recording` (afresh every
epoch under `optim.reset_each_epoch`), so neither imports the other."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sln_cli.config import OptimConfig
from sln_cli.training.devices import optimizer_kernel


def new_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device,
                  extra: Sequence[nn.Module] = ()) -> torch.optim.Optimizer:
    """SGD with momentum over the trainable parameters: built once, or afresh every epoch (`optim.reset_each_epoch`,
    as the official recipe does: `optimizer = optim.SGD(...)` inside its epoch loop, so momentum restarts at zero).
    `extra` networks (a method's, e.g. co-teaching's peer) get a parameter group each, with the same settings."""
    optimizer = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum,
                                weight_decay=optim.weight_decay,
                                **optimizer_kernel(device))
    for network in extra:
        optimizer.add_param_group({"params": [p for p in network.parameters() if p.requires_grad]})
    return optimizer
