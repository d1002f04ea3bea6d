"""Label-noise generators: pure numpy functions of clean labels and a seeded `numpy.random.Generator`.

Only Generator methods whose streams numpy keeps stable across platforms are used (`random`, `integers`,
`standard_normal`, `permutation`), so a seed gives the same labels everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtr, ndtri

from sln_cli.errors import SlnError

# CIFAR-10 class-conditional flips of the paper (after Patrini et al., 2017), by class name so that a
# dataset whose classes are ordered differently still gets the right pairs.
CIFAR10_ASYM_PAIRS: tuple[tuple[str, str], ...] = (
    ("truck", "automobile"),
    ("bird", "airplane"),
    ("deer", "horse"),
    ("cat", "dog"),
    ("dog", "cat"),
)

IDN_FLIP_RATE_STD = 0.1  # std of the per-sample flip rate in Xia et al. (2020), their `norm_std`


def count_for_rate(rate: float, num_samples: int) -> int:
    """round(rate * num_samples), halves rounded up (Python's `round` would round them to even)."""
    return int(math.floor(rate * num_samples + 0.5))


def check_rate(rate: float) -> None:
    if not (0.0 <= rate <= 1.0) or math.isnan(rate):
        raise SlnError(f"the noise rate must be in [0, 1], got {rate}; pass e.g. --rate 0.4")


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    assert labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer), "labels must be a 1-D integer array"
    if num_classes < 2:
        raise SlnError(f"label noise needs at least 2 classes, got {num_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise SlnError(f"labels must lie in [0, {num_classes}); check the dataset's number of classes")
    return labels.astype(np.int64)


def symmetric(
    labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator, *, exact: bool = False
) -> np.ndarray:
    """Each sample, with probability `rate`, gets a label drawn uniformly from the other K-1 classes.

    This is the paper's `sym` (and its published files): the realised rate is ~rate. With `exact`, exactly
    round(rate*N) samples, chosen uniformly at random, are flipped instead.
    """
    check_rate(rate)
    labels = _check_labels(labels, num_classes)
    flipped = _choose_samples(labels.size, rate, rng, exact)
    # An offset in 1..K-1 added modulo K is uniform over the K-1 other classes.
    offset = rng.integers(1, num_classes, size=flipped.size, dtype=np.int64)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + offset) % num_classes
    return noisy


def uniform(
    labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator, *, exact: bool = False
) -> np.ndarray:
    """Each sample, with probability `rate`, gets a label drawn uniformly from all K classes.

    The other convention in the literature: a redrawn label may equal the true one, so the realised rate is
    ~rate*(K-1)/K. With `exact`, exactly round(rate*N) samples are redrawn.
    """
    check_rate(rate)
    labels = _check_labels(labels, num_classes)
    redrawn = _choose_samples(labels.size, rate, rng, exact)
    noisy = labels.copy()
    noisy[redrawn] = rng.integers(0, num_classes, size=redrawn.size, dtype=np.int64)
    return noisy


def _choose_samples(num_samples: int, rate: float, rng: np.random.Generator, exact: bool) -> np.ndarray:
    """Indices of the samples to corrupt: each with probability `rate`, or exactly round(rate*N) of them."""
    if exact:
        return np.sort(rng.permutation(num_samples)[: count_for_rate(rate, num_samples)])
    return np.flatnonzero(rng.random(num_samples) < rate)


def cifar10_asym_targets(classes: Sequence[str]) -> np.ndarray:
    """Target class of every class under the CIFAR-10 map (truck->automobile, bird->airplane, deer->horse,
    cat<->dog); the other classes map to themselves."""
    index = {name: i for i, name in enumerate(classes)}
    missing = sorted({name for pair in CIFAR10_ASYM_PAIRS for name in pair} - index.keys())
    if missing:
        raise SlnError(f"the CIFAR-10 asym map needs classes named {', '.join(missing)}; pass --matrix instead")
    targets = np.arange(len(classes), dtype=np.int64)
    for source, target in CIFAR10_ASYM_PAIRS:
        targets[index[source]] = index[target]
    return targets


def next_class_targets(num_classes: int) -> np.ndarray:
    """Class i -> (i + 1) mod K: what the paper's CIFAR-100 `asym` files contain."""
    return (np.arange(num_classes, dtype=np.int64) + 1) % num_classes


def superclass_targets(superclass: np.ndarray) -> np.ndarray:
    """Class i -> the next class (by index, cyclically) that shares i's super-class (CIFAR-100: 20 groups of 5)."""
    superclass = np.asarray(superclass)
    targets = np.arange(superclass.size, dtype=np.int64)
    for group in np.unique(superclass):
        members = np.flatnonzero(superclass == group)  # ascending fine-class indices
        targets[members] = np.roll(members, -1)
    return targets


def pair_flip(labels: np.ndarray, targets: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Each sample of a class c with targets[c] != c is relabelled targets[c] with probability `rate`."""
    check_rate(rate)
    labels = _check_labels(labels, targets.size)
    # One uniform per sample, drawn for all samples, so the stream does not depend on the labels.
    flip = (rng.random(labels.size) < rate) & (targets[labels] != labels)
    noisy = labels.copy()
    noisy[flip] = targets[labels[flip]]
    return noisy


def check_transition_matrix(matrix: np.ndarray, num_classes: int) -> np.ndarray:
    """Return `matrix` as float64 after checking it is K x K, finite, non-negative and row-stochastic."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (num_classes, num_classes):
        raise SlnError(
            f"the transition matrix has shape {matrix.shape} but the dataset has {num_classes} classes; "
            f"pass a {num_classes}x{num_classes} matrix (rows = true class)"
        )
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise SlnError("the transition matrix must hold finite non-negative probabilities")
    worst = float(np.max(np.abs(matrix.sum(axis=1) - 1.0)))
    if worst > 1e-6:
        raise SlnError(f"the transition matrix rows must each sum to 1 (off by up to {worst:.3g}); normalise its rows")
    return matrix


def transition(labels: np.ndarray, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw each noisy label from row `labels[i]` of a K x K row-stochastic matrix (rows = true class)."""
    matrix = check_transition_matrix(matrix, np.asarray(matrix).shape[0])
    labels = _check_labels(labels, matrix.shape[0])
    return sample_categorical(matrix[labels], rng)


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of an N x K matrix of class probabilities, by inverse CDF on `rng.random`.

    Rows are divided by their own total, so the last cumulative value is exactly 1 and a class of
    probability 0 is never drawn.
    """
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random((probs.shape[0],))  # the same draws as rng.random(N); typed as an array
    return np.argmax(u[:, None] < cdf, axis=1).astype(np.int64)


def check_probs(probs: np.ndarray, num_samples: int, num_classes: int) -> np.ndarray:
    """Return `probs` as float64 after checking it is an N x K matrix of probabilities whose rows sum to 1."""
    probs = np.asarray(probs)
    if probs.shape != (num_samples, num_classes):
        raise SlnError(
            f"the probabilities have shape {probs.shape} but the dataset needs ({num_samples}, {num_classes}): "
            "one row of class probabilities per training sample, in dataset order"
        )
    probs = probs.astype(np.float64)
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or np.any(probs > 1):
        raise SlnError("the probabilities must be finite and in [0, 1]; pass averaged softmax outputs, not logits")
    worst = float(np.max(np.abs(probs.sum(axis=1) - 1.0))) if num_samples else 0.0
    if worst > 1e-3:
        raise SlnError(f"each row of probabilities must sum to 1 (off by up to {worst:.3g}); pass softmax outputs")
    return probs


def dependent(labels: np.ndarray, probs: np.ndarray, rate: float) -> np.ndarray:
    """Instance-dependent noise of Chen et al. (AAAI 2021), the paper's `dependent` setting.

    `probs` is N x K, a model's softmax averaged over training on clean labels. Each sample's candidate is
    its most probable class other than the true one; the round(rate*N) samples with the highest candidate
    probability are flipped to it. Deterministic: ties go to the lower sample index (the official
    `cifar10_gen_dependent.py` sorts with an unstable sort, and flips every sample when int(r*N) is 0).
    """
    check_rate(rate)
    labels, probs = np.asarray(labels), np.asarray(probs)
    # K is the number of columns, unless a label needs more: then check_probs reports the shape mismatch.
    num_classes = max(probs.shape[1] if probs.ndim == 2 else 0, int(labels.max(initial=-1)) + 1)
    probs = check_probs(probs, labels.size, num_classes)
    labels = _check_labels(labels, num_classes)
    rows = np.arange(labels.size)
    others = probs.copy()
    others[rows, labels] = -np.inf
    candidate = np.argmax(others, axis=1)
    order = np.argsort(-others[rows, candidate], kind="stable")
    chosen = order[: count_for_rate(rate, labels.size)]
    noisy = labels.copy()
    noisy[chosen] = candidate[chosen]
    return noisy


def truncated_normal(mean: float, std: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Normal(mean, std) truncated to [0, 1], by inverse CDF on `rng.random` (platform-stable, unlike the
    rejection/ratio samplers behind scipy's `truncnorm.rvs`, whose stream has changed between versions)."""
    low, high = ndtr((0.0 - mean) / std), ndtr((1.0 - mean) / std)
    u = rng.random(size)
    return np.clip(mean + std * ndtri(low + u * (high - low)), 0.0, 1.0)


def idn(labels: np.ndarray, images: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Part/instance-dependent noise of Xia et al. (NeurIPS 2020), which needs no trained model.

    As their `get_instance_noisy_label`: per-sample flip rate f_i ~ N(rate, 0.1) truncated to [0, 1]; a random
    projection W (K x D x K standard normal) maps the flattened image x_i (float pixels / 255) to class scores
    x_i W[y_i]; the true class is excluded and the flip mass f_i is spread over the others by softmax. We
    sample in two steps (flip with probability f_i, then pick the class by softmax), the same distribution
    as their single draw, so whether a sample flips depends on no floating-point matrix product. At rate 0
    no label changes (the truncated normal would otherwise give a mean flip rate of ~0.08).
    """
    check_rate(rate)
    labels = _check_labels(labels, num_classes)
    num_samples = labels.size
    flat = np.asarray(images).reshape(num_samples, -1)
    flip_rate = truncated_normal(rate, IDN_FLIP_RATE_STD, num_samples, rng)
    scores = np.empty((num_samples, num_classes), dtype=np.float64)
    for c in range(num_classes):
        # W[c] (D x K), drawn class by class in order: the same numbers as one K x D x K draw, 1/K the memory.
        projection = rng.standard_normal((flat.shape[1], num_classes))
        members = np.flatnonzero(labels == c)
        for start in range(0, members.size, 1024):  # keeps the float64 copy of the pixels small
            rows = members[start : start + 1024]
            scores[rows] = (flat[rows].astype(np.float64) / 255.0) @ projection
    flip = (rng.random(num_samples) < flip_rate) & (rate > 0)
    scores[np.arange(num_samples), labels] = -np.inf
    softmax = np.exp(scores - scores.max(axis=1, keepdims=True))
    candidate = sample_categorical(softmax, rng)
    noisy = labels.copy()
    noisy[flip] = candidate[flip]
    return noisy


def idn_expected_rate(rate: float) -> float:
    """Mean per-sample flip rate of `idn`: the mean of N(rate, 0.1) truncated to [0, 1] (0 at rate 0)."""
    if rate == 0:
        return 0.0
    std = IDN_FLIP_RATE_STD
    a, b = (0.0 - rate) / std, (1.0 - rate) / std
    pdf = np.exp(-0.5 * np.array([a, b]) ** 2) / math.sqrt(2 * math.pi)
    return float(rate + std * (pdf[0] - pdf[1]) / (ndtr(b) - ndtr(a)))


def openset(num_samples: int, num_source: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Open-set noise: which of `num_samples` images get replaced, and by which source image.

    Returns `source_index` (int64, N): -1 keeps the sample's own image, otherwise the index of the image
    in the source dataset's train split. Exactly round(rate*N) samples are replaced by distinct source
    images; their labels are kept (the paper replaces CIFAR-10 images with CIFAR-100 ones).
    """
    check_rate(rate)
    count = count_for_rate(rate, num_samples)
    if count > num_source:
        raise SlnError(
            f"open-set noise at rate {rate} replaces {count} images but the source dataset has only "
            f"{num_source}; lower --rate or use a larger --source-dataset"
        )
    replaced = rng.permutation(num_samples)[:count]
    source_index = np.full(num_samples, -1, dtype=np.int64)
    source_index[replaced] = rng.permutation(num_source)[:count]
    return source_index
