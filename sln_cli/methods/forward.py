"""Forward correction (Patrini et al., CVPR 2017): cross-entropy on `softmax(z) @ T`, the network's belief about
the true class pushed through the label-noise transition matrix T (rows = true class, T_ij = P(given j | true i)).

T comes from `method.forward_matrix`: `labels` (the training labels' own T, counted from true vs given
labels), a K×K `.npy`/`.csv`, or a finished run directory whose `probs.npy` estimates it (Patrini et al.).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sln_cli.errors import SlnError
from sln_cli.methods.base import Configured, MethodContext, probabilities
from sln_cli.rundir import readers

KEY = "method.forward_matrix"


class ForwardCorrection(Configured):
    def __init__(self, settings, context: MethodContext) -> None:
        super().__init__(settings, context)
        matrix = transition_matrix(settings.forward_matrix, context, anchor=settings.forward_anchor or "percentile")
        self.transition = torch.as_tensor(matrix, dtype=torch.float32, device=context.device)  # (K, K)

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        noisy_probs = probabilities(logits) @ self.transition  # (B, K): P(given label = j | x)
        return -(targets * noisy_probs.clamp_min(1e-12).log()).sum(dim=1).mean()


def transition_matrix(source: str, context: MethodContext, *, anchor: str = "percentile") -> np.ndarray:
    """T from `source` (see the module docstring), checked to be K×K, finite and row-stochastic."""
    k = context.num_classes
    if source == "labels":
        if context.clean is None:
            raise SlnError(f"{KEY}=labels needs the true labels, and this label set has none; give a K×K "
                           ".npy/.csv or a finished run directory (its probs.npy estimates T)")
        counts = np.zeros((k, k))
        np.add.at(counts, (context.clean, context.noisy), 1)
        rows = counts.sum(axis=1, keepdims=True)
        return np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(k))  # an absent class keeps its label
    path = Path(source)
    if path.is_dir():
        if not (path / "probs.npy").is_file():
            raise SlnError(f"{KEY}: {path} has no probs.npy; train that run with --record-probs")
        probs = _load(path / "probs.npy")
        if probs.ndim != 2 or probs.shape[1] != k:
            raise SlnError(f"{KEY}: {path}/probs.npy has shape {probs.shape}, expected (N, {k})")
        # Patrini et al.'s main_experiment.py (commit acfb9ab): filter_outlier except on CIFAR-100 (forward_anchor)
        percentile = 97.0 if anchor == "percentile" else None
        return check_transition(estimate_transition(probs, percentile), k, str(path))
    if path.suffix not in (".npy", ".csv") or not path.is_file():
        raise SlnError(f"{KEY} must be 'labels', a .npy/.csv file or a run directory; {source!r} is none of them")
    return check_transition(_load(path), k, source)


def _load(path: Path) -> np.ndarray:
    try:  # bounded, real, finite, non-empty; one line otherwise
        return readers.read_matrix(path, what="the file")
    except SlnError as exc:
        raise SlnError(f"{KEY}: {exc}") from None


def check_transition(matrix: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    if matrix.shape != (num_classes, num_classes):
        raise SlnError(f"{KEY}: {where} is {'×'.join(map(str, matrix.shape))}, expected "
                       f"{num_classes}×{num_classes} (rows = true class)")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise SlnError(f"{KEY}: {where} has negative or non-finite entries; T must be row-stochastic")
    sums = matrix.sum(axis=1)
    if (bad := np.flatnonzero(np.abs(sums - 1) > 1e-3)).size:
        raise SlnError(f"{KEY}: {where} is not row-stochastic (row {bad[0]} sums to {sums[bad[0]]:.4f})")
    return matrix / sums[:, None]


def estimate_transition(probs: np.ndarray, percentile: float | None = 97.0) -> np.ndarray:
    """Patrini et al.'s estimator: row i of T is the prediction on the sample most confidently of class i:
    the plain argmax of p(i|x) (`percentile` None, their `filter_outlier=False`, used on CIFAR-100), or the
    largest value below the 97th percentile to skip outliers (`filter_outlier=True`; unlike the official code,
    which zeroes its input in place, every row here reads the unmodified probabilities)."""
    rows = []
    for i in range(probs.shape[1]):
        column = probs[:, i]
        if percentile is None:
            rows.append(probs[np.argmax(column)])
            continue
        threshold = np.percentile(column, percentile, method="higher")
        rows.append(probs[np.argmax(np.where(column >= threshold, -np.inf, column))])
    return np.stack(rows)
