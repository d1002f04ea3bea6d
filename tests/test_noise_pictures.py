"""`sln corrupt --inspect FILE --plot PNG`: the heat map shows the file's row-normalised matrix with class names
(numbers only up to 20 classes), the example grid shows truly flipped images captioned true -> noisy, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.labels import pictures as noise_pictures
from sln_cli.render import gallery, plots
from tests.synthetic import CIFAR10_NAMES, cifar_arrays, write_cifar10
from tests.test_evaluate import assert_one_line_error

runner = CliRunner()


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every figure saved, kept for inspection (and still written)."""
    saved: list = []
    original = plots.save_figure

    def keep(figure, path):
        saved.append(figure)
        original(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(gallery, "save_figure", keep)
    return saved


@pytest.fixture
def label_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_cifar10(tmp_path / "DATA", n_train=100, n_test=10, seed=0)
    monkeypatch.chdir(tmp_path)
    made = runner.invoke(app, ["corrupt", "--dataset", "cifar10", "--data-dir", "DATA", "--mode", "sym", "--rate",
                               "0.4", "--out", "labels.csv"])
    assert made.exit_code == 0, made.output
    return tmp_path / "labels.csv"


def test_heat_map_and_example_grid(label_file: Path, figures: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(noise_pictures, "EXAMPLES_PER_CLASS", 3)  # fewer panels: a faster test, the same code
    result = runner.invoke(app, ["corrupt", "--inspect", str(label_file), "--dataset", "cifar10", "--data-dir", "DATA",
                                 "--plot", "noise.png", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["plots"] == {"transition_matrix": "noise.png", "examples": "noise-examples.png"}
    for path in summary["plots"].values():
        with Image.open(path) as image:
            assert image.format == "PNG"
    heat, grid = figures
    (axis, *_) = heat.axes
    matrix = np.array(summary["transition_matrix"])
    assert np.array_equal(axis.images[0].get_array(), matrix)  # the row-normalised matrix itself
    assert [label.get_text() for label in axis.get_yticklabels()] == list(CIFAR10_NAMES)
    assert len(axis.texts) == int((matrix > 0).sum())  # one number per non-empty cell
    rows = np.loadtxt(label_file, delimiter=",", skiprows=1, dtype=np.int64)
    clean, noisy = cifar_arrays(10, 100, 10, seed=0)[1], rows[:, 1]
    shown = {}
    for image_axis in grid.axes:
        caption = image_axis.get_title()
        if image_axis.images:
            true_name, noisy_name = caption.split(" → ")
            assert true_name != noisy_name
            shown.setdefault(true_name, []).append(image_axis.images[0].get_array())
    for true_class, name in enumerate(CIFAR10_NAMES):  # up to 3 flipped images of each class, all truly flipped
        flipped = np.flatnonzero((clean == true_class) & (noisy != clean))
        assert len(shown.get(name, [])) == min(3, len(flipped))
    train_images = cifar_arrays(10, 100, 10, seed=0)[0]
    first = np.asarray(next(iter(shown.values()))[0])  # a shown image is one of the flipped training images
    assert any(np.array_equal(first, train_images[i].transpose(1, 2, 0)) for i in np.flatnonzero(noisy != clean))


def test_many_classes_get_no_per_cell_numbers(tmp_path: Path, figures: list) -> None:
    names = [f"class{i}" for i in range(21)]
    matrix = np.full((21, 21), 0.4 / 20) + np.eye(21) * (0.6 - 0.4 / 20)
    plots.plot_transition_matrix(tmp_path / "m.png", matrix, names)
    (axis, *_) = figures[0].axes
    assert len(axis.texts) == 0
    small = plots.plot_transition_matrix(tmp_path / "s.png", matrix[:5, :5] / matrix[:5, :5].sum(1, keepdims=True),
                                         names[:5])
    assert small is None and len(figures[1].axes[0].texts) == 25


def test_plot_errors(label_file: Path) -> None:
    assert_one_line_error(["corrupt", "--inspect", str(label_file), "--plot", "noise.jpg"], "must end in .png")
    assert_one_line_error(["corrupt", "--dataset", "cifar10", "--data-dir", "DATA", "--mode", "sym", "--rate", "0.2",
                           "--out", "b.csv", "--plot", "x.png"], "--plot draws the file given to --inspect")
    Path("taken.png").write_bytes(b"mine")
    assert_one_line_error(["corrupt", "--inspect", str(label_file), "--plot", "taken.png"],
                          "taken.png already exists; pass --overwrite")
    assert Path("taken.png").read_bytes() == b"mine" and not Path("b.csv").exists()


def test_a_rerun_into_the_same_plot_needs_and_accepts_overwrite(label_file: Path) -> None:
    inspect = ["corrupt", "--inspect", str(label_file), "--dataset", "cifar10", "--data-dir", "DATA", "--plot", "n.png"]
    assert runner.invoke(app, inspect).exit_code == 0
    before = Path("n-examples.png").stat().st_mtime_ns
    assert_one_line_error(inspect, "pass --overwrite")
    again = runner.invoke(app, [*inspect, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert Path("n-examples.png").stat().st_mtime_ns > before  # both PNGs were drawn again
    assert_one_line_error(["corrupt", "--inspect", str(label_file), "--overwrite"], "drop --overwrite")
