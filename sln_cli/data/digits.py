"""scikit-learn's bundled 8×8 handwritten digits (1,797 images): a tiny offline dataset for smoke runs and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sln_cli.data import Dataset, Split

TEST_SIZE = 500  # the rest (1,297) is the train split


def load_digits() -> Dataset:
    """Digits as uint8 N×1×8×8, with a fixed stratified 1,297 / 500 split (the same on every machine)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    # Pixels are counts 0..16 of a 4×4 block of the original 32×32 bitmap; stretch them to 0..255.
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    labels = bunch.target.astype(np.int64)
    train_pixels, test_pixels, train_labels, test_labels = train_test_split(
        pixels, labels, test_size=TEST_SIZE, stratify=labels, random_state=0
    )
    # One channel: mean and std over every train pixel, on the [0, 1] scale the model sees.
    scaled = train_pixels.astype(np.float64) / 255.0
    return Dataset(
        name="digits",
        classes=tuple(str(digit) for digit in range(10)),
        train=Split(labels=train_labels, images=torch.from_numpy(np.ascontiguousarray(train_pixels[:, None]))),
        test=Split(labels=test_labels, images=torch.from_numpy(np.ascontiguousarray(test_pixels[:, None]))),
        val=None,
        mean=(float(scaled.mean()),),
        std=(float(scaled.std()),),
    )


def read_digits(data_dir: Path, download: bool) -> Dataset:
    return load_digits()  # bundled with scikit-learn: nothing to read or download
