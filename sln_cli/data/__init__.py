"""Dataset readers: one `load_dataset(name, data_dir)` in front of the readers the registry names
(`registry.py`: cifar10, cifar100, digits, imagefolder, clothing1m, animal10n, webvision-mini).

Small datasets come back in memory as uint8 N×C×H×W tensors; large ones as file lists decoded lazily (`files.py`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from sln_cli import plugins
from sln_cli.data import registry
from sln_cli.data.registry import REGISTRY, canonical
from sln_cli.errors import SlnError

if TYPE_CHECKING:  # the package itself stays torch-free: the config reads `registry` through it
    import torch


class FileList(Sequence[Path]):
    """`root / relative[i]` built on access: a million `Path` objects would cost seconds and ~0.5 GB up front."""

    def __init__(self, root: Path, relative: Sequence[str]) -> None:
        self.root = Path(root)
        self.relative = relative

    def __len__(self) -> int:
        return len(self.relative)

    @overload
    def __getitem__(self, index: int) -> Path: ...
    @overload
    def __getitem__(self, index: slice) -> FileList: ...
    def __getitem__(self, index: int | slice) -> Path | FileList:
        if isinstance(index, slice):
            return FileList(self.root, self.relative[index])
        return self.root / self.relative[index]

    def __iter__(self) -> Iterator[Path]:
        return (self.root / relative for relative in self.relative)

    def __repr__(self) -> str:
        return f"FileList({str(self.root)!r}, {len(self)} files)"


# eq=False: the generated __eq__/__hash__ would compare numpy arrays field by field, which raises.
@dataclass(frozen=True, eq=False)
class Split:
    labels: np.ndarray  # int64 (N,)
    images: torch.Tensor | None = None  # uint8 N×C×H×W (in-memory datasets)
    files: Sequence[Path] | None = None  # file-backed datasets, decoded lazily (a tuple or a FileList)

    def __post_init__(self) -> None:
        if (self.images is None) == (self.files is None):
            raise ValueError("a Split holds either images or files, exactly one of them")
        if self.labels.dtype != np.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} {self.labels.shape}")
        count = len(self.images) if self.images is not None else len(self.files)  # type: ignore[arg-type]
        if count != len(self.labels):
            raise ValueError(f"{count} images but {len(self.labels)} labels")
        if self.images is not None:
            import torch  # loaded already (the images are a tensor); the package's import stays torch-free

            if self.images.dtype != torch.uint8 or self.images.ndim != 4:
                raise ValueError(f"images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split
    val: Split | None
    mean: tuple[float, ...]  # per-channel normalisation on [0, 1] pixels
    std: tuple[float, ...]
    superclass: np.ndarray | None = None  # CIFAR-100: coarse class of each fine class (K,)
    # Further test sets, by name (mini-WebVision: "ilsvrc12"); `sln evaluate --split NAME` measures them.
    extra_tests: Mapping[str, Split] = field(default_factory=dict)
    # imagefolder: the median shorter side of (a sample of) its training images, which sets the default input size
    image_side: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_memory(self) -> bool:
        """True when every split is a uint8 tensor (CIFAR, digits); False for file-backed datasets."""
        return self.train.in_memory


def load_dataset(name: str, data_dir: Path | None = None, *, download: bool = False) -> Dataset:
    """Read dataset `name` from `data_dir` (or its default folder); `download` fetches it if missing and it can be."""
    key = canonical(name)
    spec = REGISTRY.get(key)
    if spec is None:
        choices = tuple(REGISTRY)
        raise SlnError(f"unknown dataset {name!r}{_did_you_mean(key, choices)}; choose one of {', '.join(choices)}")
    if download and not spec.downloadable:
        raise SlnError(f"{key} cannot be downloaded automatically; drop --download (data.download) and pass "
                       "--data-dir to your copy")
    if spec.needs_files and data_dir is None:
        if spec.default_dir is None:
            raise SlnError(f"{key} needs --data-dir: {spec.layout}")
        data_dir = spec.default_dir
    return spec.load(Path(data_dir).expanduser() if data_dir is not None else None, download)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# $SLN_DATASETS: datasets defined outside sln_cli. Loaded here, once Dataset and Split exist, because a plugin
# imports them (and importing the registry always runs this package first).
plugins.load(registry.PLUGINS_ENV)
