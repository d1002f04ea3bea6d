"""Co-teaching (Han et al., NeurIPS 2018): two networks; each trains on the samples with the smallest loss
under the other, keeping a fraction 1 - R(e) of each batch. R follows the official `rate_schedule`
(bhanML/Co-teaching main.py, commit 07a0f57): `linspace(0, tau, T_k)` indexed by the epoch, and the training
epochs count from 1 there (epoch 0 only evaluates), so R(1) = tau/(T_k - 1) and R reaches tau at epoch T_k - 1.
The step's model is the first network; the EMA tracks it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sln_cli.errors import SlnError
from sln_cli.methods.base import Configured, MethodContext

if TYPE_CHECKING:
    import numpy as np

    from sln_cli.config import Config


class CoTeaching(Configured):
    def __init__(self, settings, context: MethodContext) -> None:
        super().__init__(settings, context)
        if context.world_size > 1:
            raise SlnError("method coteaching trains a second network on one process; run it without torchrun")
        self.peer = context.make_network()  # its own initialisation, trained by the same optimiser
        self.rate = 0.0  # this epoch's forget rate R(e)
        self.peer_logits: Tensor | None = None

    def networks(self) -> list[nn.Module]:
        return [self.peer]

    def start_epoch(self, epoch: int) -> None:
        self.rate = forget_rate(epoch, self.settings.forget_rate, self.settings.forget_epochs)
        self.peer.train()

    def forward(self, network: nn.Module, images: Tensor) -> Tensor:
        logits = network(images)  # (B, K)
        self.peer_logits = self.peer(images)  # under the step's autocast; read by the loss below
        return logits

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        labels = self.labels[index]
        losses = F.cross_entropy(logits.float(), labels, reduction="none")  # (B,)
        peer_logits = cast(Tensor, self.peer_logits)  # set by `forward` before every call
        peer_losses = F.cross_entropy(peer_logits.float(), labels, reduction="none")
        keep = max(1, int((1 - self.rate) * len(index)))  # from shapes: no host sync
        model_loss = losses[small_loss(peer_losses.detach(), keep)].mean()  # the peer picks the model's samples
        peer_loss = peer_losses[small_loss(losses.detach(), keep)].mean()  # and the model the peer's
        return model_loss + peer_loss - peer_loss.detach()  # reads as the model's loss, trains both

    def state_dict(self) -> dict[str, Any]:
        return {"peer": self.peer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peer.load_state_dict(state["peer"])


def forget_rate(epoch: int, final: float, ramp_epochs: int) -> float:
    """R(e) = final · min(e, T_k - 1) / (T_k - 1) for epochs e = 1, 2, ...: the official
    `rate_schedule[epoch]` with `rate_schedule[:T_k] = np.linspace(0, final, T_k)` and `for epoch in range(1, n)`."""
    if ramp_epochs <= 1:
        return final
    return final * min(epoch, ramp_epochs - 1) / (ramp_epochs - 1)


def small_loss(losses: Tensor, keep: int) -> Tensor:
    """Indices of the `keep` smallest losses, ties broken by position (a stable sort on the device)."""
    return torch.sort(losses, stable=True).indices[:keep]


def settle(config: Config, noisy: np.ndarray, clean: np.ndarray | None, *,
           manifest: dict | None = None, replaced: np.ndarray | None = None) -> Config:
    """Co-teaching's default forget rate is the training labels' realised noise rate (Han et al. take the noise
    rate as known). Open-set labels keep every label (images are replaced instead; `replaced` is the label set's
    source_index, -1 = own image), so their noise rate is the label set's stated fraction (the manifest's
    `requested_noise_rate`, else the fraction replaced), as the official code takes `--noise_rate`."""
    method = config.method
    if method.forget_rate is not None:
        return config
    if replaced is not None:
        stated = (manifest or {}).get("requested_noise_rate")
        if not isinstance(stated, int | float) or isinstance(stated, bool) or not 0 <= stated < 1:
            stated = float((replaced >= 0).mean()) if len(replaced) else 0.0
        return dataclasses.replace(config, method=dataclasses.replace(method, forget_rate=float(stated)))
    if clean is None:
        raise SlnError("method.forget_rate defaults to the noise rate, and these labels have no true labels to "
                       "measure it; set it, e.g. --set method.forget_rate=0.4 (`sln analyze noise RUN` estimates "
                       "it from a run trained with --record-probs)")
    rate = float((noisy != clean).mean())
    return dataclasses.replace(config, method=dataclasses.replace(method, forget_rate=rate))
