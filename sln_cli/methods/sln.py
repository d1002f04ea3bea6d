"""The SLN objective: cross-entropy against per-sample soft targets, with fresh Gaussian label noise.

Paper: Chen et al., "Noise against noise", ICLR 2021; official code `utils.train_noise`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """`-mean_i sum_k t_ik * log_softmax(z_i)_k`; targets need not sum to one (SLN does not renormalise)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def add_label_noise(targets: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """`targets + sigma * N(0, I_K)`, fresh every call (paper Sec. 3; sigma 0 returns the targets as they are)."""
    if sigma == 0:
        return targets
    noise = torch.randn(targets.shape, generator=generator, device=targets.device, dtype=targets.dtype)
    return targets + sigma * noise


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
