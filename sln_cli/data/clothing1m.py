"""Clothing1M (Xiao et al., 2015): 1M noisily labelled shop photos, 14 classes, clean val and test lists.

Two layouts: the SLN code's lists (`noisy_train.txt`, `clean_val.txt`, `clean_test.txt`) or the official release's
`*_label_kv.txt` + `*_key_list.txt`. Images are never touched here: a missing one is reported when it is decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sln_cli.data import Dataset, FileList, Split
from sln_cli.errors import SlnError

# The release's category_names_eng.txt, in label order.
CLASSES = (
    "T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
    "Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear",
)  # fmt: skip

# Normalisation exactly as the official SLN Clothing1M script (noise_clothing1m_train.py) uses it.
MEAN = (0.6959, 0.6537, 0.6371)
STD = (0.3113, 0.3192, 0.3214)

_LISTS = {"train": "noisy_train.txt", "val": "clean_val.txt", "test": "clean_test.txt"}
_KEY_LISTS = {
    "train": ("noisy_label_kv.txt", "noisy_train_key_list.txt"),
    "val": ("clean_label_kv.txt", "clean_val_key_list.txt"),
    "test": ("clean_label_kv.txt", "clean_test_key_list.txt"),
}


def load_clothing1m(root: Path) -> Dataset:
    """Read the annotation lists under `root` (or `root/annotations`); image paths are relative to `root`."""
    splits = _from_lists(root)
    if splits is None:
        splits = _from_key_lists(root)
    if splits is None:
        raise SlnError(
            f"no Clothing1M annotations found in {root} or {root / 'annotations'}: expected "
            f"{', '.join(_LISTS.values())} (lines '<image path> <label>'), or the official release's "
            "noisy_label_kv.txt, noisy_train_key_list.txt, clean_label_kv.txt, clean_val_key_list.txt and "
            "clean_test_key_list.txt; pass --data-dir to the Clothing1M folder"
        )
    return Dataset("clothing1m", CLASSES, splits["train"], splits["test"], splits["val"], MEAN, STD)


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """A class-balanced draw: `per_class` indices of every class present in `labels`, sorted.

    A class with at least `per_class` samples is drawn without replacement, like the official code. A smaller
    class is drawn with replacement up to `per_class`: the official code keeps all of its (fewer) samples instead,
    which leaves that epoch unbalanced; we keep the balance the draw exists for. Call once per epoch.
    """
    if per_class < 1:
        raise SlnError(f"the per-class sample count must be at least 1, got {per_class}")
    drawn = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        drawn.append(rng.choice(members, size=per_class, replace=len(members) < per_class))
    if not drawn:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(drawn)).astype(np.int64)


def _candidates(root: Path, name: str) -> Path | None:
    for folder in (root, root / "annotations"):
        if (folder / name).is_file():
            return folder / name
    return None


def _from_lists(root: Path) -> dict[str, Split] | None:
    paths = {split: _candidates(root, name) for split, name in _LISTS.items()}
    if all(path is None for path in paths.values()):
        return None
    missing = [_LISTS[split] for split, path in paths.items() if path is None]
    if missing:
        raise SlnError(
            f"Clothing1M lists incomplete in {root}: {', '.join(missing)} missing; put all three of "
            f"{', '.join(_LISTS.values())} in {root} or {root / 'annotations'}"
        )
    splits = {}
    for split, path in paths.items():
        assert path is not None  # none is missing (above)
        pairs = _read_labelled(path)
        splits[split] = _split(root, [image for image, _ in pairs], [label for _, label in pairs], path)
    return splits


def _from_key_lists(root: Path) -> dict[str, Split] | None:
    names = {name for pair in _KEY_LISTS.values() for name in pair}
    paths = {name: _candidates(root, name) for name in names}
    if any(path is None for path in paths.values()):
        if all(path is None for path in paths.values()):
            return None
        missing = sorted(name for name, path in paths.items() if path is None)
        raise SlnError(f"Clothing1M release incomplete in {root}: {', '.join(missing)} missing; restore them")
    found = {name: path for name, path in paths.items() if path is not None}  # all of them (above)
    label_of = {name: dict(_read_labelled(found[name])) for name in ("noisy_label_kv.txt", "clean_label_kv.txt")}
    splits = {}
    for split, (kv_name, key_name) in _KEY_LISTS.items():
        key_path = found[key_name]
        relative, labels = [], []
        for number, line in _lines(key_path):
            key = line.strip()
            if key not in label_of[kv_name]:
                raise SlnError(f"{key_path}:{number}: {key} has no label in {kv_name}; add it there or drop the line")
            relative.append(key)
            labels.append(label_of[kv_name][key])
        splits[split] = _split(root, relative, labels, key_path)
    return splits


def _lines(path: Path) -> list[tuple[int, str]]:
    """Numbered non-blank lines (numbers from 1, as an editor shows them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SlnError(f"cannot read {path} ({exc}); check the file") from exc
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _read_labelled(path: Path) -> list[tuple[str, int]]:
    """`<relative image path> <label>` per line; the path may contain spaces, the label is the last field."""
    pairs = []
    for number, line in _lines(path):
        fields = line.rsplit(maxsplit=1)
        try:
            label = int(fields[1])
        except (IndexError, ValueError):
            label = -1
        if not 0 <= label < len(CLASSES):
            raise SlnError(
                f"{path}:{number}: expected '<image path> <label 0..{len(CLASSES) - 1}>', got {line.strip()!r}; "
                "fix or remove that line"
            )
        pairs.append((fields[0], label))
    return pairs


def _split(root: Path, relative: list[str], labels: list[int], source: Path) -> Split:
    if not relative:
        raise SlnError(f"{source} lists no images; use the full annotation file")
    return Split(labels=np.asarray(labels, dtype=np.int64), files=FileList(root, relative))


def read_clothing1m(data_dir: Path, download: bool) -> Dataset:
    return load_clothing1m(data_dir)
