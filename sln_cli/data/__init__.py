"""Dataset readers: one `load_dataset(name, data_dir)` in front of cifar10, cifar100, digits, imagefolder, clothing1m,
animal10n and webvision-mini.

Small datasets come back in memory as uint8 N×C×H×W tensors; large ones as file lists decoded lazily (`files.py`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np
import torch

from sln_cli.errors import SlnError

DATASETS: tuple[str, ...] = (
    "cifar10", "cifar100", "digits", "imagefolder", "clothing1m", "animal10n", "webvision-mini",
)
# Read from files the user must fetch: no --download.
_NOT_DOWNLOADABLE = ("imagefolder", "clothing1m", "animal10n", "webvision-mini")

# Where each dataset is looked for when no --data-dir is given: the official SLN code's `--datapath` defaults
# (`data/CIFAR10`, `data/Clothing1M`), relative to the working directory.
DEFAULT_DATA_DIRS: dict[str, Path] = {
    "cifar10": Path("data/CIFAR10"),
    "cifar100": Path("data/CIFAR100"),
    "clothing1m": Path("data/Clothing1M"),
    "animal10n": Path("data/Animal-10N"),
    "webvision-mini": Path("data/WebVision"),
}


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
        if self.images is not None and (self.images.dtype != torch.uint8 or self.images.ndim != 4):
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
    """Read dataset `name` from `data_dir` (or its default folder); `download` fetches CIFAR archives if missing."""
    key = _canonical(name)
    if key not in DATASETS:
        raise SlnError(f"unknown dataset {name!r}{_did_you_mean(key, DATASETS)}; choose one of {', '.join(DATASETS)}")
    if download and key in _NOT_DOWNLOADABLE:
        raise SlnError(f"{key} cannot be downloaded automatically; drop --download (data.download) and pass "
                       "--data-dir to your copy")
    if key == "digits":  # bundled with scikit-learn: nothing to read or download
        from sln_cli.data.digits import load_digits

        return load_digits()
    if data_dir is None:
        if key == "imagefolder":
            raise SlnError("imagefolder needs --data-dir: a folder holding train/<class>/ and test/<class>/")
        data_dir = DEFAULT_DATA_DIRS[key]
    data_dir = Path(data_dir).expanduser()
    if key in ("cifar10", "cifar100"):
        from sln_cli.data.cifar import load_cifar

        return load_cifar(key, data_dir, download=download)
    if key == "imagefolder":
        from sln_cli.data.imagefolder import load_imagefolder

        return load_imagefolder(data_dir)
    if key == "animal10n":
        from sln_cli.data.animal10n import load_animal10n

        return load_animal10n(data_dir)
    if key == "webvision-mini":
        from sln_cli.data.webvision import load_webvision_mini

        return load_webvision_mini(data_dir)
    from sln_cli.data.clothing1m import load_clothing1m

    return load_clothing1m(data_dir)


def _canonical(name: str) -> str:
    """`CIFAR-10`, `cifar_10`, `Animal-10N`, `webvision_mini` -> the registered spelling (when there is one)."""
    squeeze = name.strip().lower().replace("-", "").replace("_", "")
    return next((known for known in DATASETS if known.replace("-", "") == squeeze), squeeze)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
