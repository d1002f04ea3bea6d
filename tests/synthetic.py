"""Tiny synthetic datasets in the real on-disk formats, written into a test's tmp_path; deterministic per seed.

Every test of the project may import these. `cifar_arrays` gives back exactly what `write_cifar10/100` wrote.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    """Writes protocol 2 as Python 2's cPickle did for the CIFAR release: str and bytes alike as byte strings,
    numpy's reconstructor under its old module name `numpy.core.multiarray`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_byte_string(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_byte_string
    dispatch[bytes] = _save_byte_string

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if getattr(obj, "__name__", None) == "_reconstruct" and "numpy" in getattr(obj, "__module__", ""):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def python2_pickle(obj: Any) -> bytes:
    """`obj` pickled the way the official CIFAR files were (Python 2, protocol 2)."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_arrays(
    num_classes: int, n_train: int, n_test: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels): uint8 N×3×32×32 and int64, every class in train."""
    if n_train < num_classes:
        raise ValueError(f"n_train must be at least num_classes ({num_classes}) so that every class appears")
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_train + n_test, 3, 32, 32), dtype=np.uint8)
    train_labels = rng.permutation(np.arange(n_train) % num_classes).astype(np.int64)
    test_labels = rng.integers(0, num_classes, size=n_test).astype(np.int64)
    return images[:n_train], train_labels, images[n_train:], test_labels


def cifar100_superclass(seed: int = 0) -> np.ndarray:
    """The synthetic fine -> coarse map `write_cifar100` uses: 5 fine classes per coarse class, shuffled."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(20), 5)).astype(np.int64)


def _cifar_batch(images: np.ndarray, labels: dict[bytes, np.ndarray], batch_label: str) -> dict[bytes, Any]:
    return {
        b"batch_label": batch_label.encode(),
        **{key: [int(label) for label in value] for key, value in labels.items()},  # the release stores lists
        b"data": np.ascontiguousarray(images.reshape(len(images), 3072)),  # channel-major rows, uint8
        b"filenames": [f"synthetic_{i}.png".encode() for i in range(len(images))],
    }


def write_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """`root/cifar-10-batches-py/` with data_batch_1..5, test_batch and batches.meta; returns `root`."""
    train_images, train_labels, test_images, test_labels = cifar_arrays(10, n_train, n_test, seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for number, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        batch = _cifar_batch(train_images[part], {b"labels": train_labels[part]}, f"training batch {number} of 5")
        (folder / f"data_batch_{number}").write_bytes(python2_pickle(batch))
    test = _cifar_batch(test_images, {b"labels": test_labels}, "testing batch 1 of 1")
    (folder / "test_batch").write_bytes(python2_pickle(test))
    meta = {b"label_names": [name.encode() for name in CIFAR10_NAMES], b"num_cases_per_batch": 10000, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(python2_pickle(meta))
    return Path(root)


def write_cifar100(root: Path, n_train: int = 100, n_test: int = 20, seed: int = 0) -> Path:
    """`root/cifar-100-python/` with train, test and meta (fine and coarse labels); returns `root`."""
    train_images, train_labels, test_images, test_labels = cifar_arrays(100, n_train, n_test, seed)
    superclass = cifar100_superclass(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        batch = _cifar_batch(images, {b"fine_labels": labels, b"coarse_labels": superclass[labels]}, name)
        (folder / name).write_bytes(python2_pickle(batch))
    meta = {
        b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(python2_pickle(meta))
    return Path(root)


def _write_image(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)  # H×W×3
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def write_imagefolder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "emu"),
    n_train: int = 3,
    n_test: int = 2,
    n_val: int = 0,
    size: tuple[int, int] = (12, 10),
    seed: int = 0,
) -> Path:
    """`root/{train,test[,val]}/<class>/img_<i>.png`, `n_*` lossless random RGB images per class (width×height
    `size`); returns `root`."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test), ("val", n_val)):
        for name in classes:
            for i in range(count):
                _write_image(Path(root) / split / name / f"img_{i}.png", rng, size)
    return Path(root)


def write_clothing1m(
    root: Path,
    n_train: int = 28,
    n_val: int = 14,
    n_test: int = 14,
    layout: str = "lists",
    size: tuple[int, int] = (16, 16),
    seed: int = 0,
) -> Path:
    """Tiny JPEGs under `root/images/` and the annotations in `root/annotations/`; returns `root`.

    layout "lists": noisy_train.txt, clean_val.txt, clean_test.txt ('<path> <label>' lines, as the SLN code reads);
    layout "release": the official *_label_kv.txt + *_key_list.txt files. Labels cycle through all 14 classes.
    """
    rng = np.random.default_rng(seed)
    annotations = Path(root) / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    entries: dict[str, list[tuple[str, int]]] = {}
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        labels = rng.permutation(np.arange(count) % 14)
        entries[split] = [(f"images/{split}/{i % 3}/{i}.jpg", int(label)) for i, label in enumerate(labels)]
        for relative, _ in entries[split]:
            _write_image(Path(root) / relative, rng, size)
    if layout == "lists":
        for split, name in (("train", "noisy_train.txt"), ("val", "clean_val.txt"), ("test", "clean_test.txt")):
            (annotations / name).write_text("".join(f"{path} {label}\n" for path, label in entries[split]))
    elif layout == "release":
        # The release's kv files hold more images than its key lists (clean_label_kv covers val and test and more).
        (annotations / "noisy_label_kv.txt").write_text(
            "".join(f"{p} {label}\n" for p, label in entries["train"] + [("images/unused/0.jpg", 3)])
        )
        (annotations / "clean_label_kv.txt").write_text(
            "".join(f"{p} {label}\n" for p, label in entries["test"] + entries["val"])
        )
        for split, name in (("train", "noisy_train"), ("val", "clean_val"), ("test", "clean_test")):
            (annotations / f"{name}_key_list.txt").write_text("".join(f"{p}\n" for p, _ in entries[split]))
    else:
        raise ValueError(f"layout must be 'lists' or 'release', not {layout!r}")
    return Path(root)


def clothing1m_entries(root: Path, split: str) -> list[tuple[str, int]]:
    """(relative path, label) of a split written by `write_clothing1m` with layout "lists"."""
    name = {"train": "noisy_train.txt", "val": "clean_val.txt", "test": "clean_test.txt"}[split]
    lines = (Path(root) / "annotations" / name).read_text().splitlines()
    return [(path, int(label)) for path, label in (line.split() for line in lines)]


def write_animal10n(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """`root/training/<label>_<id>.jpg` and `root/testing/...`, 64×64 JPEGs as the authors distribute Animal-10N;
    labels cycle through the 10 classes, ids (3i + 1, zero-padded) are unique per split and unrelated to the
    label; returns `root`."""
    rng = np.random.default_rng(seed)
    for folder, count in (("training", n_train), ("testing", n_test)):
        for i in range(count):
            _write_image(Path(root) / folder / f"{i % 10}_{3 * i + 1:05d}.jpg", rng, (64, 64))
    return Path(root)


def write_webvision(root: Path, n_train: int = 24, n_val: int = 12, n_imagenet: int = 2, imagenet: str = "synsets",
                    seed: int = 0) -> Path:
    """WebVision 1.0's layout: info/train_filelist_google.txt (`google/qNNNN/ID.jpg label`), info/val_filelist.txt
    (`valNNNNNN.jpg label`, images in val_images_256/), info/synsets.txt (1000 synsets), and the ILSVRC12 validation
    images of the first 50 classes in imagenet/val/ by `imagenet` layout: "synsets" (n…/ folders), "labels"
    (0/..49/), "list" (val.txt), or "none". Labels cycle over 0..59, so some lie outside mini-WebVision."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "info").mkdir(parents=True, exist_ok=True)
    synsets = [f"n{10000000 + 7 * k:08d}" for k in range(1000)]
    (root / "info" / "synsets.txt").write_text("".join(f"{s} class number {k}\n" for k, s in enumerate(synsets)))
    train = [(f"google/q{label + 1:04d}/{i:06d}.jpg", label) for i, label in enumerate(np.arange(n_train) % 60)]
    val = [(f"val{i + 1:06d}.jpg", label) for i, label in enumerate(np.arange(n_val) % 60)]
    for relative, _ in train:
        _write_image(root / relative, rng, (20, 16))
    for relative, _ in val:
        _write_image(root / "val_images_256" / relative, rng, (20, 16))
    (root / "info" / "train_filelist_google.txt").write_text("".join(f"{p} {label}\n" for p, label in train))
    (root / "info" / "val_filelist.txt").write_text("".join(f"{p} {label}\n" for p, label in val))
    folder = root / "imagenet" / "val"
    entries = [(label, i) for label in range(50) for i in range(n_imagenet)]
    if imagenet in ("synsets", "labels"):
        for label, i in entries:
            name = synsets[label] if imagenet == "synsets" else str(label)
            _write_image(folder / name / f"ILSVRC2012_val_{label * n_imagenet + i:08d}.JPEG", rng, (20, 16))
    elif imagenet == "list":
        for label, i in entries:
            _write_image(folder / f"ILSVRC2012_val_{label * n_imagenet + i:08d}.JPEG", rng, (20, 16))
        lines = [f"ILSVRC2012_val_{label * n_imagenet + i:08d}.JPEG {label}\n" for label, i in entries]
        (folder / "val.txt").write_text("".join(lines + ["ILSVRC2012_val_99999999.JPEG 700\n"]))
    elif imagenet != "none":
        raise ValueError(f"imagenet must be synsets, labels, list or none, not {imagenet!r}")
    return root
