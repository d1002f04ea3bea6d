"""CIFAR-10 / CIFAR-100 read straight from the python release (`cifar-10-batches-py/`, `cifar-100-python/`).

No md5 gate (re-encoded copies load); the pickles go through a restricted unpickler that only builds numpy arrays.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from sln_cli.data import Dataset, Split
from sln_cli.errors import SlnError

# How each command fetches a missing archive (train/evaluate/analyze read `data.download` from the config).
_FETCH = "`--set data.download=true` on sln train, `--download` on sln corrupt"


@dataclass(frozen=True)
class _Release:
    title: str  # as the user knows it, for messages
    folder: str  # what the official archive extracts to
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    url: str  # the official archive, with torchvision's md5 of it
    md5: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


# Normalisation constants exactly as the official SLN code (chenpf1025/SLN dataset.py) uses them:
# CIFAR-10  mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010);
# CIFAR-100 mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565, 0.2761).
_RELEASES = {
    "cifar10": _Release(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
    ),
    "cifar100": _Release(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        mean=(0.5071, 0.4867, 0.4408),
        std=(0.2675, 0.2565, 0.2761),
    ),
}


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name, mapped to the objects (no import of the deprecated numpy.core)."""
    try:
        from numpy._core import multiarray, numeric  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):  # the release names numpy.core; numpy 2 re-pickles name numpy._core
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct  # ndarray, protocol <= 4
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar  # numpy integer labels in a re-encoded copy
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]  # private, unstubbed; protocol 5
    # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocol 2; it only builds a bytes object.
    import _codecs

    allowed[("_codecs", "encode")] = _codecs.encode
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except the few numpy constructors above, so a hostile file cannot run code."""

    allowed = _numpy_globals()

    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # the release is a Python 2 pickle: its str become bytes
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise SlnError(
                f"{self.path} refers to {module}.{name}, which a CIFAR file never does; "
                "refusing to load it: replace it with a copy of the official release"
            ) from None


def read_pickle(path: Path) -> Any:
    """Unpickle a CIFAR file with bytes keys (`encoding="bytes"`, as the Python 2 release needs)."""
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, path).load()
    except SlnError:
        raise
    except Exception as exc:  # a corrupt pickle can raise almost any exception type (EOF, struct, Unicode, ...)
        raise SlnError(
            f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); "
            "replace it with a copy of the official release (delete the folder and let sln fetch it: " + _FETCH + ")"
        ) from exc


def load_cifar(name: str, data_dir: Path, *, download: bool = False) -> Dataset:
    """CIFAR-10 or CIFAR-100 from `data_dir` (the folder holding the batches folder, or the batches folder)."""
    release = _RELEASES[name]
    folder = _find_folder(release, data_dir)
    if _missing(release, folder) and download:
        _download(release, data_dir)
        folder = _find_folder(release, data_dir)
    missing = _missing(release, folder)
    if missing:
        raise SlnError(
            f"no {release.title} found in {data_dir}: expected {release.folder}/{_expected(release)} "
            f"(missing: {', '.join(missing)}); pass --data-dir to the folder that holds them, or let sln fetch it: "
            + _FETCH
        )
    meta = _read_dict(folder / release.meta_file, (release.names_key,))
    classes = tuple(_text(label_name) for label_name in meta[release.names_key])
    if len(classes) != release.num_classes:
        raise SlnError(
            f"{folder / release.meta_file} lists {len(classes)} class names, not {release.num_classes}; "
            "replace it with a copy of the official release"
        )
    train_batches = [_read_batch(folder / file, release) for file in release.train_files]
    test_batch = _read_batch(folder / release.test_file, release)
    train = _split(train_batches, release.label_key)
    test = _split([test_batch], release.label_key)
    superclass = None
    if name == "cifar100":
        superclass = _superclass(train_batches + [test_batch], folder)
    return Dataset(name, classes, train, test, None, release.mean, release.std, superclass)


def _expected(release: _Release) -> str:
    if release.train_files == ("train",):
        return f"train, test and {release.meta_file}"
    return f"data_batch_1..{len(release.train_files)}, {release.test_file} and {release.meta_file}"


def _find_folder(release: _Release, data_dir: Path) -> Path:
    """`data_dir/<release folder>` when it exists, else `data_dir` itself (the user pointed at the batches)."""
    nested = data_dir / release.folder
    if nested.is_dir() or not (data_dir / release.test_file).is_file():
        return nested
    return data_dir


def _missing(release: _Release, folder: Path) -> list[str]:
    names = (*release.train_files, release.test_file, release.meta_file)
    return [file for file in names if not (folder / file).is_file()]


def _download(release: _Release, data_dir: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # Checksummed against the official archive, as torchvision does; extracts to data_dir/<release folder>.
        download_and_extract_archive(release.url, str(data_dir), filename=Path(release.url).name, md5=release.md5)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad md5 is a RuntimeError
        raise SlnError(
            f"could not download {release.title} from {release.url} ({exc}); check the network, "
            f"or download and extract the archive into {data_dir} yourself"
        ) from exc


def _read_dict(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    content = read_pickle(path)
    if isinstance(content, dict):  # re-encoded copies pickled under Python 3 have str keys
        content = {key.encode() if isinstance(key, str) else key: value for key, value in content.items()}
    if not isinstance(content, dict) or any(key not in content for key in keys):
        wanted = ", ".join(key.decode() for key in keys)
        raise SlnError(
            f"{path} is not a CIFAR file (expected a dict with {wanted}); "
            "replace it with a copy of the official release"
        )
    return content


def _read_batch(path: Path, release: _Release) -> dict[bytes, Any]:
    keys = (b"data", release.label_key) + ((b"coarse_labels",) if release.num_classes == 100 else ())
    batch = _read_dict(path, keys)
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise SlnError(f"{path}: data must be uint8 rows of 3072 bytes, found {found}; replace the file")
    for key in keys[1:]:
        labels = np.asarray(batch[key])
        limit = release.num_classes if key == release.label_key else 20  # CIFAR-100 has 20 coarse classes
        well_formed = labels.shape == (len(data),) and labels.dtype.kind in "iu"
        if not well_formed or labels.min(initial=0) < 0 or labels.max(initial=0) >= limit:
            raise SlnError(f"{path}: {key.decode()} must be {len(data)} integers in 0..{limit - 1}; replace the file")
        batch[key] = labels.astype(np.int64)
    return batch


def _split(batches: list[dict[bytes, Any]], label_key: bytes) -> Split:
    # Rows are 3072 bytes, channel-major (1024 red, 1024 green, 1024 blue), so a reshape gives N×3×32×32.
    data = np.concatenate([batch[b"data"] for batch in batches])  # a fresh, writable copy
    labels = np.concatenate([batch[label_key] for batch in batches])
    return Split(labels=labels, images=torch.from_numpy(data.reshape(-1, 3, 32, 32)))


def _superclass(batches: list[dict[bytes, Any]], folder: Path) -> np.ndarray:
    """Coarse class of each fine class, read off the samples; -1 for a fine class no sample shows."""
    fine = np.concatenate([batch[b"fine_labels"] for batch in batches])
    coarse = np.concatenate([batch[b"coarse_labels"] for batch in batches])
    superclass = np.full(100, -1, dtype=np.int64)
    superclass[fine] = coarse
    if not np.array_equal(superclass[fine], coarse):
        raise SlnError(f"{folder}: a fine class appears under two coarse classes; replace it with the official release")
    return superclass


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_cifar10(data_dir: Path, download: bool) -> Dataset:
    return load_cifar("cifar10", data_dir, download=download)


def read_cifar100(data_dir: Path, download: bool) -> Dataset:
    return load_cifar("cifar100", data_dir, download=download)
