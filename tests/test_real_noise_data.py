"""Animal-10N and mini-WebVision readers on small synthetic folders in their exact on-disk layouts, their errors,
and their use by `sln corrupt`, `sln train` and `sln evaluate --split ilsvrc12`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.data import load_dataset
from sln_cli.data.animal10n import CLASSES as ANIMAL_CLASSES
from sln_cli.data.animal10n import channel_statistics
from sln_cli.data.files import decode_image
from sln_cli.errors import SlnError
from tests.synthetic import write_animal10n, write_webvision

runner = CliRunner()

# ---------------------------------------------------------------------------------------------- Animal-10N


def test_animal10n_labels_from_file_names_in_sorted_order(tmp_path: Path) -> None:
    root = write_animal10n(tmp_path / "A", n_train=23, n_test=12)
    (root / "training" / "readme.txt").write_text("not an image")  # skipped: only images count
    data = load_dataset("Animal-10N", root)
    assert data.name == "animal10n" and data.classes == ANIMAL_CLASSES and data.val is None
    names = sorted(p.name for p in (root / "training").glob("*.jpg"))
    assert data.train.labels.tolist() == [int(name.split("_")[0]) for name in names]
    assert data.train.labels.tolist()[:4] == [0, 0, 0, 1]  # 0_00001, 0_00031, 0_00061, 1_00004: sorted by name
    assert data.train.images.shape == (23, 3, 64, 64) and data.test.images.shape == (12, 3, 64, 64)
    assert torch.equal(data.train.images[5], decode_image(root / "training" / names[5]))
    assert data.mean == channel_statistics(data.train.images)[0]


def test_channel_statistics_equal_the_float_computation() -> None:
    images = torch.randint(0, 256, (37, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_statistics(images, chunk=8)
    pixels = images.double().permute(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(mean, pixels.mean(dim=1).numpy(), atol=1e-4)
    np.testing.assert_allclose(std, pixels.std(dim=1, unbiased=False).numpy(), atol=1e-4)


@pytest.mark.parametrize("bad_name", ["cat_00001.jpg", "10_00001.jpg", "3.jpg", "3_.jpg"])
def test_animal10n_unparsable_file_name_is_named(tmp_path: Path, bad_name: str) -> None:
    root = write_animal10n(tmp_path, n_train=10, n_test=10)
    (root / "testing" / "0_00001.jpg").rename(root / "testing" / bad_name)
    with pytest.raises(SlnError, match=f"cannot read a label from the file name .*testing/{bad_name}"):
        load_dataset("animal10n", root)


def test_animal10n_missing_split_and_wrong_size(tmp_path: Path) -> None:
    root = write_animal10n(tmp_path, n_train=10, n_test=10)
    from PIL import Image

    Image.new("RGB", (32, 64)).save(root / "training" / "4_99999.jpg")  # width 32, height 64
    with pytest.raises(SlnError, match="4_99999.jpg is 32×64 pixels; Animal-10N images are 64×64"):
        load_dataset("animal10n", root)
    (root / "training" / "4_99999.jpg").unlink()
    for path in (root / "testing").iterdir():
        path.unlink()
    (root / "testing").rmdir()
    with pytest.raises(SlnError, match="no testing/ folder in .*ROOT/training/ and ROOT/testing/"):
        load_dataset("animal10n", root)


def test_corrupt_and_inspect_on_animal10n(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_animal10n(tmp_path / "A", n_train=40, n_test=10)
    monkeypatch.chdir(tmp_path)
    made = runner.invoke(app, ["corrupt", "--dataset", "animal10n", "--data-dir", "A", "--mode", "sym", "--rate",
                               "0.5", "--exact", "--out", "a.csv", "--json"])
    assert made.exit_code == 0, made.output
    inspected = runner.invoke(app, ["corrupt", "--inspect", "a.csv", "--dataset", "animal10n", "--data-dir", "A",
                                    "--json"])
    assert inspected.exit_code == 0, inspected.output
    summary = json.loads(inspected.stdout)
    assert summary["num_samples"] == 40 and summary["num_noisy"] == 20 and summary["classes"] == list(ANIMAL_CLASSES)


# ---------------------------------------------------------------------------------------------- mini-WebVision


def test_webvision_mini_keeps_the_first_50_classes(tmp_path: Path) -> None:
    root = write_webvision(tmp_path / "W", n_train=130, n_val=70)
    data = load_dataset("webvision_mini", root)
    assert data.name == "webvision-mini" and data.num_classes == 50 and data.val is None
    assert data.classes[:2] == ("n10000000", "n10000007")  # info/synsets.txt, first field, in label order
    train_lines = (root / "info" / "train_filelist_google.txt").read_text().split("\n")
    kept = [line.split() for line in train_lines if line and int(line.split()[1]) < 50]
    assert data.train.labels.tolist() == [int(label) for _, label in kept]
    assert list(data.train.files) == [root / path for path, _ in kept]
    assert data.test.files[0] == root / "val_images_256" / "val000001.jpg" and data.test.labels.max() == 49
    assert len(data.test) == 60  # labels 0..59 cycled over 70 images: 50 + 10 of them below 50
    assert decode_image(data.train.files[-1]).shape == (3, 16, 20)


@pytest.mark.parametrize("layout", ["synsets", "labels", "list"])
def test_webvision_ilsvrc12_test_set_in_three_layouts(tmp_path: Path, layout: str) -> None:
    data = load_dataset("webvision-mini", write_webvision(tmp_path, imagenet=layout, n_imagenet=2))
    ilsvrc12 = data.extra_tests["ilsvrc12"]
    assert ilsvrc12.labels.tolist() == [label for label in range(50) for _ in range(2)]
    assert all(path.is_file() for path in ilsvrc12.files)


def test_webvision_without_imagenet_has_no_second_test_set(tmp_path: Path) -> None:
    assert load_dataset("webvision-mini", write_webvision(tmp_path, imagenet="none")).extra_tests == {}


def test_webvision_errors_name_the_file(tmp_path: Path) -> None:
    root = write_webvision(tmp_path, imagenet="synsets")
    (root / "imagenet" / "val" / "n10000014").rename(root / "imagenet" / "val" / "elsewhere")
    with pytest.raises(SlnError, match="ILSVRC12 validation images of class 2 are missing: expected .*n10000014 or"):
        load_dataset("webvision-mini", root)
    listing = root / "info" / "val_filelist.txt"
    listing.write_text(listing.read_text() + "val000099.jpg cat\n")
    with pytest.raises(SlnError, match=r"val_filelist.txt:13: expected '<image path> <label 0..999>'"):
        load_dataset("webvision-mini", root)
    listing.unlink()
    with pytest.raises(SlnError, match="no info/val_filelist.txt in .*pass --data-dir to the WebVision folder"):
        load_dataset("webvision-mini", root)


def test_corrupt_and_inspect_on_webvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_webvision(tmp_path / "W", imagenet="none")
    monkeypatch.chdir(tmp_path)
    made = runner.invoke(app, ["corrupt", "--dataset", "webvision-mini", "--data-dir", "W", "--mode", "sym",
                               "--rate", "0.25", "--exact", "--out", "w.csv"])
    assert made.exit_code == 0, made.output
    inspected = runner.invoke(app, ["corrupt", "--inspect", "w.csv", "--dataset", "webvision-mini", "--data-dir", "W",
                                    "--json"])
    assert inspected.exit_code == 0, inspected.output
    assert json.loads(inspected.stdout)["num_noisy"] == 6  # round(0.25 * 24 training images)


@pytest.mark.slow  # two tiny training runs and an evaluation
def test_train_on_both_and_evaluate_the_ilsvrc12_test_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_animal10n(tmp_path / "A", n_train=20, n_test=10)
    write_webvision(tmp_path / "W", imagenet="labels")
    monkeypatch.chdir(tmp_path)
    tiny = ["--epochs", "1", "--set", "model.name=cnn", "--device", "cpu", "--quiet", "--set", "optim.batch_size=8"]
    animal = runner.invoke(app, ["train", "--preset", "animal10n", "--data-dir", "A", "--out", "runs/a", *tiny])
    assert animal.exit_code == 0, animal.output
    web = runner.invoke(app, ["train", "--preset", "webvision-mini", "--data-dir", "W", "--out", "runs/w", *tiny,
                              "--set", "data.resize=16", "--set", "data.crop=16", "--set", "data.workers=0"])
    assert web.exit_code == 0, web.output
    evaluated = runner.invoke(app, ["evaluate", "runs/w", "--split", "ilsvrc12", "--json", "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    rows = json.loads(evaluated.stdout)
    assert {row["num_samples"] for row in rows if "num_samples" in row} == {100}
    missing = runner.invoke(app, ["evaluate", "runs/a", "--split", "ilsvrc12", "--device", "cpu"])
    assert missing.exit_code == 1 and "animal10n has no ilsvrc12 test set" in missing.stderr
