"""Accuracy and calibration of predicted class probabilities: top-1/top-5, NLL, Brier, ECE (equal-width and
equal-mass bins), MCE, and the per-bin data of a reliability diagram. Pure numpy on (N, K) probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sln_cli.errors import SlnError

BINS = 15  # Guo et al. (ICML 2017) and most calibration papers report ECE with 15 bins
PROBABILITY_FLOOR = 1e-12  # NLL clamps p_y to this, so a confident mistake costs at most -log(1e-12) ~ 27.6


@dataclass(frozen=True)
class ReliabilityBins:
    edges: np.ndarray  # (bins + 1,) from 0 to 1; bin b holds confidences in (edges[b], edges[b + 1]], bin 0 also 0
    counts: np.ndarray  # (bins,) samples per bin
    confidence: np.ndarray  # (bins,) mean top-1 probability per bin, NaN where empty
    accuracy: np.ndarray  # (bins,) fraction of top-1 predictions that are right per bin, NaN where empty

    @property
    def ece(self) -> float:
        """Sum over bins of (share of samples) * |accuracy - confidence|."""
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.counts[filled] / self.counts.sum() * gaps))

    def to_dict(self) -> dict:
        """JSON-ready lists; empty bins have `null` confidence and accuracy."""
        def nullable(values: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in values]

        return {"edges": self.edges.tolist(), "counts": self.counts.tolist(),
                "confidence": nullable(self.confidence), "accuracy": nullable(self.accuracy)}


@dataclass(frozen=True)
class CalibrationReport:
    accuracy: float  # top-1, ties broken towards the lower class index (as argmax)
    nll: float  # mean of -log(max(p_y, PROBABILITY_FLOOR))
    brier: float  # mean over samples of sum over classes (p_k - onehot_k)^2, in [0, 2]
    ece: float  # equal-width bins
    ece_adaptive: float  # equal-mass bins
    mce: float  # largest |accuracy - confidence| over non-empty equal-width bins
    top5: float | None  # when asked for
    reliability: ReliabilityBins  # the equal-width bins behind ece and mce

    def to_dict(self) -> dict:
        """The JSON contract of `sln evaluate`: metric keys plus a description of the binning."""
        metrics = {"accuracy": self.accuracy, "nll": self.nll, "brier": self.brier, "ece": self.ece,
                   "ece_adaptive": self.ece_adaptive, "mce": self.mce}
        if self.top5 is not None:
            metrics["top5"] = self.top5
        bins = len(self.reliability.counts)
        return metrics | {"ece_bins": bins, "binning": "equal-width", "ece_adaptive_bins": bins,
                          "ece_adaptive_binning": "equal-mass", "nll_probability_floor": PROBABILITY_FLOOR,
                          "brier_convention": "sum over classes, mean over samples"}


def calibration_report(probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, *,
                       bins: int = BINS, top5: bool = False) -> CalibrationReport:
    """All metrics at once; callers ask for `top5` when there are at least 20 classes."""
    probs, labels = _checked(probabilities, labels)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    reliability = reliability_bins(probs, labels, bins=bins)
    filled = reliability.counts > 0
    return CalibrationReport(
        accuracy=float(correct.mean()),
        nll=negative_log_likelihood(probs, labels),
        brier=brier_score(probs, labels),
        ece=reliability.ece,
        ece_adaptive=adaptive_calibration_error(confidence, correct, bins=bins),
        mce=float(np.max(np.abs(reliability.accuracy[filled] - reliability.confidence[filled]))),
        top5=top_k_accuracy(probs, labels, k=5) if top5 else None,
        reliability=reliability,
    )


def _checked(probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
             ) -> tuple[np.ndarray, np.ndarray]:
    """float64 (N, K) rows on the simplex and int64 (N,) labels in range, or an SlnError naming the problem."""
    probs = np.asarray(probabilities.detach().cpu() if torch.is_tensor(probabilities) else probabilities, np.float64)
    labels = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],) or probs.shape[0] == 0:
        raise SlnError(f"expected N x K probabilities and N labels with N > 0, got {probs.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise SlnError(f"labels must be integers in [0, {probs.shape[1]}); check the label file matches the model")
    if probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise SlnError("rows must be probabilities summing to 1; apply softmax to the logits first")
    return probs, labels.astype(np.int64)


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the k most probable classes (ties: lower class index first)."""
    probs, labels = _checked(probabilities, labels)
    if not 1 <= k <= probs.shape[1]:
        raise SlnError(f"top-{k} accuracy needs at least {k} classes; there are {probs.shape[1]}")
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean of -log p_y, with p_y clamped below at PROBABILITY_FLOOR so a zero probability stays finite."""
    probs, labels = _checked(probabilities, labels)
    picked = probs[np.arange(len(labels)), labels]
    return float(np.mean(-np.log(np.maximum(picked, PROBABILITY_FLOOR))))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of sum_k (p_k - onehot_k)^2 (the multi-class convention of Brier 1950, range [0, 2])."""
    probs, labels = _checked(probabilities, labels)
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = BINS) -> ReliabilityBins:
    """Equal-width bins of the top-1 confidence; bin b is (b/bins, (b+1)/bins] as in Guo et al.'s ECE code."""
    if bins < 1:
        raise SlnError("the number of calibration bins must be at least 1")
    probs, labels = _checked(probabilities, labels)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")  # count of inner edges strictly below
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become NaN on purpose
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct.astype(float), minlength=bins) / counts
    return ReliabilityBins(edges, counts, mean_confidence, accuracy)


def adaptive_calibration_error(confidence: np.ndarray, correct: np.ndarray, *, bins: int = BINS) -> float:
    """ECE over equal-mass bins (Nixon et al. 2019): samples sorted by confidence (stable, so ties keep their
    order) and split into `bins` groups whose sizes differ by at most one; empty groups (N < bins) are skipped."""
    if bins < 1:
        raise SlnError("the number of calibration bins must be at least 1")
    order = np.argsort(confidence, kind="stable")
    total = 0.0
    for group in np.array_split(order, bins):
        if len(group):
            total += len(group) / len(order) * abs(correct[group].mean() - confidence[group].mean())
    return float(total)
