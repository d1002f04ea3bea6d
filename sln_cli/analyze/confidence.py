"""Per-sample confidence (max-probability, entropy, margin) split by clean vs mislabelled training samples, and
how well the per-sample loss flags the mislabelled ones (AUROC, precision/recall at the noise rate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from sln_cli.errors import SlnError

QUANTILES = (0.05, 0.25, 0.75, 0.95)
LOSS_FLOOR = 1e-12  # per-sample loss clamps p_y below, like calibration.PROBABILITY_FLOOR


@dataclass(frozen=True)
class ConfidenceScores:
    max_probability: np.ndarray  # (N,) top-1 probability
    entropy: np.ndarray  # (N,) -sum p log p in nats, with 0 log 0 = 0
    margin: np.ndarray  # (N,) top-1 minus top-2 probability


def _as_probabilities(probabilities: np.ndarray | torch.Tensor) -> np.ndarray:
    probs = np.asarray(probabilities.detach().cpu() if torch.is_tensor(probabilities) else probabilities, np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2 or probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1, atol=1e-3):
        raise SlnError("expected N x K probabilities (K >= 2) whose rows sum to 1; apply softmax to the logits first")
    return probs


def confidence_scores(probabilities: np.ndarray | torch.Tensor) -> ConfidenceScores:
    """Max-probability, entropy and margin of each row of an N x K probability matrix."""
    probs = _as_probabilities(probabilities)
    top_two = -np.partition(-probs, 1, axis=1)[:, :2]  # (N, 2): largest, second largest
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(probs > 0, probs * np.log(probs), 0.0), axis=1)
    return ConfidenceScores(top_two[:, 0], entropy, top_two[:, 0] - top_two[:, 1])


def per_sample_loss(probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cross-entropy of each sample against its (possibly noisy) label: -log max(p_y, LOSS_FLOOR)."""
    probs = _as_probabilities(probabilities)
    labels = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels).astype(np.int64)
    if labels.shape != (probs.shape[0],) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise SlnError(f"expected {probs.shape[0]} labels in [0, {probs.shape[1]}); check the label file")
    return -np.log(np.maximum(probs[np.arange(len(labels)), labels], LOSS_FLOOR))


def summarize(values: np.ndarray) -> dict[str, float | int | None]:
    """count, mean, median and the QUANTILES (keys q05, q25, ...) of a 1-D array; statistics are None if empty."""
    stats: dict[str, float | int | None] = {"count": int(values.size)}
    names = ["mean", "median", *(f"q{round(q * 100):02d}" for q in QUANTILES)]
    if values.size == 0:
        return stats | dict.fromkeys(names)
    numbers = [np.mean(values), np.median(values), *np.quantile(values, QUANTILES)]
    return stats | {name: float(number) for name, number in zip(names, numbers, strict=True)}


def summarize_by_noise(values: Mapping[str, np.ndarray], mislabelled: np.ndarray) -> dict[str, dict[str, dict]]:
    """{name: {"clean": summary, "mislabelled": summary}} for each named per-sample array."""
    summaries = {}
    for name, array in values.items():
        mask = _as_mask(mislabelled, len(array))
        summaries[name] = {"clean": summarize(array[~mask]), "mislabelled": summarize(array[mask])}
    return summaries


def _as_mask(mislabelled: np.ndarray, size: int) -> np.ndarray:
    mask = np.asarray(mislabelled)
    if mask.shape != (size,) or mask.dtype != np.bool_:
        raise SlnError(f"expected a boolean mislabelled mask of {size} samples (noisy label != clean label)")
    return mask


def detection_metrics(losses: np.ndarray, mislabelled: np.ndarray, *,
                      noise_rate: float | None = None) -> dict[str, float | int | None]:
    """How well a high loss flags mislabelled samples (the positives).

    `auroc`: sklearn's ROC AUC of the loss (ties count 1/2); None when every sample is clean or every one is
    mislabelled. `precision` / `recall` of flagging the round(r * N) highest losses (rounded half up; ties in the
    loss broken by sample order), r = `noise_rate` or, by default, the realised fraction of mislabelled samples.
    """
    mask = _as_mask(mislabelled, len(losses))
    rate = float(mask.mean()) if noise_rate is None else noise_rate
    if not 0 <= rate <= 1:
        raise SlnError(f"the noise rate must be between 0 and 1, got {rate}")
    flagged = math.floor(rate * len(losses) + 0.5)
    chosen = np.argsort(-np.asarray(losses, dtype=np.float64), kind="stable")[:flagged]
    hits = int(mask[chosen].sum())
    both_classes = 0 < mask.sum() < len(mask)
    return {
        "auroc": float(roc_auc_score(mask, losses)) if both_classes else None,
        "flagged": flagged,
        "precision": hits / flagged if flagged else None,
        "recall": hits / int(mask.sum()) if mask.any() else None,
    }


def confidence_report(probabilities: np.ndarray | torch.Tensor, noisy_labels: np.ndarray, clean_labels: np.ndarray,
                      *, noise_rate: float | None = None) -> dict:
    """Summaries of max_probability, entropy, margin and loss (against the noisy label) by clean/mislabelled,
    and the loss-based detection metrics under "detection"."""
    noisy, clean = np.asarray(noisy_labels), np.asarray(clean_labels)
    if noisy.shape != clean.shape:
        raise SlnError("the noisy and clean labels differ in length; use the label file made for this dataset")
    scores, losses = confidence_scores(probabilities), per_sample_loss(probabilities, noisy)
    named = {"max_probability": scores.max_probability, "entropy": scores.entropy, "margin": scores.margin,
             "loss": losses}
    return summarize_by_noise(named, noisy != clean) | {
        "detection": detection_metrics(losses, noisy != clean, noise_rate=noise_rate)}
