"""A dataset in one file, as docs/ARCHITECTURE.md's "How to add a dataset" says: named in $SLN_DATASETS, it
registers itself (tests/test_new_dataset.py trains it through `sln train`).

Stripes: 8×8 grey images whose class is the row of a bright bar, with pixel noise; 4 classes, learnable in a few
epochs by the quick start's CNN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sln_cli.data import Dataset, Split
from sln_cli.data.registry import DatasetSpec, register

CLASSES = 4


def read_stripes(data_dir: Path, download: bool) -> Dataset:
    rng = np.random.default_rng(0)

    def split(count: int) -> Split:
        labels = rng.integers(0, CLASSES, size=count).astype(np.int64)
        pixels = rng.integers(0, 60, size=(count, 1, 8, 8))
        pixels[np.arange(count), 0, 2 * labels, :] = 255  # the bar: row 0, 2, 4 or 6
        return Split(labels=labels, images=torch.from_numpy(pixels.astype(np.uint8)))

    return Dataset(name="stripes", classes=tuple(f"row {2 * k}" for k in range(CLASSES)), train=split(400),
                   test=split(100), val=None, mean=(0.2,), std=(0.3,))


SPEC = register(DatasetSpec("stripes", "toy_dataset:read_stripes", needs_files=False))
