"""Training methods in the same harness: SLN and the baselines it is compared with, one small module each.

`catalog` (torch-free) is the registry: one `MethodSpec` per method (paper, defaults, bounds, rules, class);
`build_method` makes the one a
resolved `method` config section names. The training step calls the `Method` interface of `base`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sln_cli.methods.catalog import METHODS, settings_of
from sln_cli.methods.catalog import display_name as _display_name

__all__ = ["build_method", "display_name", "settings_of", "settle"]

if TYPE_CHECKING:
    import numpy as np

    from sln_cli.config import Config, MethodConfig
    from sln_cli.methods.base import Method, MethodContext

def build_method(settings: MethodConfig, context: MethodContext) -> Method:
    """The method a resolved `method` section names, with its hyperparameters, ready for the training step."""
    module, name = METHODS[settings.name].factory.split(":")
    return getattr(importlib.import_module(module), name)(settings, context)


def settle(config: Config, noisy: np.ndarray, clean: np.ndarray | None, *,
           manifest: dict | None = None, replaced: np.ndarray | None = None) -> Config:
    """The config with what only the training labels can tell (the method's `MethodSpec.settle`: co-teaching's
    forget rate, DivideMix's per-noise-setting defaults); recorded in the run's config.yaml."""
    hook = METHODS[config.method.name].settle
    if not hook:
        return config
    module, name = hook.split(":")
    return getattr(importlib.import_module(module), name)(config, noisy, clean, manifest=manifest, replaced=replaced)


def display_name(config: Config, weights: str) -> str:
    """The run's method as reports name it (CE, SLN, SLN-MO, SLN-MO-LC, GCE, GCE-MO, ..., +SAM); weights raw/ema."""
    # a correction at or past the last epoch never ran (refused by `sln train` now): no -LC
    correcting = config.sln.correction is not None and config.sln.correction < config.optim.epochs
    return _display_name(config.method.name, config.sln.sigma, ema=weights == "ema", correction=correcting,
                         sam=config.method.sam)
