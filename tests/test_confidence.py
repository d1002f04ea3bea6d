"""Per-sample confidence scores, clean/mislabelled summaries and loss-based detection of mislabelled samples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sln_cli.analyze.confidence import (
    confidence_report,
    confidence_scores,
    detection_metrics,
    per_sample_loss,
    summarize,
    summarize_by_noise,
)
from sln_cli.errors import SlnError


def pairwise_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2, over all positive-negative pairs."""
    pairs = list(itertools.product(scores[positive], scores[~positive]))
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


def test_scores_by_hand() -> None:
    scores = confidence_scores(np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.25, 0.5, 0.25]]))
    np.testing.assert_allclose(scores.max_probability, [0.5, 1.0, 0.5])
    np.testing.assert_allclose(scores.margin, [0.2, 1.0, 0.25])
    entropy_first = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    np.testing.assert_allclose(scores.entropy, [entropy_first, 0.0, 1.5 * math.log(2)])  # 0 log 0 = 0


def test_margin_is_zero_for_a_tie_at_the_top() -> None:
    assert confidence_scores(np.array([[0.4, 0.4, 0.2]])).margin[0] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    losses = rng.integers(0, 4, size=30).astype(float)  # few distinct values: many ties
    mislabelled = rng.random(30) < 0.4
    assert detection_metrics(losses, mislabelled)["auroc"] == pytest.approx(pairwise_auroc(losses, mislabelled))


def test_precision_recall_of_the_highest_losses_by_hand() -> None:
    losses = np.array([0.1, 2.0, 0.3, 1.5, 0.2, 0.9, 3.0, 0.05])
    mislabelled = np.array([False, True, False, False, False, True, True, False])
    # r = 3/8 -> flag the 3 highest losses: 3.0 (yes), 2.0 (yes), 1.5 (no) -> precision 2/3, recall 2/3
    metrics = detection_metrics(losses, mislabelled)
    assert (metrics["flagged"], metrics["precision"], metrics["recall"]) == (3, pytest.approx(2 / 3),
                                                                             pytest.approx(2 / 3))
    # r = 0.5 -> 4 flagged: + 0.9 (yes) -> precision 3/4, recall 1
    metrics = detection_metrics(losses, mislabelled, noise_rate=0.5)
    assert (metrics["flagged"], metrics["precision"], metrics["recall"]) == (4, 0.75, 1.0)
    # r * N = 0.3125 * 8 = 2.5 rounds half up to 3 (Python's round() would give 2)
    assert detection_metrics(losses, mislabelled, noise_rate=0.3125)["flagged"] == 3


def test_detection_without_mislabelled_samples_has_no_auroc() -> None:
    metrics = detection_metrics(np.array([0.1, 0.2]), np.array([False, False]))
    assert metrics == {"auroc": None, "flagged": 0, "precision": None, "recall": None}


def test_summaries_split_by_mask() -> None:
    values = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    mislabelled = np.array([False, False, False, True, True])
    summary = summarize_by_noise({"loss": values}, mislabelled)["loss"]
    assert summary["clean"]["count"] == 3 and summary["clean"]["mean"] == 2.0 and summary["clean"]["median"] == 2.0
    assert summary["mislabelled"]["mean"] == 15.0
    assert summary["clean"]["q25"] == pytest.approx(1.5)  # linear interpolation between 1 and 2
    assert summarize(np.array([]))["mean"] is None


def test_confidence_report_end_to_end() -> None:
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    noisy, clean = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1])  # the last two are mislabelled
    report = confidence_report(probs, noisy, clean)
    assert set(report) == {"max_probability", "entropy", "margin", "loss", "detection"}
    np.testing.assert_allclose(per_sample_loss(probs, noisy), -np.log([0.8, 0.7, 0.4, 0.1]))
    assert report["loss"]["mislabelled"]["mean"] == pytest.approx(-(math.log(0.4) + math.log(0.1)) / 2)
    assert report["detection"]["auroc"] == 1.0 and report["detection"]["precision"] == 1.0


def test_bad_inputs_are_user_errors() -> None:
    with pytest.raises(SlnError, match="softmax"):
        confidence_scores(np.array([[3.0, -1.0]]))
    with pytest.raises(SlnError, match="boolean mislabelled mask"):
        detection_metrics(np.array([0.1, 0.2]), np.array([0, 1]))
    with pytest.raises(SlnError, match="noise rate"):
        detection_metrics(np.array([0.1, 0.2]), np.array([False, True]), noise_rate=1.5)
