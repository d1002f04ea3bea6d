"""`sln analyze noise`: the noise rate and the transition matrix T (rows: true class, columns: label given) of a
run's training labels, estimated from its recorded softmax (probs.npy) without the truth, two ways: the anchor
points forward correction uses (Patrini et al., 2017; `methods.forward.estimate_transition`) and cleanlab's
confident joint (Northcutt et al., 2021; `cleanlab.count.estimate_joint`, extra sln-cli[cleanlab]).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np

from sln_cli.errors import SlnError
from sln_cli.methods.forward import estimate_transition
from sln_cli.render.json import plain
from sln_cli.rundir import ownership, readers, runs

_HEADER_BYTES = 1 << 12  # a .npy header is at most a few hundred bytes
FIGURES = ("noise-anchor.png", "noise-confident-joint.png", "noise-truth.png")


class Truth(TypedDict):
    noise_rate: float  # the fraction of training labels that differ from the true ones
    transition: list[list[float]]  # K×K, row i: the labels given to true class i (rows sum to 1)


class Estimate(Truth):
    noise_rate_error: NotRequired[float]  # |estimate - truth|, when the truth is known
    transition_mae: NotRequired[float]  # mean |T_estimated - T_true| over the K×K entries, when the truth is known


class NoiseResult(TypedDict):
    """`sln analyze noise --json`: one run's noise rate and transition matrix, estimated without the truth."""

    run_dir: str
    samples: int
    classes: list[str]
    estimators: dict[str, Estimate | None]  # anchor; confident_joint (None without the cleanlab extra)
    truth: Truth | None  # from the true labels, when the run's label file has them
    figures: list[str]  # the heat maps drawn


def anchor_estimate(probs: np.ndarray, noisy: np.ndarray) -> tuple[np.ndarray, float]:
    """T from anchor points; the noise rate sum_i p(y=i) (1 - T_ii), with the true class prior p(y) solved from
    the labels' prior p(y~) = p(y) T (least squares, clipped to a distribution)."""
    num_classes = probs.shape[1]
    matrix = estimate_transition(probs)
    matrix = matrix / matrix.sum(axis=1, keepdims=True)
    noisy_prior = np.bincount(noisy, minlength=num_classes) / len(noisy)
    prior = np.clip(np.linalg.lstsq(matrix.T, noisy_prior, rcond=None)[0], 0, None)
    prior = prior / prior.sum() if prior.sum() > 0 else noisy_prior
    return matrix, float(np.sum(prior * (1 - np.diag(matrix))))


def confident_joint_estimate(probs: np.ndarray, noisy: np.ndarray) -> tuple[np.ndarray, float]:
    """cleanlab's calibrated confident joint Q[i, j] = p(label i, true class j): T[j, i] = Q[i, j] / sum_i Q[i, j],
    the noise rate 1 - trace(Q)."""
    from cleanlab.count import estimate_joint

    joint = np.asarray(estimate_joint(noisy, probs), dtype=np.float64)
    true_mass = joint.sum(axis=0)
    matrix = np.where(true_mass[:, None] > 0, joint.T / np.maximum(true_mass[:, None], 1e-12), np.eye(len(joint)))
    return matrix, float(1 - np.trace(joint))


def true_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (clean, noisy), 1)
    rows = counts.sum(axis=1, keepdims=True)
    return np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(num_classes))


def estimates(probs: np.ndarray, noisy: np.ndarray, clean: np.ndarray | None) -> dict[str, Any]:
    """Both estimators (the confident joint only with cleanlab installed) and, with the truth, their errors."""
    k = probs.shape[1]
    found: dict[str, Any] = {}
    matrix, rate = anchor_estimate(probs, noisy)
    found["anchor"] = {"noise_rate": rate, "transition": matrix}
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        found["confident_joint"] = None
    else:
        matrix, rate = confident_joint_estimate(probs, noisy)
        found["confident_joint"] = {"noise_rate": rate, "transition": matrix}
    truth = None
    if clean is not None:
        truth = {"noise_rate": float(np.mean(clean != noisy)), "transition": true_transition(clean, noisy, k)}
        for estimate in (e for e in found.values() if e is not None):
            estimate["noise_rate_error"] = abs(estimate["noise_rate"] - truth["noise_rate"])
            estimate["transition_mae"] = float(np.abs(estimate["transition"] - truth["transition"]).mean())
    return {"estimators": found, "truth": truth}


def analyze_noise(run_dir: Path, *, out: Path | None = None, overwrite: bool = False) -> NoiseResult:
    """Read the run's probs.npy and its training labels; estimate; draw the heat maps; a JSON-ready result."""
    from sln_cli.labels.trainset import build_trainset
    from sln_cli.render.plots import plot_transition_matrix
    from sln_cli.training.checkpoints import read_config

    runs.check_run_dir(run_dir)
    config = read_config(run_dir)
    labels = run_dir / "labels.csv"
    if not labels.is_file():
        raise SlnError(f"{run_dir} has no labels.csv; give a run directory written by `sln train`")
    trainset = build_trainset(config.data, dataclasses.replace(config.noise, labels=str(labels), label_set=None))
    probs = _read_probs(run_dir / runs.PROBS, len(trainset.noisy), trainset.dataset.num_classes)
    result = estimates(probs, trainset.noisy, trainset.clean)
    out_dir = out if out is not None else run_dir / "analysis"
    ownership.prepare_output_dir(out_dir, list(FIGURES), overwrite=overwrite)
    classes = trainset.dataset.classes
    drawn = {"anchor": FIGURES[0], "confident_joint": FIGURES[1]}
    figures = []
    for name, estimate in result["estimators"].items():
        if estimate is not None:
            title = f"T estimated ({name.replace('_', ' ')}): noise rate {estimate['noise_rate']:.1%}"
            plot_transition_matrix(out_dir / drawn[name], estimate["transition"], classes, title=title)
            figures.append(str(out_dir / drawn[name]))
    if result["truth"] is not None:
        title = f"T of the labels (truth): noise rate {result['truth']['noise_rate']:.1%}"
        plot_transition_matrix(out_dir / FIGURES[2], result["truth"]["transition"], classes, title=title)
        figures.append(str(out_dir / FIGURES[2]))
    return {"run_dir": str(run_dir), "samples": len(trainset.noisy), "classes": list(classes),
            "estimators": plain(result["estimators"]), "truth": plain(result["truth"]), "figures": figures}


def _read_probs(path: Path, samples: int, num_classes: int) -> np.ndarray:
    """probs.npy, bounded: a regular file of the size an (N, K) float32 array has, no pickles, finite values."""
    if not os.path.lexists(path):
        raise SlnError(f"{path.parent} has no {path.name}; train the run with --record-probs (run.record_probs), "
                       "which the estimates read")
    # regular file, no larger than an (N, K) float64 array, header checked before anything is allocated
    probs = readers.read_npy(path, what="run's probabilities", max_bytes=samples * num_classes * 8 + _HEADER_BYTES)
    if probs.shape != (samples, num_classes) or not np.issubdtype(probs.dtype, np.floating):
        raise SlnError(f"{path} holds a {probs.dtype} array of shape {probs.shape}, expected ({samples}, "
                       f"{num_classes}) probabilities of the run's training samples")
    probs = probs.astype(np.float64)
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise SlnError(f"{path} holds negative or non-finite probabilities; was it replaced?")
    return probs
