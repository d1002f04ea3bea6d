"""Training methods in the same harness: SLN and the baselines it is compared with, one small module each.

`catalog` (torch-free) lists them with papers and per-dataset defaults; `build_method` makes the one a
resolved `method` config section names. The training step calls the `Method` interface of `base`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sln_cli.config import MethodConfig
    from sln_cli.methods.base import Method, MethodContext

_CLASSES = {  # method name -> "module:Class" under sln_cli.methods, imported on demand (torch)
    "sln": "base:SoftCrossEntropy", "ce": "base:SoftCrossEntropy", "gce": "gce:GeneralizedCrossEntropy",
    "sce": "sce:SymmetricCrossEntropy", "nce-rce": "apl:NormalizedPlusReverse", "ls": "smoothing:LabelSmoothing",
    "bootstrap-soft": "bootstrap:SoftBootstrapping", "bootstrap-hard": "bootstrap:HardBootstrapping",
    "forward": "forward:ForwardCorrection", "elr": "elr:EarlyLearningRegularization",
    "coteaching": "coteaching:CoTeaching",
}


def build_method(settings: MethodConfig, context: MethodContext) -> Method:
    """The method a resolved `method` section names, with its hyperparameters, ready for the training step."""
    module, name = _CLASSES[settings.name].split(":")
    return getattr(importlib.import_module(f"sln_cli.methods.{module}"), name)(settings, context)
