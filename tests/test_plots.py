"""Each plot writes a valid PNG of a sensible size (content is checked by eye, not here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sln_cli.analyze.calibration import reliability_bins
from sln_cli.analyze.confidence import confidence_scores
from sln_cli.analyze.landscape import LandscapeCurve, LandscapeGrid
from sln_cli.render import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: tuple[int, int], max_size: tuple[int, int] = (2400, 1800)) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min_size[0] <= image.width <= max_size[0] and min_size[1] <= image.height <= max_size[1]
    assert not list(path.parent.glob(f".{path.name}.*"))  # the atomic write left no temporary file


def random_probabilities(rng: np.random.Generator, samples: int, classes: int) -> np.ndarray:
    logits = rng.standard_normal((samples, classes)) * 2
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_reliability_of_two_runs(tmp_path: Path, rng: np.random.Generator) -> None:
    diagrams = {}
    for name in ("ce", "sln"):
        probs = random_probabilities(rng, 200, 5)
        diagrams[name] = reliability_bins(probs, rng.integers(0, 5, 200))
    plots.plot_reliability(tmp_path / "reliability.png", diagrams)
    assert_png(tmp_path / "reliability.png", min_size=(600, 300))


def test_confidence_histograms(tmp_path: Path, rng: np.random.Generator) -> None:
    scores = confidence_scores(random_probabilities(rng, 300, 10))
    plots.plot_confidence_histograms(tmp_path / "hist.png", scores, rng.random(300) < 0.3)
    assert_png(tmp_path / "hist.png", min_size=(900, 300))


def test_landscape_curves(tmp_path: Path) -> None:
    alphas = np.linspace(-1, 1, 11)
    curves = {"ce": LandscapeCurve(alphas, 1 + alphas**2), "sln": LandscapeCurve(alphas, 1 + 0.3 * alphas**2)}
    plots.plot_landscape_curves(tmp_path / "out" / "curve.png", curves)  # creates the folder
    assert_png(tmp_path / "out" / "curve.png", min_size=(300, 300))


def test_landscape_surfaces_with_a_missing_point(tmp_path: Path) -> None:
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    surface = alphas[:, None] ** 2 + betas[None, :] ** 2
    partial = surface * 3
    partial[0, 0] = np.nan  # not yet computed
    grids = {"ce": LandscapeGrid(alphas, betas, surface), "sln": LandscapeGrid(alphas, betas, partial)}
    plots.plot_landscape_surfaces(tmp_path / "surface.png", grids, levels=8)
    assert_png(tmp_path / "surface.png", min_size=(600, 300))


def test_memorisation(tmp_path: Path) -> None:
    epochs = [1, 2, 3, 4]
    plots.plot_memorisation(tmp_path / "memo.png", {"ce": (epochs, [0.1, 0.3, 0.6, 0.8]),
                                                    "sln": (epochs, [0.1, 0.15, 0.2, 0.2])})
    assert_png(tmp_path / "memo.png", min_size=(300, 300))
