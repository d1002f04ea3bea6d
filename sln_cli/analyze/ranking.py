"""Ranking training samples by how likely their given label is wrong, and measuring a ranking or a flagged set
against the true labels when they are known (AUROC, precision/recall at r·N, precision at k, overlap of two sets).
"""

from __future__ import annotations

import math

import numpy as np

from sln_cli.analyze.confidence import _as_mask, _as_probabilities, detection_metrics, per_sample_loss
from sln_cli.errors import SlnError

SCORES = ("loss", "probability")  # -log p(given label): high = suspect; p(given label): low = suspect
RUN_SCORES = ("clean-probability",)  # saved by a run: DivideMix's clean posterior (methods.dividemix), low = suspect


def given_label_scores(probabilities: np.ndarray, given: np.ndarray, score: str) -> np.ndarray:
    """Per-sample `score` of the given label: its cross-entropy loss, or its predicted probability."""
    if score not in SCORES:
        raise SlnError(f"unknown --score {score!r}; use loss or probability")
    if score == "loss":
        return per_sample_loss(probabilities, given)
    probs = _as_probabilities(probabilities)
    per_sample_loss(probs, given)  # the same label checks
    return probs[np.arange(len(given)), np.asarray(given, np.int64)]


def suspicion(scores: np.ndarray, score: str) -> np.ndarray:
    """Scores turned so that higher always means "more likely mislabelled"."""
    return np.asarray(scores, np.float64) if score == "loss" else -np.asarray(scores, np.float64)


def rank_order(scores: np.ndarray, score: str) -> np.ndarray:
    """Sample positions, most suspect first; ties keep sample order (a stable sort), so a ranking is reproducible."""
    return np.argsort(-suspicion(scores, score), kind="stable")


def flagged_by_threshold(scores: np.ndarray, score: str, threshold: float) -> np.ndarray:
    """Loss at least `threshold`, or probability of the given label at most `threshold`."""
    if not math.isfinite(threshold):  # nan compares false with everything: it would flag nothing, silently
        raise SlnError(f"--threshold must be a finite number, got {threshold}")
    if score != "loss" and not 0 <= threshold <= 1:
        raise SlnError(f"--threshold for --score {score} is a probability in [0, 1], got {threshold}")
    if score == "loss" and threshold < 0:
        raise SlnError(f"--threshold for --score loss is a loss (>= 0), got {threshold}")
    scores = np.asarray(scores, np.float64)
    return scores >= threshold if score == "loss" else scores <= threshold


def flag_metrics(flagged: np.ndarray, mislabelled: np.ndarray) -> dict[str, float | int | None]:
    """How many were flagged, and the precision and recall of the flagged set against the truth."""
    truth = _as_mask(mislabelled, len(flagged))
    hits, count = int((flagged & truth).sum()), int(flagged.sum())
    return {"count": count, "precision": hits / count if count else None,
            "recall": hits / int(truth.sum()) if truth.any() else None}


def top_mask(order: np.ndarray, count: int) -> np.ndarray:
    """A boolean mask of the first `count` positions of a ranking."""
    mask = np.zeros(len(order), dtype=bool)
    mask[order[:count]] = True
    return mask


def ranking_report(scores: np.ndarray, score: str, mislabelled: np.ndarray, *, noise_rate: float | None,
                   top: int) -> dict[str, float | int | None]:
    """AUROC of the score, precision/recall of the round(r·N) most suspect (r = `noise_rate`, by default the
    realised rate), and precision at k = `top`."""
    truth = _as_mask(mislabelled, len(scores))
    report = detection_metrics(suspicion(scores, score), truth, noise_rate=noise_rate)
    rate = float(truth.mean()) if noise_rate is None else noise_rate
    chosen = rank_order(scores, score)[:top]
    return {"auroc": report["auroc"], "noise_rate": rate, "flagged_at_rate": report["flagged"],
            "precision_at_rate": report["precision"], "recall_at_rate": report["recall"], "k": top,
            "precision_at_k": float(truth[chosen].mean()) if top else None}


def overlap(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float | int | None]:
    """Counts of samples flagged by both, by one only, and the Jaccard index of the two sets."""
    both, either = int((ours & theirs).sum()), int((ours | theirs).sum())
    return {"both": both, "only_ours": int((ours & ~theirs).sum()), "only_theirs": int((theirs & ~ours).sum()),
            "jaccard": both / either if either else None}

