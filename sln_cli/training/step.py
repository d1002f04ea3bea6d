"""One SGD step of SLN as the paper writes it (targets -> noise -> forward -> loss -> backward -> step -> EMA),
and the named sums a pass of such steps adds up on the device.

Chen et al., "Noise against noise", ICLR 2021, Sec. 3; official code `utils.train_noise`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils import clip_grad_norm_

from sln_cli.methods.base import Method
from sln_cli.methods.sam import SharpnessAware
from sln_cli.methods.sln import (
    add_label_noise,
    add_parameter_gradient_noise,
    logit_gradient_noise_hook,
)
from sln_cli.training import distributed
from sln_cli.training.distributed import World
from sln_cli.training.ema import WeightEMA

# The objective of a step: (logits (B, K), the targets it is given (B, K), the batch's sample indices (B,)) -> scalar.
# The indices let per-sample methods (running targets, co-teaching selections) keep state across epochs.
Loss = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class Step:
    """What every step of one training pass shares: the optimisation state, the objective and the noise."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: WeightEMA
    autocast: Callable[[], AbstractContextManager]  # the forward's precision (`sln_cli.training.devices.autocast`)
    sigma: float  # std of the Gaussian label noise (0 = CE, and during label correction)
    noise: torch.Generator  # label noise and logit-gradient noise
    method: Method = field(default_factory=Method)  # forward, per-sample state, and the loss (`sln_cli.methods`)
    sam: SharpnessAware | None = None  # sharpness-aware minimisation: a second pass at the ascended weights
    grad_noise_sigma: float = 0.0  # ablation (paper Eq. 1): noise on the parameter gradients
    logit_grad_noise_sigma: float = 0.0  # ablation (paper Eq. 2): noise on dLoss/dlogits
    gradient_noise: torch.Generator | None = None  # parameter-gradient noise (shared by all ranks under DDP)
    parameters: list[Tensor] = field(default_factory=list)  # those the parameter-gradient noise lands on
    grad_clip: float | None = None  # optim.grad_clip: the global L2 norm of every trained gradient, clipped


def sgd_step(step: Step, network: nn.Module, images: Tensor, targets: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """One step on a batch; returns (logits (B, K), loss). `targets` are the batch's current targets:
    the one-hot noisy labels, or the corrected ones once label correction has started."""
    targets = add_label_noise(targets, step.sigma, step.noise)  # SLN: + sigma * N(0, I), fresh every step (B, K)
    step.method.start_step(index)  # what the method draws for this batch (SOP+'s strong views)
    logits = _forward(step, network, images)  # (B, K)
    step.method.observe(logits, index)  # per-sample state of the method (ELR's targets), once per step
    loss = step.method(logits, targets, index)
    own = step.method.optimizers()  # the method's own parameters (SOP's u, v): their own optimiser
    for optimizer in (step.optimizer, *own):
        optimizer.zero_grad(set_to_none=True)
    step.scaler.scale(loss).backward()
    if step.sam is not None:  # SAM: the gradient again, on the same batch, at w + rho * g / |g|
        step.sam.second_gradient(
            lambda: step.scaler.scale(step.method(_forward(step, network, images), targets, index)).backward())
    if step.grad_noise_sigma > 0 or step.grad_clip is not None:  # both act on the true (unscaled) gradients
        step.scaler.unscale_(step.optimizer)
    if step.grad_noise_sigma > 0:  # ablation: isotropic noise on the parameter gradients
        add_parameter_gradient_noise(step.parameters, step.grad_noise_sigma, step.gradient_noise)
    if step.grad_clip is not None:  # NCE+RCE's official trainer: clip_grad_norm_(model.parameters(), 5.0)
        clip_grad_norm_([p for group in step.optimizer.param_groups for p in group["params"]], step.grad_clip)
    for optimizer in own:  # SOP's official order: u, v first, then the network (independent parameters)
        step.scaler.step(optimizer)
    step.scaler.step(step.optimizer)
    step.scaler.update()
    step.ema.update()  # SLN-MO: the momentum model follows every step
    return logits, loss


def _forward(step: Step, network: nn.Module, images: Tensor) -> Tensor:
    with step.autocast():
        logits = step.method.forward(network, images)  # (B, K)
    if step.logit_grad_noise_sigma > 0:  # ablation: the noise SLN puts on dLoss/dlogits, without SLN
        logits.register_hook(logit_gradient_noise_hook(step.logit_grad_noise_sigma, len(images), step.noise,
                                                       scale=loss_scale(step.scaler)))
    return logits


def loss_scale(scaler: torch.amp.GradScaler) -> Callable[[], Tensor | float] | None:
    """The scaler's current scale as a device tensor, read when called (None when the scaler is off)."""
    if not scaler.is_enabled():
        return None
    # the scale tensor itself: `get_scale()` would be a host sync per step
    return cast(Callable[[], Tensor], scaler._get_scale_async)


NO_BAD_STEP = torch.iinfo(torch.int64).max  # the first-non-finite-step marker of a pass where none was


class EpochMetrics:
    """The training metrics of one pass, summed on the device and read back once (`totals`).

    The sums live in one float64 tensor so that a step adds them with one kernel and a pass reduces them
    with one collective; `FIELDS` names its entries. Counts are exact in float64 far beyond any dataset.
    """

    FIELDS = ("loss_sum", "correct_noisy", "correct_clean", "mislabelled", "memorized", "samples")

    def __init__(self, device: torch.device) -> None:
        self._sums = torch.zeros(len(self.FIELDS), dtype=torch.float64, device=device)
        self._first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=device)
        self.samples = 0  # counted on the host: no per-step host-to-device copy

    @torch.no_grad()
    def add(self, step: int, loss: Tensor, logits: Tensor, noisy: Tensor, clean: Tensor) -> None:
        """Add one step's batch: its loss, predictions against the noisy and the true labels, memorisation."""
        predicted = logits.argmax(dim=1)
        mislabelled = noisy != clean
        self._sums[:-1] += torch.stack([  # in the order of FIELDS
            loss.detach().double() * len(noisy), (predicted == noisy).sum(), (predicted == clean).sum(),
            mislabelled.sum(), (mislabelled & (predicted == noisy)).sum(),
        ]).double()
        self.samples += len(noisy)
        bad = self._first_bad_step.clamp_max(step + 1)  # steps count from 1 in the message
        self._first_bad_step = torch.where(torch.isfinite(loss), self._first_bad_step, bad)

    def mean_loss(self) -> float:
        """The pass's mean loss so far (a host sync: the progress bar reads it once a second at most)."""
        return (self._sums[0] / self.samples).item()

    def totals(self, world: World) -> dict[str, float | None]:
        """The sums by name over all ranks, and `first_bad_step` (None when every loss was finite); call once.

        Under torchrun every rank must call it (collectives); `tolist` is the pass's one host sync.
        """
        self._sums[-1].fill_(self.samples)  # a kernel argument; `= self.samples` is a host-to-device copy
        distributed.all_reduce_sum(self._sums, world)
        distributed.all_reduce_min(self._first_bad_step, world)
        values: dict[str, float | None] = dict(zip(self.FIELDS, self._sums.tolist(), strict=True))
        bad = int(self._first_bad_step)
        return values | {"first_bad_step": None if bad == NO_BAD_STEP else bad}
