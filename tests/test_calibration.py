"""Calibration metrics against values worked out by hand on a few fixed predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sln_cli.analyze.calibration import (
    PROBABILITY_FLOOR,
    adaptive_calibration_error,
    brier_score,
    calibration_report,
    negative_log_likelihood,
    reliability_bins,
    top_k_accuracy,
)
from sln_cli.errors import SlnError

# Five samples, three classes. Top-1 confidence / right?: 0.9 yes, 0.55 no, 0.7 yes, 0.72 no (argmax 2), 0.45 no.
PROBS = np.array([
    [0.90, 0.05, 0.05],
    [0.55, 0.35, 0.10],
    [0.20, 0.70, 0.10],
    [0.10, 0.18, 0.72],
    [0.45, 0.30, 0.25],
])
LABELS = np.array([0, 1, 1, 0, 2])


def test_metrics_match_hand_computation() -> None:
    report = calibration_report(PROBS, LABELS)
    assert report.accuracy == pytest.approx(2 / 5)
    nll = -(math.log(0.9) + math.log(0.35) + math.log(0.7) + math.log(0.1) + math.log(0.25)) / 5
    assert report.nll == pytest.approx(nll)
    brier = ((0.1**2 + 0.05**2 + 0.05**2) + (0.55**2 + 0.65**2 + 0.1**2) + (0.2**2 + 0.3**2 + 0.1**2)
             + (0.9**2 + 0.18**2 + 0.72**2) + (0.45**2 + 0.3**2 + 0.75**2)) / 5
    assert report.brier == pytest.approx(brier)
    # 15 bins of width 1/15: 0.9 -> (13/15, 14/15]; 0.55 -> (8/15, 9/15]; 0.7 and 0.72 -> (10/15, 11/15];
    # 0.45 -> (6/15, 7/15]. The shared bin has accuracy 1/2 and mean confidence 0.71.
    gaps = {13: abs(1 - 0.9), 8: abs(0 - 0.55), 10: abs(0.5 - 0.71), 6: abs(0 - 0.45)}
    weights = {13: 1 / 5, 8: 1 / 5, 10: 2 / 5, 6: 1 / 5}
    assert report.ece == pytest.approx(sum(weights[b] * gaps[b] for b in gaps))
    assert report.mce == pytest.approx(0.55)
    # 15 equal-mass bins over 5 samples: one sample per bin, so the mean of |right - confidence|.
    assert report.ece_adaptive == pytest.approx((0.1 + 0.55 + 0.3 + 0.72 + 0.45) / 5)
    assert report.top5 is None
    counts = report.reliability.counts
    assert counts.sum() == 5 and counts[10] == 2 and counts[[6, 8, 13]].tolist() == [1, 1, 1]
    assert np.isnan(report.reliability.accuracy[0]) and report.reliability.accuracy[10] == pytest.approx(0.5)


def test_nll_from_logits_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    probs = torch.softmax(logits, dim=1)
    expected = ((math.log(math.exp(2) + 2) - 2) + (math.log(math.exp(1) + 2) - 0)) / 2  # -log p_y, labels 0, 0
    assert negative_log_likelihood(probs, torch.tensor([0, 0])) == pytest.approx(expected, rel=1e-6)


def test_zero_probability_is_clamped_not_infinite() -> None:
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert negative_log_likelihood(probs, np.array([1, 0])) == pytest.approx((-math.log(PROBABILITY_FLOOR)
                                                                              - math.log(0.5)) / 2)


def test_adaptive_bins_split_sorted_confidences() -> None:
    confidence, correct = PROBS.max(axis=1), PROBS.argmax(axis=1) == LABELS
    # sorted: 0.45 no, 0.55 no, 0.7 yes | 0.72 no, 0.9 yes (sizes 3 and 2)
    expected = 3 / 5 * abs(1 / 3 - (0.45 + 0.55 + 0.7) / 3) + 2 / 5 * abs(1 / 2 - (0.72 + 0.9) / 2)
    assert adaptive_calibration_error(confidence, correct, bins=2) == pytest.approx(expected)
    # Both groups above are over-confident, which makes any split give the same value; here they differ:
    # 0.3 yes, 0.4 yes, 0.5 no | 0.8 no, 0.9 no
    confidence, correct = np.array([0.8, 0.3, 0.9, 0.5, 0.4]), np.array([False, True, False, False, True])
    expected = 3 / 5 * abs(2 / 3 - (0.3 + 0.4 + 0.5) / 3) + 2 / 5 * abs(0 - (0.8 + 0.9) / 2)
    assert adaptive_calibration_error(confidence, correct, bins=2) == pytest.approx(expected)


def test_single_bin_is_accuracy_minus_mean_confidence() -> None:
    report = calibration_report(PROBS, LABELS, bins=1)
    mean_confidence = (0.9 + 0.55 + 0.7 + 0.72 + 0.45) / 5
    assert report.ece == pytest.approx(abs(2 / 5 - mean_confidence))
    assert report.mce == pytest.approx(report.ece)
    assert report.ece_adaptive == pytest.approx(report.ece)


def test_all_correct_and_certain_is_perfectly_calibrated() -> None:
    labels = np.array([0, 2, 1, 2])
    report = calibration_report(np.eye(3)[labels], labels)
    assert (report.accuracy, report.ece, report.ece_adaptive, report.mce) == (1.0, 0.0, 0.0, 0.0)
    assert report.nll == pytest.approx(0.0) and report.brier == 0.0


def test_bins_are_closed_on_the_right() -> None:
    bins = reliability_bins(np.array([[0.5, 0.5], [0.75, 0.25], [0.25, 0.75]]), np.array([0, 0, 1]), bins=2)
    np.testing.assert_array_equal(bins.edges, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(bins.counts, [1, 2])  # 0.5 belongs to (0, 0.5]
    assert bins.confidence.tolist() == [0.5, 0.75]


def test_top5_by_hand() -> None:
    row = [0.40, 0.20, 0.15, 0.10, 0.10, 0.05]
    probs = np.array([row, row, [0.05, 0.40, 0.20, 0.15, 0.10, 0.10]])
    labels = np.array([5, 3, 0])  # last of six: out; fourth: in; last: out
    assert top_k_accuracy(probs, labels, k=5) == pytest.approx(1 / 3)
    assert calibration_report(probs, labels, top5=True).top5 == pytest.approx(1 / 3)
    with pytest.raises(SlnError, match="at least 7 classes"):
        top_k_accuracy(probs, labels, k=7)


def test_report_dict_is_the_json_contract() -> None:
    data = calibration_report(PROBS, LABELS, top5=False).to_dict()
    assert {"accuracy", "nll", "brier", "ece", "ece_adaptive", "mce"} <= data.keys() and "top5" not in data
    assert data["ece_bins"] == 15 and data["binning"] == "equal-width"
    json.dumps(data)  # plain floats and strings only
    bins = reliability_bins(PROBS, LABELS).to_dict()
    assert bins["accuracy"][0] is None and len(bins["edges"]) == 16
    json.dumps(bins)


def test_brier_of_uniform_prediction() -> None:
    # p = (1/4, ..., 1/4) against one-hot: (3/4)^2 + 3 * (1/4)^2 = 3/4 for every sample
    assert brier_score(np.full((3, 4), 0.25), np.array([0, 1, 3])) == pytest.approx(0.75)


@pytest.mark.parametrize(("probs", "labels", "message"), [
    (np.array([[2.0, -1.0]]), np.array([0]), "apply softmax"),
    (np.array([[0.5, 0.5]]), np.array([2]), "labels must be integers"),
    (np.array([[0.5, 0.5]]), np.array([0, 1]), "expected N x K"),
    (np.array([[0.5, 0.5]]), np.array([0.0]), "labels must be integers"),
])
def test_bad_inputs_are_user_errors(probs: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(SlnError, match=message):
        calibration_report(probs, labels)
