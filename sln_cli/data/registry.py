"""The dataset registry: one `DatasetSpec` per dataset (its name, its reader, where it is looked for, whether it
can be downloaded). Torch-free, so the config can check `data.dataset` without loading any reader.

Adding a dataset is a reader module in `sln_cli/data/` (a function `(data_dir, download) -> Dataset`) and one
`DatasetSpec` line in `BUILT_IN`; outside sln_cli, one module that calls `register` and is named in $SLN_DATASETS
(docs/ARCHITECTURE.md, "How to add a dataset"; tests/test_new_dataset.py follows it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sln_cli.data import Dataset

Reader = Callable[[Path, bool], "Dataset"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # the one spelling of `data.dataset` (`CIFAR-10`, `cifar_10` are read as `cifar10`)
    reader: str  # "module:function", imported on first use; the function takes (data_dir, download)
    # Where it is looked for without --data-dir (the official SLN code's `--datapath` defaults, relative to the
    # working directory); None with `needs_files`: the user must say where (imagefolder)
    default_dir: Path | None = None
    downloadable: bool = False  # `data.download` fetches it (with its checksum)
    needs_files: bool = True  # False: bundled, nothing to read (digits)
    layout: str = "the folder holding it"  # what --data-dir must hold, for the error without a default folder

    def load(self, data_dir: Path | None, download: bool) -> Dataset:
        module, function = self.reader.split(":")
        reader: Reader = getattr(importlib.import_module(module), function)
        return reader(data_dir if data_dir is not None else Path(), download)


BUILT_IN = (
    DatasetSpec("cifar10", "sln_cli.data.cifar:read_cifar10", Path("data/CIFAR10"), downloadable=True),
    DatasetSpec("cifar100", "sln_cli.data.cifar:read_cifar100", Path("data/CIFAR100"), downloadable=True),
    DatasetSpec("digits", "sln_cli.data.digits:read_digits", needs_files=False),
    DatasetSpec("imagefolder", "sln_cli.data.imagefolder:read_imagefolder",
                layout="a folder holding train/<class>/ and test/<class>/"),
    DatasetSpec("clothing1m", "sln_cli.data.clothing1m:read_clothing1m", Path("data/Clothing1M")),
    DatasetSpec("animal10n", "sln_cli.data.animal10n:read_animal10n", Path("data/Animal-10N")),
    DatasetSpec("webvision-mini", "sln_cli.data.webvision:read_webvision_mini", Path("data/WebVision")),
)
REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in BUILT_IN}
PLUGINS_ENV = "SLN_DATASETS"  # comma-separated modules `sln_cli.data` imports (plugins.load); each calls `register`


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset (a plugin named in $SLN_DATASETS, a test); a name may be registered once."""
    if canonical(spec.name) in REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def canonical(name: str) -> str:
    """`CIFAR-10`, `cifar_10`, `Animal-10N`, `webvision_mini` -> the registered spelling (when there is one)."""
    squeeze = name.strip().lower().replace("-", "").replace("_", "")
    return next((known for known in REGISTRY if known.replace("-", "") == squeeze), squeeze)

