"""Dataset readers: round-trips through the real on-disk formats, and every user mistake they catch."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sln_cli.data import FileList, load_dataset
from sln_cli.data.clothing1m import CLASSES as CLOTHING_CLASSES
from sln_cli.data.clothing1m import balanced_indices
from sln_cli.data.files import FileDataset, decode_image, eval_transform, train_transform
from sln_cli.data.registry import REGISTRY
from sln_cli.errors import SlnError
from tests.synthetic import (
    CIFAR10_NAMES,
    cifar100_superclass,
    cifar_arrays,
    clothing1m_entries,
    write_cifar10,
    write_cifar100,
    write_clothing1m,
    write_imagefolder,
)

# ---------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trip(tmp_path: Path) -> None:
    dataset = load_dataset("cifar10", write_cifar10(tmp_path, n_train=50, n_test=20, seed=3))
    train_images, train_labels, test_images, test_labels = cifar_arrays(10, 50, 20, seed=3)
    assert dataset.classes == CIFAR10_NAMES and dataset.num_classes == 10
    assert dataset.train.images.dtype == torch.uint8 and dataset.train.images.shape == (50, 3, 32, 32)
    assert dataset.test.images.shape == (20, 3, 32, 32)
    assert dataset.train.labels.dtype == np.int64 and dataset.test.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.train.images.numpy(), train_images)
    np.testing.assert_array_equal(dataset.train.labels, train_labels)
    np.testing.assert_array_equal(dataset.test.images.numpy(), test_images)
    np.testing.assert_array_equal(dataset.test.labels, test_labels)
    assert dataset.in_memory and dataset.val is None and dataset.superclass is None
    assert len(dataset.mean) == len(dataset.std) == 3


def test_cifar10_synthetic_labels_cover_every_class(tmp_path: Path) -> None:
    labels = load_dataset("cifar10", write_cifar10(tmp_path)).train.labels
    assert set(labels.tolist()) == set(range(10))


def test_cifar100_round_trip_with_superclass(tmp_path: Path) -> None:
    dataset = load_dataset("cifar100", write_cifar100(tmp_path, n_train=120, n_test=10, seed=1))
    train_images, train_labels, _, test_labels = cifar_arrays(100, 120, 10, seed=1)
    assert dataset.num_classes == 100 and dataset.classes[7] == "fine_07"
    np.testing.assert_array_equal(dataset.train.images.numpy(), train_images)
    np.testing.assert_array_equal(dataset.train.labels, train_labels)
    np.testing.assert_array_equal(dataset.test.labels, test_labels)
    np.testing.assert_array_equal(dataset.superclass, cifar100_superclass(seed=1))
    assert dataset.superclass.dtype == np.int64


@pytest.mark.parametrize(("name", "writer", "folder"), [
    ("cifar10", write_cifar10, "cifar-10-batches-py"),
    ("cifar100", write_cifar100, "cifar-100-python"),
])  # fmt: skip
def test_cifar_accepts_parent_or_batches_folder(tmp_path: Path, name: str, writer, folder: str) -> None:
    writer(tmp_path)
    from_parent = load_dataset(name, tmp_path)
    from_batches = load_dataset(name, tmp_path / folder)
    assert torch.equal(from_parent.train.images, from_batches.train.images)
    np.testing.assert_array_equal(from_parent.test.labels, from_batches.test.labels)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_reencoded_copy_loads_without_md5(tmp_path: Path, protocol: int) -> None:
    original = load_dataset("cifar10", write_cifar10(tmp_path / "original"))
    copy = tmp_path / "copy" / "cifar-10-batches-py"
    shutil.copytree(tmp_path / "original" / "cifar-10-batches-py", copy)
    for file in copy.iterdir():
        with open(file, "rb") as f:
            content = pickle.load(f, encoding="bytes")  # trusted: we wrote it a moment ago
        before = hashlib.md5(file.read_bytes()).hexdigest()
        file.write_bytes(pickle.dumps(content, protocol=protocol))
        assert hashlib.md5(file.read_bytes()).hexdigest() != before
    reencoded = load_dataset("cifar10", copy)
    assert torch.equal(reencoded.train.images, original.train.images)
    np.testing.assert_array_equal(reencoded.train.labels, original.train.labels)
    assert reencoded.classes == original.classes


def test_cifar_numpy_integer_labels_load(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path) / "cifar-10-batches-py"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [np.int64(4), np.int64(9)]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    np.testing.assert_array_equal(load_dataset("cifar10", tmp_path).test.labels, [4, 9])


def test_cifar_truncated_pickle_is_named(tmp_path: Path) -> None:
    batch = write_cifar10(tmp_path) / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(SlnError, match="data_batch_3 is not a readable CIFAR pickle"):
        load_dataset("cifar10", tmp_path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_pickle_with_forbidden_global_is_refused(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path) / "cifar-10-batches-py"
    marker = tmp_path / "code-ran"
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": _Exploit(marker)}, protocol=2))
    with pytest.raises(SlnError, match=r"batches.meta refers to (posix|os|nt)\.system"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(("content", "message"), [
    ([1, 2, 3], "expected a dict with data, labels"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "rows of 3072 bytes"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "rows of 3072 bytes"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 integers in 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "2 integers in 0..9"),
])  # fmt: skip
def test_cifar_malformed_batch_is_named(tmp_path: Path, content: object, message: str) -> None:
    folder = write_cifar10(tmp_path) / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(SlnError, match=message) as error:
        load_dataset("cifar10", tmp_path)
    assert "test_batch" in str(error.value)


def test_cifar_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SlnError, match=r"no CIFAR-10 found .*data_batch_1\.\.5.*data\.download=true.*--download"):
        load_dataset("cifar10", tmp_path / "nowhere")
    (write_cifar10(tmp_path) / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(SlnError, match=r"missing: data_batch_4\)"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(SlnError, match=r"no CIFAR-100 found .*cifar-100-python/train, test and meta"):
        load_dataset("cifar100", tmp_path)


def test_cifar_download_only_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR10, utils

    calls = []

    def fake_download(url: str, download_root: str, **kwargs) -> None:
        calls.append((url, kwargs.get("md5")))
        write_cifar10(Path(download_root))

    monkeypatch.setattr(utils, "download_and_extract_archive", fake_download)
    dataset = load_dataset("cifar10", tmp_path, download=True)
    assert calls == [(CIFAR10.url, CIFAR10.tgz_md5)] and len(dataset.train) == 50
    load_dataset("cifar10", tmp_path, download=True)  # present now: no second download
    assert len(calls) == 1


def test_cifar_download_failure_is_an_sln_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import utils

    def failing_download(*args, **kwargs) -> None:
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(utils, "download_and_extract_archive", failing_download)
    with pytest.raises(SlnError, match="could not download CIFAR-100"):
        load_dataset("cifar100", tmp_path, download=True)


# ---------------------------------------------------------------------------------------------- digits


def test_digits_shape_split_and_pixels() -> None:
    from sklearn.datasets import load_digits

    dataset = load_dataset("digits", Path("/ignored"))
    assert dataset.train.images.shape == (1297, 1, 8, 8) and dataset.test.images.shape == (500, 1, 8, 8)
    assert dataset.train.images.dtype == torch.uint8 and dataset.classes == tuple("0123456789")
    # Every image is one of sklearn's, scaled 0..16 -> 0..255; together they are all 1,797 exactly once.
    expected = np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, 64)
    ours = torch.cat([dataset.train.images, dataset.test.images]).reshape(1797, 64).numpy()
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(expected, axis=0))
    # Stratified: each class's share of the test split is within one image of its overall share.
    overall = np.bincount(load_digits().target, minlength=10) / 1797
    assert np.all(np.abs(np.bincount(dataset.test.labels, minlength=10) - 500 * overall) <= 1)
    pixels = dataset.train.images.double() / 255
    assert dataset.mean[0] == pytest.approx(pixels.mean().item()) and dataset.std[0] == pytest.approx(
        pixels.std(unbiased=False).item()
    )


def test_digits_is_deterministic() -> None:
    first, second = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(first.train.images, second.train.images)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)


# ---------------------------------------------------------------------------------------------- imagefolder


def test_imagefolder_class_order_labels_and_pixels(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, classes=("zebra", "ant", "moth"), n_train=2, n_test=1, n_val=1)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    dataset = load_dataset("imagefolder", tmp_path)
    assert dataset.classes == ("ant", "moth", "zebra") and not dataset.in_memory
    assert len(dataset.train) == 6 and len(dataset.test) == 3 and len(dataset.val) == 3
    for path, label in zip(dataset.train.files, dataset.train.labels, strict=True):
        assert path.parent.name == dataset.classes[label]
    from PIL import Image

    path = dataset.test.files[0]
    written = np.asarray(Image.open(path)).transpose(2, 0, 1)
    decoded = decode_image(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 10, 12)
    np.testing.assert_array_equal(decoded.numpy(), written)


def test_imagefolder_without_val_and_grey_images(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, classes=("a", "b"))
    from PIL import Image

    Image.fromarray(np.full((5, 7), 9, np.uint8)).save(tmp_path / "train" / "b" / "grey.png")
    dataset = load_dataset("imagefolder", tmp_path)
    assert dataset.val is None
    assert decode_image(tmp_path / "train" / "b" / "grey.png").shape == (3, 5, 7)


def test_imagefolder_test_classes_must_be_a_subset(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, classes=("a", "b"))
    write_imagefolder(tmp_path / "extra", classes=("c",))
    shutil.move(tmp_path / "extra" / "test" / "c", tmp_path / "test" / "c")
    with pytest.raises(SlnError, match=r"class folders that train/ lacks \(c\)"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_missing_folders(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, classes=("a",))
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(SlnError, match="no test/ folder"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(SlnError, match="needs --data-dir"):
        load_dataset("imagefolder")


# ---------------------------------------------------------------------------------------------- clothing1m


@pytest.mark.parametrize("in_annotations", [True, False])
def test_clothing1m_lists_layout(tmp_path: Path, in_annotations: bool) -> None:
    write_clothing1m(tmp_path, n_train=30, n_val=14, n_test=15)
    expected = {split: clothing1m_entries(tmp_path, split) for split in ("train", "val", "test")}
    if not in_annotations:
        for file in (tmp_path / "annotations").iterdir():
            file.rename(tmp_path / file.name)
    dataset = load_dataset("clothing1m", tmp_path)
    assert dataset.classes == CLOTHING_CLASSES and len(dataset.classes) == 14 and not dataset.in_memory
    for split in ("train", "val", "test"):
        ours = getattr(dataset, split)
        assert [str(path) for path in ours.files] == [str(tmp_path / path) for path, _ in expected[split]]
        np.testing.assert_array_equal(ours.labels, [label for _, label in expected[split]])
    assert set(dataset.train.labels.tolist()) == set(range(14))


def test_clothing1m_release_layout_matches_lists(tmp_path: Path) -> None:
    lists = load_dataset("clothing1m", write_clothing1m(tmp_path / "a", seed=5, layout="lists"))
    release = load_dataset("clothing1m", write_clothing1m(tmp_path / "b", seed=5, layout="release"))
    for split in ("train", "val", "test"):
        assert list(getattr(lists, split).files.relative) == list(getattr(release, split).files.relative)
        np.testing.assert_array_equal(getattr(lists, split).labels, getattr(release, split).labels)


def test_clothing1m_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    write_clothing1m(tmp_path)
    listing = tmp_path / "annotations" / "clean_val.txt"
    lines = listing.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 14"  # labels are 0..13
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(SlnError, match=r"clean_val.txt:3: expected '<image path> <label 0..13>'"):
        load_dataset("clothing1m", tmp_path)
    lines[2] = "images/no-label.jpg"
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(SlnError, match=r"clean_val.txt:3:"):
        load_dataset("clothing1m", tmp_path)


def test_clothing1m_release_key_without_label(tmp_path: Path) -> None:
    write_clothing1m(tmp_path, layout="release")
    with open(tmp_path / "annotations" / "clean_test_key_list.txt", "a") as f:
        f.write("images/ghost.jpg\n")
    with pytest.raises(SlnError, match=r"clean_test_key_list.txt:15: images/ghost.jpg has no label"):
        load_dataset("clothing1m", tmp_path)


def test_clothing1m_missing_annotations(tmp_path: Path) -> None:
    with pytest.raises(SlnError, match="no Clothing1M annotations found"):
        load_dataset("clothing1m", tmp_path)
    write_clothing1m(tmp_path)
    (tmp_path / "annotations" / "clean_test.txt").unlink()
    with pytest.raises(SlnError, match="clean_test.txt missing"):
        load_dataset("clothing1m", tmp_path)
    with pytest.raises(SlnError, match="cannot be downloaded"):
        load_dataset("clothing1m", tmp_path, download=True)


def test_clothing1m_missing_image_fails_only_when_decoded(tmp_path: Path) -> None:
    write_clothing1m(tmp_path)
    dataset = load_dataset("clothing1m", tmp_path)  # nothing is opened while listing
    dataset.train.files[1].unlink()
    items = FileDataset(dataset.train, eval_transform(resize=16, crop=12))
    assert items[0][0].shape == (3, 12, 12) and items[0][0].dtype == torch.uint8
    with pytest.raises(SlnError, match=f"cannot decode image {dataset.train.files[1]}"):
        items[1]


def test_file_list_slices_and_pickles(tmp_path: Path) -> None:
    files = FileList(tmp_path, ["a.jpg", "b/c.jpg", "d.jpg"])
    assert files[1] == tmp_path / "b/c.jpg" and list(files[1:]) == [tmp_path / "b/c.jpg", tmp_path / "d.jpg"]
    assert list(pickle.loads(pickle.dumps(files))) == list(files)  # DataLoader workers receive it pickled


@pytest.mark.parametrize("sizes", [(8, 30, 3, 0), (3, 3), (40, 8)])
def test_balanced_indices_counts(sizes: tuple[int, ...]) -> None:
    per_class = 8
    labels = np.repeat(np.arange(len(sizes)), sizes)  # class c has sizes[c] samples (0: absent)
    indices = balanced_indices(labels, per_class, np.random.default_rng(0))
    assert indices.dtype == np.int64 and np.all(np.diff(indices) >= 0)
    np.testing.assert_array_equal(
        np.bincount(labels[indices], minlength=len(sizes)), [per_class if s else 0 for s in sizes]
    )
    for c, size in enumerate(sizes):
        drawn = indices[labels[indices] == c]
        assert set(drawn.tolist()) <= set(np.flatnonzero(labels == c).tolist())
        if size >= per_class:  # enough samples: no repeats (a class of exactly 8 is drawn whole)
            assert len(np.unique(drawn)) == per_class


def test_balanced_indices_is_uniform_and_seeded() -> None:
    labels = np.array([0] * 4 + [1] * 50)
    rng = np.random.default_rng(7)
    # 4,000 draws of 2 from class 0's 4 members: each member's count is Binomial(4000, 0.5), sd ~32;
    # 5 sd = 160 would be an astronomically rare failure for a fair draw.
    counts = np.bincount(np.concatenate([balanced_indices(labels, 2, rng)[:2] for _ in range(4000)]), minlength=4)
    assert np.all(np.abs(counts[:4] - 2000) < 160)
    first = balanced_indices(labels, 10, np.random.default_rng(1))
    np.testing.assert_array_equal(first, balanced_indices(labels, 10, np.random.default_rng(1)))
    assert not np.array_equal(first, balanced_indices(labels, 10, np.random.default_rng(2)))
    with pytest.raises(SlnError, match="at least 1"):
        balanced_indices(labels, 0, rng)


# ---------------------------------------------------------------------------------------------- pipelines


def test_train_transform_crops_and_flips(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "ramp.png"
    ramp = np.tile(np.arange(0, 240, 15, dtype=np.uint8)[None, :, None], (16, 1, 3))  # brighter to the right
    Image.fromarray(ramp).save(path)
    transform = train_transform(resize=16, crop=16)  # no crop: only the flip is random
    image = decode_image(path)
    torch.manual_seed(0)
    rows = [transform(image)[0, 0] for _ in range(200)]
    unflipped = np.mean([bool(row[-1] > row[0]) for row in rows])
    # A fair flip: the unflipped share of 200 draws has sd 0.035; allow 4 sd.
    assert abs(unflipped - 0.5) < 0.14
    assert train_transform(resize=20, crop=8)(image).shape == (3, 8, 8)
    with pytest.raises(SlnError, match="crop size"):
        train_transform(resize=8, crop=9)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(SlnError, match="broken.jpg"):
        decode_image(path)


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "hint"), [("cifar1O", "cifar10"), ("cifr100", "cifar100"), ("clothing", "clothing1m")]
)
def test_unknown_dataset_gets_a_hint(name: str, hint: str) -> None:
    with pytest.raises(SlnError, match=f"did you mean '{hint}'") as error:
        load_dataset(name)
    assert all(choice in str(error.value) for choice in REGISTRY)


def test_dataset_name_spelling_is_forgiving(tmp_path: Path) -> None:
    assert load_dataset("CIFAR-10", write_cifar10(tmp_path)).name == "cifar10"


def test_cifar10_with_str_keys_as_python3_re_encodings_write_them(tmp_path):
    """A copy re-pickled by Python 3 code (e.g. a JPEG re-encoding) may use str keys; it must load."""
    import pickle

    root = write_cifar10(tmp_path, n_train=50, n_test=20, seed=0)
    folder = root / "cifar-10-batches-py"
    for path in folder.iterdir():
        content = pickle.loads(path.read_bytes(), encoding="bytes")
        path.write_bytes(pickle.dumps({k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}))
    dataset = load_dataset("cifar10", root)
    assert dataset.train.images.shape == (50, 3, 32, 32) and dataset.classes[0] == "airplane"
