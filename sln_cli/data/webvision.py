"""mini-WebVision (Jiang et al., MentorNet, ICML 2018): the first 50 classes of WebVision 1.0's Google subset.

The dataset's own layout under ROOT: `info/train_filelist_google.txt` (`google/q0001/000000.jpg 0` lines, paths relative
to ROOT), `info/val_filelist.txt` (`val000001.jpg 0`, images in `val_images_256/`), both labelled 0..999 in ILSVRC12's
synset order; only labels 0..49 are kept. The test split is the WebVision validation images of those classes.

A second test set, `ilsvrc12` (`sln evaluate RUN --split ilsvrc12`): the ILSVRC12 validation images of the same 50
classes, read when `ROOT/imagenet/val/` exists, in one of three layouts: `val.txt` lines `<path> <label>` (paths
relative to imagenet/val/); one folder per class named by its synset (`n01440764/`, mapped by `info/synsets.txt`,
one synset per line in label order); or one folder per class named by its label (`0/` .. `49/`, as DivideMix reads it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sln_cli.data import Dataset, FileList, Split
from sln_cli.data.imagefolder import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD
from sln_cli.errors import SlnError

NUM_CLASSES = 50  # mini-WebVision: WebVision labels 0..49
ALL_CLASSES = 1000  # the lists' labels: ILSVRC12's synsets
TRAIN_LIST = "info/train_filelist_google.txt"
VAL_LIST = "info/val_filelist.txt"
VAL_IMAGES = "val_images_256"
SYNSETS = "info/synsets.txt"
IMAGENET_VAL = "imagenet/val"


def load_webvision_mini(root: Path) -> Dataset:
    """Read the file lists under `root`; images are decoded lazily (a missing one is reported when it is read)."""
    for required in (TRAIN_LIST, VAL_LIST):
        if not (root / required).is_file():
            raise SlnError(f"no {required} in {root}: mini-WebVision needs WebVision 1.0's info/ lists, google/ and "
                           f"{VAL_IMAGES}/; pass --data-dir to the WebVision folder")
    synsets = _read_synsets(root / SYNSETS)
    classes = tuple(synsets[:NUM_CLASSES]) if synsets else tuple(f"class {label}" for label in range(NUM_CLASSES))
    train = _split(root, _read_list(root / TRAIN_LIST), root / TRAIN_LIST)
    test = _split(root / VAL_IMAGES, _read_list(root / VAL_LIST), root / VAL_LIST)
    extra = {"ilsvrc12": _ilsvrc12(root / IMAGENET_VAL, synsets)} if (root / IMAGENET_VAL).is_dir() else {}
    return Dataset("webvision-mini", classes, train, test, None, IMAGENET_MEAN, IMAGENET_STD, extra_tests=extra)


def _read_list(path: Path) -> list[tuple[str, int]]:
    """`<relative path> <label 0..999>` per non-blank line, keeping labels below 50; other lines are errors."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SlnError(f"cannot read {path} ({exc}); check the file") from exc
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.rsplit(maxsplit=1)
        label = int(fields[1]) if len(fields) == 2 and fields[1].isdigit() else -1
        if not 0 <= label < ALL_CLASSES:
            raise SlnError(f"{path}:{number}: expected '<image path> <label 0..{ALL_CLASSES - 1}>', got "
                           f"{line.strip()[:200]!r}; fix or remove that line")
        if label < NUM_CLASSES:
            kept.append((fields[0], label))
    return kept


def _split(root: Path, pairs: list[tuple[str, int]], source: Path) -> Split:
    if not pairs:
        raise SlnError(f"{source} lists no image of the first {NUM_CLASSES} classes; use the full WebVision list")
    relative = [path for path, _ in pairs]
    return Split(labels=np.array([label for _, label in pairs], dtype=np.int64), files=FileList(root, relative))


def _read_synsets(path: Path) -> list[str]:
    """WebVision's synsets in label order (first field of each line); empty when the file is absent."""
    if not path.is_file():
        return []
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < NUM_CLASSES:
        raise SlnError(f"{path} lists {len(lines)} synsets; WebVision's has {ALL_CLASSES}, one per line in label order")
    return [fields[0] for fields in lines]


def _ilsvrc12(folder: Path, synsets: list[str]) -> Split:
    """The ILSVRC12 validation images of the 50 classes, from val.txt or one folder per class."""
    if (folder / "val.txt").is_file():
        return _split(folder, _read_list(folder / "val.txt"), folder / "val.txt")
    pairs = []
    for label in range(NUM_CLASSES):
        candidates = ([folder / synsets[label]] if synsets else []) + [folder / str(label)]
        found = next((c for c in candidates if c.is_dir()), None)
        if found is None:
            expected = " or ".join(str(c) for c in candidates)
            raise SlnError(f"the ILSVRC12 validation images of class {label} are missing: expected {expected} (or a "
                           f"{folder / 'val.txt'} list); complete {folder} or move it away to train without it")
        pairs += [(f"{found.name}/{name}", label) for name in sorted(os.listdir(found))
                  if name.lower().endswith(IMAGE_SUFFIXES)]
    return _split(folder, pairs, folder)


def read_webvision_mini(data_dir: Path, download: bool) -> Dataset:
    return load_webvision_mini(data_dir)
