"""The resized-image cache: a mirror of the dataset folder that the readers load unchanged, pixels as torchvision's
Resize(256) makes them, atomic and resumable, and `sln cache` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.data import load_dataset
from sln_cli.data.cache import build_cache
from sln_cli.errors import SlnError
from tests.synthetic import write_clothing1m, write_imagefolder

runner = CliRunner()


def _files(root: Path) -> list[str]:
    """Every file, without the marker that says sln made the cache."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".sln-owned")


def test_clothing1m_cache_mirrors_the_folder_and_loads(tmp_path: Path) -> None:
    source = write_clothing1m(tmp_path / "c1m", n_train=3, n_val=2, n_test=2, size=(300, 280))
    summary = build_cache(source, tmp_path / "cache", quiet=True)
    assert _files(tmp_path / "cache") == _files(source)  # same names, no temporary files left behind
    assert summary["resized"] == 7 and summary["copied"] == 3  # 7 JPEGs; 3 annotation lists
    for name in ("noisy_train.txt", "clean_val.txt", "clean_test.txt"):
        assert (tmp_path / "cache" / "annotations" / name).read_bytes() == (source / "annotations" / name).read_bytes()
    cached = load_dataset("clothing1m", tmp_path / "cache")
    original = load_dataset("clothing1m", source)
    assert np.array_equal(cached.train.labels, original.train.labels)
    for path in cached.train.files:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (274, 256)  # torchvision: int(256 * 300 / 280)


def test_cached_png_equals_torchvision_resize(tmp_path: Path) -> None:
    source = write_imagefolder(tmp_path / "folder", classes=("a", "b"), n_train=1, n_test=1, size=(300, 260))
    build_cache(source, tmp_path / "cache", quiet=True)
    for relative in _files(source):
        with Image.open(source / relative) as image:
            expected = np.asarray(transforms.Resize(256)(image.convert("RGB")))
        with Image.open(tmp_path / "cache" / relative) as cached:
            assert cached.format == "PNG"
            assert np.array_equal(np.asarray(cached), expected)  # lossless: exactly what training would compute


def test_small_images_are_copied_byte_for_byte(tmp_path: Path) -> None:
    source = write_imagefolder(tmp_path / "folder", classes=("a",), n_train=2, n_test=1, size=(40, 30))
    summary = build_cache(source, tmp_path / "cache", quiet=True)
    assert summary["resized"] == 0 and summary["copied"] == 3
    for relative in _files(source):
        assert (tmp_path / "cache" / relative).read_bytes() == (source / relative).read_bytes()


def test_a_second_build_resumes(tmp_path: Path) -> None:
    source = write_clothing1m(tmp_path / "c1m", n_train=2, n_val=1, n_test=1, size=(300, 280))
    out = tmp_path / "cache"
    first = build_cache(source, out, quiet=True)
    kept = out / "images" / "train" / "0" / "0.jpg"
    stamp = kept.stat().st_mtime_ns
    (out / "images" / "train" / "1" / "1.jpg").unlink()  # as if the first build had been interrupted
    second = build_cache(source, out, quiet=True)
    assert second["skipped"] == first["files"] - 1 and second["resized"] == 1
    assert kept.stat().st_mtime_ns == stamp  # finished files are not written again


def test_worker_processes_write_the_same_cache(tmp_path: Path) -> None:
    source = write_imagefolder(tmp_path / "folder", classes=("a", "b"), n_train=2, n_test=1, size=(300, 260))
    build_cache(source, tmp_path / "serial", quiet=True)
    build_cache(source, tmp_path / "pool", workers=2, quiet=True)
    for relative in _files(source):
        assert (tmp_path / "pool" / relative).read_bytes() == (tmp_path / "serial" / relative).read_bytes()


def test_a_corrupt_image_is_named(tmp_path: Path) -> None:
    source = write_imagefolder(tmp_path / "folder", classes=("a",), n_train=1, n_test=1, size=(300, 260))
    (source / "train" / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(SlnError, match="broken.png"):
        build_cache(source, tmp_path / "cache", quiet=True)


def test_the_cache_must_lie_outside_the_dataset(tmp_path: Path) -> None:
    source = write_imagefolder(tmp_path / "folder", classes=("a",), n_train=1, n_test=1)
    with pytest.raises(SlnError, match="outside"):
        build_cache(source, source / "cache", quiet=True)


def test_cache_command(tmp_path: Path) -> None:
    source = write_imagefolder(tmp_path / "folder", classes=("a",), n_train=1, n_test=1, size=(300, 260))
    args = ["cache", "--data-dir", str(source), "--out", str(tmp_path / "cache"), "--workers", "0", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resized"] == 2
    result = runner.invoke(app, ["cache", "--data-dir", str(source), "--out", str(tmp_path / "cache"),
                                 "--quality", "0"])
    assert result.exit_code == 1 and "--quality" in result.output
