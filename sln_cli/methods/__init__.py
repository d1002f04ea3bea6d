"""Training methods in the same harness: SLN and the baselines it is compared with, one small module each.

`catalog` (torch-free) is the registry: one `MethodSpec` per method (paper, defaults, bounds, rules, class);
`build_method` makes the one a
resolved `method` config section names. The training step calls the `Method` interface of `base`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from sln_cli.errors import SlnError
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
    """The config with what only the training labels can tell: co-teaching's default forget rate is their
    realised noise rate (Han et al. take the noise rate as known). Open-set labels keep every label (images
    are replaced instead; `replaced` is the label set's source_index, -1 = own image), so their noise rate is the
    label set's stated fraction (the manifest's `requested_noise_rate`, else the fraction replaced), as the
    official code takes `--noise_rate`. DivideMix's per-noise-setting defaults. Recorded in the run's config.yaml."""
    method = config.method
    if method.name == "dividemix":
        from sln_cli.methods.dividemix_defaults import settle_dividemix

        return settle_dividemix(config, noisy, clean)
    if method.name != "coteaching" or method.forget_rate is not None:
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


def display_name(config: Config, weights: str) -> str:
    """The run's method as reports name it (CE, SLN, SLN-MO, SLN-MO-LC, GCE, GCE-MO, ..., +SAM); weights raw/ema."""
    # a correction at or past the last epoch never ran (refused by `sln train` now): no -LC
    correcting = config.sln.correction is not None and config.sln.correction < config.optim.epochs
    return _display_name(config.method.name, config.sln.sigma, ema=weights == "ema", correction=correcting,
                         sam=config.method.sam)
