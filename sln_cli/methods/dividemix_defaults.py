"""DivideMix's defaults that depend on the noise setting (lambda_u, p_threshold, the GMM's loss window, the
warm-up penalty), filled once the training labels are known. Torch-free.

Li, Socher & Hoi, ICLR 2020: Sec. 4.1 and the appendix's lambda_u per setting; official code
LiJunnan1992/DivideMix `Train_CIFAR.py` @ 39740b267147466bac0779de91d969909ab3b65f.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from sln_cli.errors import SlnError

if TYPE_CHECKING:
    from sln_cli.config import Config

# lambda_u by symmetric noise rate, as the paper's appendix lists it; CIFAR-10's asymmetric 40%: 0. The appendix was
# not read here: CIFAR-10's values match Kthyeon/FINE_official DivideMix/dynamic_test.sh (docs/dividemix.md).
LAMBDA_U = {"cifar10": {0.2: 0.0, 0.5: 25.0, 0.8: 25.0, 0.9: 50.0},
            "cifar100": {0.2: 25.0, 0.5: 150.0, 0.8: 150.0, 0.9: 150.0}}
HIGH_NOISE = 0.9  # Sec. 4.1: p_threshold 0.6 instead of 0.5; eval_train: the GMM fits the last 5 epochs' mean loss
UNKNOWN_RATE = 0.5  # labels without true labels or a stated rate: the paper's middle setting


def noise_rate(config: Config, noisy: np.ndarray, clean: np.ndarray | None) -> float:
    """The requested rate of generated noise; else the labels' realised rate; else UNKNOWN_RATE."""
    noise = config.noise
    if noise.labels is None and noise.mode != "none":
        return noise.rate
    return float((noisy != clean).mean()) if clean is not None else UNKNOWN_RATE


def default_lambda_u(dataset: str, mode: str, rate: float) -> float:
    """The appendix's value at the nearest listed rate (CIFAR-10's table for other datasets); asym noise on
    anything but CIFAR-100 takes CIFAR-10's asym value 0 (the paper lists no CIFAR-100 asym setting)."""
    if mode.startswith("asym") and dataset != "cifar100":
        return 0.0
    table = LAMBDA_U["cifar100" if dataset == "cifar100" else "cifar10"]
    nearest = min(table, key=lambda listed: (abs(listed - rate), listed))
    return table[nearest]


def settle_dividemix(config: Config, noisy: np.ndarray, clean: np.ndarray | None, *, manifest: dict | None = None,
                     replaced: np.ndarray | None = None) -> Config:
    method = config.method
    if len(noisy) < config.optim.batch_size:
        raise SlnError(f"method dividemix needs at least one batch of training samples: {len(noisy)} samples, "
                       f"optim.batch_size {config.optim.batch_size}; lower the batch size or raise data.train_limit")
    rate = noise_rate(config, noisy, clean)
    high = rate >= HIGH_NOISE - 0.05  # the nearest listed setting is 90%
    filled: dict[str, Any] = {
        "lambda_u": default_lambda_u(config.data.dataset, config.noise.mode, rate),
        "p_threshold": 0.6 if high else 0.5,
        "gmm_window": 5 if high else 1,
        "warmup_penalty": config.noise.labels is None and config.noise.mode.startswith("asym"),
    }
    values = {key: value for key, value in filled.items() if getattr(method, key) is None}
    return dataclasses.replace(config, method=dataclasses.replace(method, **values))
