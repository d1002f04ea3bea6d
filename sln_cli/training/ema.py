"""The momentum model of SLN-MO: an exponential moving average of all weights *and* BatchNorm buffers."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    """`ema = decay * ema + (1 - decay) * model` after every optimizer step, in a few fused foreach kernels.

    As the official `utils.WeightEMA`, every floating-point entry of the state dict is averaged (parameters
    and BatchNorm running statistics). Integer buffers (`num_batches_tracked`) are copied, which the official
    code means to do (its `ema_param = param` rebinding is a no-op); BatchNorm's fixed momentum ignores them.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs(model)

    def _pairs(self, model: nn.Module) -> None:
        source, target = model.state_dict(keep_vars=True), self.module.state_dict(keep_vars=True)
        floats = [k for k, v in source.items() if v.is_floating_point()]
        self._model_floats = [source[k].detach() for k in floats]
        self._ema_floats = [target[k].detach() for k in floats]
        self._model_ints = [v.detach() for k, v in source.items() if not v.is_floating_point()]
        self._ema_ints = [target[k].detach() for k, v in source.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._ema_floats, self._model_floats, 1.0 - self.decay)
        if self._ema_ints:
            torch._foreach_copy_(self._ema_ints, self._model_ints)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
