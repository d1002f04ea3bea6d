"""SLN in one file: Chen et al., "Noise against noise: stochastic label noise helps combat inherent label noise",
ICLR 2021, against the official code chenpf1025/SLN at commit 621c6c87138db09fdca66a7610b126ee4b265b74.

- `add_label_noise`: the targets plus sigma·N(0, I_K), fresh each step (paper Sec. 3, the SLN update; official
  `utils.py: train_noise`, `target += args.sigma*torch.randn(target.size())`).
- `soft_cross_entropy`: the loss against those targets, `-mean_i sum_k t_ik log softmax(z_i)_k`, unnormalised
  targets (official `train_noise`: `-torch.mean(torch.sum(F.log_softmax(output, dim=1)*target, dim=1))`). `--method
  sln` and `ce` build `methods.base.SoftCrossEntropy`, whose call is this function (`base.Method.__call__`).
- `correction_weight`, `correct_targets`: the LC mixing rule (paper Sec. 4, SLN-MO-LC), `t_i = w_i onehot(y_i) +
  (1 - w_i) p_i`, w the EMA network's loss min-max normalised to [0, 1] and p its argmax one-hot (CIFAR) or
  softmax (Clothing1M) (official `noise_cifar_train.py`, the `if epoch > args.correction:` block, with
  `utils.py: get_output`; `noise_clothing1m_train.py` for the softmax).
- `correct_labels`: the LC pass over the training set with the EMA network (the same block; the official
  `train_eval_loader` runs with the training augmentation, so `sln.correction_augment` defaults to on).
- `sln_schedule`: sigma and LC per epoch: from epoch `correction + 1` on, targets corrected and sigma 0
  (official `if epoch > args.correction: ... args.sigma = 0`).
- `logit_gradient_noise_hook`, `add_parameter_gradient_noise`: the paper's ablations (Eq. 2 and Eq. 1).
The EMA (SLN-MO, official `utils.py: WeightEMA`, alpha 0.999) is `sln_cli.training.ema`, config `ema.decay`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sln_cli.data.batches import Augmentation
from sln_cli.training import distributed
from sln_cli.training.devices import autocast
from sln_cli.training.distributed import SINGLE, World

if TYPE_CHECKING:
    from sln_cli.config import Config, SlnConfig
    from sln_cli.training.state import Images, State


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """`-mean_i sum_k t_ik * log_softmax(z_i)_k`; targets need not sum to one (SLN does not renormalise)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def add_label_noise(targets: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """`targets + sigma * N(0, I_K)`, fresh every call (paper Sec. 3; sigma 0 returns the targets as they are)."""
    if sigma == 0:
        return targets
    noise = torch.randn(targets.shape, generator=generator, device=targets.device, dtype=targets.dtype)
    return targets + sigma * noise


def sln_schedule(sln: SlnConfig, epoch: int) -> tuple[float, bool]:
    """(sigma, correcting) of `epoch`: after epoch `sln.correction` the targets are corrected and sigma is 0."""
    correcting = sln.correction is not None and epoch > sln.correction
    return (0.0 if correcting else sln.sigma), correcting


@torch.inference_mode()
def correct_labels(state: State, train: Images, config: Config, generator: torch.Generator, *,
                    world: World = SINGLE, samples: Tensor | None = None) -> dict[str, Any]:
    """SLN-MO-LC: targets = w * onehot(noisy) + (1 - w) * EMA prediction, w the min-max normalised EMA loss.

    Under torchrun each rank scores its shard into zero tensors and a sum over the ranks assembles the
    whole set, so every rank computes the same new targets. With an epoch's draw of `samples`
    (Clothing1M), only those are corrected, starting from their one-hot labels as the official code does.
    """
    ema = state.ema.module.eval()
    forward = autocast(state.targets.device, config.run.precision)
    n = len(train)
    losses = torch.zeros(n, device=state.targets.device)
    probs = torch.zeros_like(state.targets)
    if samples is None:
        samples = order = torch.arange(n, device=state.targets.device)
    else:
        state.targets[samples] = F.one_hot(state.noisy[samples], state.targets.shape[1]).float()
        order = torch.unique(samples)  # a sample drawn twice is scored once (unique reads its size back: a sync)
    order = distributed.shard(order, world)
    augmentation = Augmentation(config.data.padding, config.data.flip) if config.sln.correction_augment else None
    for images, index in train.batches(order, config.run.eval_batch_size, augmentation=augmentation,
                                       generator=generator):
        with forward():
            log_probs = F.log_softmax(ema(images).float(), dim=1)  # (B, K)
        losses[index] = -(state.targets[index] * log_probs).sum(dim=1)
        probs[index] = log_probs.exp()
    distributed.all_reduce_sum(losses, world)
    distributed.all_reduce_sum(probs, world)
    state.targets[samples] = correct_targets(losses[samples], state.noisy[samples], probs[samples],
                                             mix_with=config.sln.correction_target)
    if state.clean is None:
        return {"corrected_acc": None}
    return {"corrected_acc": (state.targets[samples].argmax(dim=1) == state.clean[samples]).float().mean().item()}


def correct_targets(
    losses: Tensor, noisy_labels: Tensor, ema_probs: Tensor, *, mix_with: str = "argmax"
) -> Tensor:
    """Label correction (SLN-MO-LC): `w * onehot(noisy) + (1 - w) * p`, `w` the min-max normalised loss.

    `p` is the one-hot argmax of the EMA prediction (CIFAR) or the EMA softmax itself (Clothing1M), as in
    the official `noise_cifar_train.py` and `noise_clothing1m_train.py`.
    """
    num_classes = ema_probs.shape[1]
    weight = correction_weight(losses).unsqueeze(1)  # (N, 1) in [0, 1]
    if mix_with == "argmax":
        prediction = F.one_hot(ema_probs.argmax(dim=1), num_classes).to(ema_probs.dtype)
    else:
        prediction = ema_probs
    return weight * F.one_hot(noisy_labels, num_classes).to(ema_probs.dtype) + (1 - weight) * prediction


def correction_weight(losses: Tensor) -> Tensor:
    """Label correction's weight on the given label: the loss min-max normalised to [0, 1] (official code)."""
    span = (losses.max() - losses.min()).clamp_min(torch.finfo(losses.dtype).tiny)
    return (losses - losses.min()) / span


def logit_gradient_noise_hook(sigma: float, batch_size: int, generator: torch.Generator | None = None, *,
                              scale: Callable[[], Tensor | float] | None = None):
    """Ablation (paper Eq. 2): add `sigma * N(0, I) / B` to dLoss/dlogits, the scale SLN's noise has there.

    Under a GradScaler the gradient reaching the hook is that of `scale * loss`: `scale()` (the scaler's
    current scale, a device tensor read when the hook runs, so no host sync) multiplies the noise too, so that
    after unscaling it is `sigma / B` as in fp32. (Unscaled, fp16's 65,536 would leave it 65,536 times too weak.)
    """

    def hook(grad: Tensor) -> Tensor:
        noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
        # scale * (sigma / B) first: noise * 65,536 alone could overflow fp16 before the division
        factor = sigma / batch_size if scale is None else scale() * (sigma / batch_size)
        return grad + noise * factor

    return hook


def add_parameter_gradient_noise(
    parameters: list[Tensor], sigma: float, generator: torch.Generator | None = None
) -> None:
    """Ablation (paper Eq. 1): add `sigma * N(0, I)` to every parameter gradient."""
    for p in parameters:
        if p.grad is not None:
            noise = torch.randn(p.grad.shape, generator=generator, device=p.grad.device, dtype=p.grad.dtype)
            p.grad.add_(noise, alpha=sigma)
