"""The noisy-label file format: a CSV `label,label_noisy[,source_index]` plus a JSON manifest beside it.

Also reads the official SLN CSVs (two columns, no manifest) and CIFAR-N human labels (`CIFAR-10_human.pt`,
`CIFAR-100_human.pt`), checks a file against a dataset, and summarises the noise a file contains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sln_cli.errors import SlnError
from sln_cli.rundir import intcsv, readers, torchfile
from sln_cli.rundir.files import atomic_write

FORMAT = "sln-noisy-labels"
FORMAT_VERSION = 1
WRONG_FILE = "this label file was made for another dataset or order"
# A `label_noisy` of -1 leaves the sample out of training (`sln analyze issues --write-labels drop`); the file
# keeps one row per training sample, so its rows still line up with the dataset.
DROPPED = -1


@dataclass(frozen=True)
class NoisyLabels:
    noisy: np.ndarray  # int64 (N,) the labels training sees
    clean: np.ndarray | None  # int64 (N,) true labels when known
    source_index: np.ndarray | None  # open-set: index into the source dataset's train split, -1 = own image
    manifest: dict  # the JSON manifest ({} for files without one)


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """`labels.csv` -> `labels.json`."""
    return Path(path).with_suffix(".json")


def sha256_labels(labels: np.ndarray) -> str:
    """sha256 of a label vector as int64 little-endian bytes (the manifest's `sha256_clean`/`sha256_noisy`)."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def write_label_file(path: str | os.PathLike[str], labels: NoisyLabels, manifest: dict | None = None) -> dict:
    """Write the CSV and its manifest atomically (if either fails, neither is left); return the manifest.

    The manifest is `labels.manifest` (or `manifest`, when given): what only its maker knows (dataset, mode,
    rate, seed, ...); the format, the sample count and the sha256s of the label vectors are filled in here.
    """
    manifest = labels.manifest if manifest is None else manifest
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise SlnError(f"the output {path} must end in .csv (its manifest is written beside it as .json)")
    assert labels.clean is None or labels.clean.shape == labels.noisy.shape, "clean and noisy labels must pair"
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **manifest,
        "num_samples": int(labels.noisy.size),
        "sha256_clean": None if labels.clean is None else sha256_labels(labels.clean),
        "sha256_noisy": sha256_labels(labels.noisy),
    }
    if labels.source_index is not None:
        manifest["sha256_source_index"] = sha256_labels(labels.source_index)
    json_path = manifest_path(path)
    previous = json_path.read_bytes() if json_path.is_file() else None  # our own manifest, a few hundred bytes
    manifest_written = csv_written = False
    try:
        with atomic_write(path) as csv_file:
            csv_file.write(_csv_text(labels))
            csv_file.flush()
            os.fsync(csv_file.fileno())  # a full disk fails here, before the manifest is touched
            with atomic_write(json_path) as json_file:
                json_file.write(json.dumps(manifest, indent=2) + "\n")
            manifest_written = True
        csv_written = True
    except OSError as exc:
        raise SlnError(f"cannot write {path}: {exc.strerror or exc}; choose a writable output path") from exc
    finally:
        # The manifest is renamed into place just before the CSV; if the CSV then failed, put the old one back.
        if manifest_written and not csv_written:
            with contextlib.suppress(OSError):
                if previous is None:
                    json_path.unlink()
                else:
                    with atomic_write(json_path, "wb") as json_file:
                        json_file.write(previous)
    return manifest


def _csv_text(labels: NoisyLabels) -> str:
    """`label,label_noisy[,source_index]`; without true labels (Clothing1M's own) the `label` column is left out."""
    columns = [labels.noisy] if labels.clean is None else [labels.clean, labels.noisy]
    header = "label_noisy" if labels.clean is None else "label,label_noisy"
    if labels.source_index is not None:
        columns.append(labels.source_index)
        header += ",source_index"
    rows = np.stack(columns, axis=1).tolist()
    return header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def read_label_file(path: str | os.PathLike[str], *, label_set: str | None = None,
                    expected_rows: int | None = None) -> NoisyLabels:
    """Read a label CSV (with or without manifest) or a CIFAR-N `.pt`; `label_set` picks the CIFAR-N labels.

    `expected_rows` (the dataset's training samples) refuses a CSV of another length before parsing it."""
    path = Path(path)
    if not path.is_file():
        if os.path.lexists(path):  # a FIFO, a device, a folder: never opened (a FIFO would block)
            raise SlnError(f"label file {path} is not a regular file; give a .csv or .pt label file")
        raise SlnError(f"label file {path} does not exist; check the path")
    if path.suffix.lower() == ".pt":
        return _read_cifar_n(path, label_set)
    if path.suffix.lower() != ".csv":
        raise SlnError(f"cannot read {path}: expected a .csv label file or a CIFAR-N .pt file")
    if label_set is not None:
        raise SlnError("--label-set applies to CIFAR-N .pt files only; drop it for a .csv label file")
    labels = _read_csv(path, expected_rows)
    json_path = manifest_path(path)
    if json_path.is_file():
        manifest = _read_manifest(json_path)
        if manifest.get("format") == FORMAT:  # an unrelated JSON beside an official CSV is not its manifest
            labels = NoisyLabels(labels.noisy, labels.clean, labels.source_index, manifest)
            _verify_manifest(path, labels)
    return labels


def _read_csv(path: Path, expected_rows: int | None = None) -> NoisyLabels:
    """Bounded: the file's size is capped, its rows are counted before any is parsed (`expected_rows`: the
    dataset's training samples), and parsing costs memory ~ the file (`sln_cli.rundir.intcsv`)."""
    header, body = intcsv.read_header(path)
    if not header and not body.strip():
        raise SlnError(f"{path} is empty; expected a header `label,label_noisy` and one row per training sample")
    if "label_noisy" not in header:
        shown = ",".join(header)[:80]
        raise SlnError(f"{path} has header {shown!r}; expected columns `label,label_noisy`")
    if expected_rows is not None and (rows := intcsv.count_rows(body)) != expected_rows:
        raise SlnError(f"the label file {path} has {rows} rows but the dataset has {expected_rows} training "
                       f"samples: {WRONG_FILE}")
    names = [name for name in ("label", "label_noisy", "source_index") if name in header]
    columns = dict(zip(names, intcsv.parse_rows(path, body, header, [header.index(name) for name in names]),
                       strict=True))  # each a contiguous row of one (columns, rows) array: no copies
    del body
    for name, lowest in (("label", 0), ("label_noisy", DROPPED)):
        if name in columns and columns[name].size and columns[name].min() < lowest:
            line = int(np.argmax(columns[name] < lowest)) + 2
            raise SlnError(f"{path} line {line} holds a negative class; labels must be 0..K-1 "
                           f"({DROPPED} in label_noisy: a dropped sample)")

    def column(name: str) -> np.ndarray | None:
        return columns.get(name)

    # No `label` column: the true labels are unknown (a run on Clothing1M's own noisy labels).
    return NoisyLabels(noisy=columns["label_noisy"], clean=column("label"), source_index=column("source_index"),
                       manifest={})


def is_label_manifest(json_path: Path) -> bool:
    """`json_path` is a manifest sln wrote (a regular file whose `format` is ours): proof that sln made the pair."""
    try:
        if not json_path.is_file() or json_path.is_symlink() or json_path.stat().st_size > 1 << 20:
            return False
        manifest = json.loads(json_path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def _read_manifest(json_path: Path) -> dict:
    """The manifest beside a label CSV: a regular JSON file of at most 1 MiB (it is a few hundred bytes)."""
    try:
        manifest = readers.read_json(json_path, what="label manifest")
    except SlnError as exc:
        raise SlnError(f"{exc}; restore the manifest or delete it") from None
    if not isinstance(manifest, dict):
        raise SlnError(f"the manifest {json_path} is not a JSON object; restore it or delete it")
    return manifest


def _verify_manifest(path: Path, labels: NoisyLabels) -> None:
    """A manifest vouches for its CSV: refuse a CSV whose rows were edited, added or lost since."""
    manifest = labels.manifest
    expected_rows = manifest.get("num_samples")
    if expected_rows is not None and expected_rows != labels.noisy.size:
        raise SlnError(
            f"{path} has {labels.noisy.size} rows but its manifest {manifest_path(path).name} says "
            f"{expected_rows}: the file is truncated or was edited; regenerate it"
        )
    checks = [
        ("sha256_clean", labels.clean),
        ("sha256_noisy", labels.noisy),
        ("sha256_source_index", labels.source_index),
    ]
    for key, vector in checks:
        if manifest.get(key) is not None and (vector is None or sha256_labels(vector) != manifest[key]):
            raise SlnError(
                f"{path} does not match its manifest {manifest_path(path).name} ({key} differs): the file was "
                "edited after it was written; regenerate it, or delete the manifest to use it as a plain CSV"
            )
    num_classes = manifest.get("num_classes")
    if isinstance(num_classes, int) and labels.noisy.size:
        top = int(max(v.max() for v in (labels.noisy, labels.clean) if v is not None))
        if top >= num_classes:
            raise SlnError(f"{path} holds class {top} but its manifest says {num_classes} classes; regenerate it")


def _numpy_allow_list() -> list:
    """Exactly the numpy globals a pickled integer ndarray names, for `torch.load(weights_only=True)`.

    CIFAR-N files were pickled by numpy 1.x, which names `numpy.core.multiarray._reconstruct`; numpy 2 moved
    it to `numpy._core`, so it is allow-listed under both names (torch's (object, name) form).
    """
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    allowed: list = [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype]
    # numpy >= 1.25 also names the dtype's class (e.g. `numpy.dtypes.Int64DType`) in the pickle.
    names = [f"{sign}Int{bits}DType" for sign in ("", "U") for bits in (8, 16, 32, 64)]
    names += [f"{sign}{c}DType" for sign in ("", "U") for c in ("Byte", "Short", "Int", "Long", "LongLong")]
    dtype_classes = getattr(np, "dtypes", None)
    allowed += [getattr(dtype_classes, name) for name in names if hasattr(dtype_classes, name)]
    return allowed


def _load_pt(path: Path) -> dict:
    import torch

    if not hasattr(torch.serialization, "safe_globals"):
        raise SlnError("reading CIFAR-N .pt files needs torch >= 2.5; upgrade torch")
    try:
        # weights_only=True: only the allow-listed numpy types can be built, never arbitrary objects.
        with torch.serialization.safe_globals(_numpy_allow_list()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or hostile: torch raises several types
        raise SlnError(f"cannot read {path} as CIFAR-N labels ({torchfile.reason(exc)}); expected a dict of "
                       "integer label arrays") from None
    if not isinstance(content, dict) or "clean_label" not in content:
        raise SlnError(f"{path} is not a CIFAR-N label file: expected a dict with a `clean_label` entry")
    return content


def _as_labels(value: object, path: Path, key: str) -> np.ndarray:
    array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise SlnError(f"{path}: `{key}` is not a 1-D array of integer classes")
    if array.size and array.min() < 0:
        raise SlnError(f"{path}: `{key}` holds a negative class; labels must be 0..K-1")
    return array.astype(np.int64)


def _read_cifar_n(path: Path, label_set: str | None) -> NoisyLabels:
    content = _load_pt(path)
    clean = _as_labels(content["clean_label"], path, "clean_label")
    sets = sorted(k for k, v in content.items() if isinstance(k, str) and np.ndim(v) == 1 and len(v) == clean.size)
    if label_set is None or label_set not in sets:
        what = "pick the CIFAR-N labels with --label-set" if label_set is None else f"no label set {label_set!r}"
        raise SlnError(f"{path}: {what}; available: {', '.join(sets)}")
    if "coarse" in label_set and "clean_coarse_label" in content:
        # CIFAR-100N's super-class annotations compare with the clean super-class labels.
        clean = _as_labels(content["clean_coarse_label"], path, "clean_coarse_label")
    noisy = _as_labels(content[label_set], path, label_set)
    return NoisyLabels(noisy=noisy, clean=clean, source_index=None, manifest={})


# --------------------------------------------------------------------------------------------------
# checking and summarising
# --------------------------------------------------------------------------------------------------


def check_against(labels: NoisyLabels, dataset_labels: np.ndarray, num_classes: int) -> None:
    """Refuse a label file that does not fit a dataset: length, label range, clean column = dataset labels."""
    dataset_labels = np.asarray(dataset_labels)
    if labels.noisy.size != dataset_labels.size:
        raise SlnError(
            f"the label file has {labels.noisy.size} rows but the dataset has {dataset_labels.size} training "
            f"samples: {WRONG_FILE}"
        )
    for name, vector in (("noisy", labels.noisy), ("clean", labels.clean)):
        lowest = DROPPED if name == "noisy" else 0
        if vector is not None and vector.size and (vector.min() < lowest or vector.max() >= num_classes):
            raise SlnError(
                f"the label file's {name} labels go up to {int(vector.max())} but the dataset has "
                f"{num_classes} classes (0..{num_classes - 1}): {WRONG_FILE}"
            )
    if labels.clean is not None:
        mismatched = int(np.count_nonzero(labels.clean != dataset_labels))
        if mismatched:
            raise SlnError(
                f"the label file's clean column differs from the dataset's labels at {mismatched} of "
                f"{dataset_labels.size} samples: {WRONG_FILE}"
            )


def summarize(
    clean: np.ndarray,
    noisy: np.ndarray,
    num_classes: int,
    *,
    requested_rate: float | None = None,
    source_index: np.ndarray | None = None,
    mode: str | None = None,
) -> dict:
    """The realised noise of a label vector, JSON-ready.

    `transition_matrix[i][j]` is the fraction of samples of true class i labelled j (rows = true class,
    row-stochastic); a class with no samples gets an all-zero row and a per-class rate of 0 (see
    `class_counts`). Open-set files (`source_index` given): the noise is the replaced images, so the realised
    and per-class rates count replaced samples; `label_noise_rate` (open-set only; elsewhere it would repeat
    the realised rate), `num_mislabelled` and the transition matrix (the identity, as labels are kept) still
    describe the labels.
    """
    clean, noisy = np.asarray(clean, dtype=np.int64), np.asarray(noisy, dtype=np.int64)
    kept = noisy != DROPPED  # samples left out of training (`--write-labels drop`) carry no label noise
    dropped = int((~kept).sum())
    clean, noisy = clean[kept], noisy[kept]
    source_index = None if source_index is None else np.asarray(source_index)[kept]
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (clean, noisy), 1)
    class_counts = counts.sum(axis=1)
    per_row = np.maximum(class_counts, 1)[:, None]
    matrix = counts / per_row
    corrupted = noisy != clean if source_index is None else np.asarray(source_index) >= 0
    corrupted_per_class = np.bincount(clean[corrupted], minlength=num_classes)
    num_samples = int(clean.size)
    summary = {
        "mode": mode,
        "num_samples": num_samples,
        "num_classes": int(num_classes),
        "requested_noise_rate": requested_rate,
        "realized_noise_rate": float(corrupted.mean()) if num_samples else 0.0,
        "num_mislabelled": int((noisy != clean).sum()),
        "per_class_noise_rate": (corrupted_per_class / np.maximum(class_counts, 1)).tolist(),
        "class_counts": class_counts.tolist(),
        "transition_matrix": matrix.tolist(),
        "top_confusions": _top_confusions(counts, class_counts),
    }
    if dropped:
        summary["num_dropped"] = dropped
    if source_index is not None:  # here the realised rate counts images, so the labels' own rate is told apart
        summary["num_replaced_images"] = int(corrupted.sum())
        summary["label_noise_rate"] = float((noisy != clean).mean()) if num_samples else 0.0
    return summary


def _top_confusions(counts: np.ndarray, class_counts: np.ndarray, limit: int = 10) -> list[dict]:
    """The largest off-diagonal cells: how a K > 20 transition matrix is shown."""
    off = counts.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:limit]
    top = []
    for true, noisy in zip(*np.unravel_index(flat, off.shape), strict=True):
        if off[true, noisy] == 0:
            break
        top.append(
            {
                "true": int(true),
                "noisy": int(noisy),
                "count": int(off[true, noisy]),
                "fraction_of_class": float(off[true, noisy] / class_counts[true]),
            }
        )
    return top
