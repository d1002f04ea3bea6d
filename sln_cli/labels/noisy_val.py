"""The noisy validation split (`data.noisy_val`): samples of the noisy training set held out before training,
stratified by their noisy label and drawn from their own seed, the paper's way to choose sigma without clean labels
(Chen et al., ICLR 2021, Sec. 5.1: 5,000 noisy validation samples). Recorded in the run as `noisy_val.csv`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sln_cli.errors import SlnError
from sln_cli.rundir import intcsv
from sln_cli.rundir.files import atomic_write_text

FILE = "noisy_val.csv"  # header `index`: positions of the held-out samples in the dataset's full training split
_MAX_BYTES = 64 << 20  # 64 MiB: ~6M indices, beyond any training set sln reads


def holdout_count(value: float, size: int) -> int:
    """The samples `data.noisy_val` holds out of `size`: a count (>= 1) or a fraction in (0, 1)."""
    if value <= 0:
        raise SlnError(f"data.noisy_val must be a count >= 1 or a fraction in (0, 1), got {value:g}")
    if value < 1:
        count = round(value * size)
    elif value != math.floor(value):
        raise SlnError(f"data.noisy_val={value:g} is neither a whole count nor a fraction below 1")
    else:
        count = int(value)
    if count >= size:
        raise SlnError(f"data.noisy_val={value:g} holds out {count} of the {size} training samples; "
                       "hold out fewer (e.g. a fraction such as 0.1)")
    if count < 1:
        raise SlnError(f"data.noisy_val={value:g} holds out no sample of the {size}; give a larger fraction or a count")
    return count


def split(noisy: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted positions in `noisy` of `count` samples held out, stratified by noisy label (scikit-learn's
    `train_test_split`: per-class counts proportional to the class sizes), drawn from `seed` alone."""
    from sklearn.model_selection import train_test_split

    classes, sizes = np.unique(noisy, return_counts=True)
    if (sizes < 2).any():
        raise SlnError(f"noisy class {int(classes[np.argmax(sizes < 2)])} has a single training sample; a stratified "
                       "noisy validation split needs two per class (one kept, one held out): drop data.noisy_val "
                       "or train on more samples")
    if count < len(classes) or len(noisy) - count < len(classes):
        raise SlnError(f"data.noisy_val holds out {count} of {len(noisy)} samples; a split stratified over "
                       f"{len(classes)} noisy classes needs at least {len(classes)} held out and kept")
    positions = np.arange(len(noisy))
    try:
        _, held = train_test_split(positions, test_size=count, random_state=seed, shuffle=True, stratify=noisy)
    except ValueError as exc:  # sklearn's own checks, should ours miss one
        raise SlnError(f"cannot stratify the noisy validation split: {exc}") from None
    return np.sort(held)


def write(run_dir: Path, indices: np.ndarray) -> None:
    atomic_write_text(run_dir / FILE, "index\n" + "".join(f"{i}\n" for i in indices.tolist()))


def read(path: Path) -> np.ndarray:
    """The recorded indices, through the bounded integer-CSV reader."""
    header, body = intcsv.read_header(path, max_bytes=_MAX_BYTES)
    if header != ["index"]:
        raise SlnError(f"{path} has header {','.join(header)[:80]!r}; expected `index` (a file written by sln train)")
    return intcsv.parse_rows(path, body, header, [0])[0]


def check_recorded(run_dir: Path, indices: np.ndarray | None) -> None:
    """Refuse to resume (or branch) a run whose recorded split differs from the one its config makes now."""
    path = run_dir / FILE
    if indices is None:
        if path.exists():
            raise SlnError(f"{run_dir} holds a noisy validation split ({FILE}) but its config has none; "
                           "resume it with the config it was trained with")
        return
    if not path.is_file():
        raise SlnError(f"{run_dir} has no {FILE} but its config holds out a noisy validation split; "
                       "the run was made without one: start a new run")
    if not np.array_equal(read(path), indices):
        raise SlnError(f"the noisy validation split recorded in {path} differs from the one data.noisy_val and "
                       "data.noisy_val_seed make now; a resumed run must hold out the same samples: start a new run")
