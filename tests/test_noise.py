"""Statistical tests of the label-noise generators: realised rates, allowed flips only, seed determinism.

Tolerances are stated per test; they are >= 4 binomial standard deviations at the sample sizes used, and
every test uses fixed seeds, so a pass or a fail is reproducible.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sln_cli.errors import SlnError
from sln_cli.labels import corruption as noise

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """Every class `per_class` times, shuffled (as a real training set is ordered)."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes, dtype=np.int64), per_class))


def binomial_tolerance(rate: float, n: int, sigmas: float = 4.5) -> float:
    return sigmas * np.sqrt(max(rate * (1 - rate), 1e-4) / n)


# --- rounding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "n", "expected"), [(0.4, 50000, 20000), (0.5, 25, 13), (0.5, 3, 2), (0.1, 4, 0), (1.0, 7, 7), (0.0, 9, 0)]
)
def test_count_for_rate_rounds_half_up(rate: float, n: int, expected: int) -> None:
    assert noise.count_for_rate(rate, n) == expected


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_rates_outside_unit_interval_are_refused(rate: float) -> None:
    with pytest.raises(SlnError, match=r"\[0, 1\]"):
        noise.symmetric(balanced_labels(10, 10), 10, rate, np.random.default_rng(0))


# --- sym / uniform -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8, 1.0])
def test_symmetric_realised_rate_and_uniform_over_other_classes(rate: float) -> None:
    labels = balanced_labels(10, 2000)  # N = 20,000
    noisy = noise.symmetric(labels, 10, rate, np.random.default_rng(1))
    flipped = noisy != labels
    # Realised rate: binomial, tolerance 4.5 sigma (about 0.016 at r = 0.4).
    assert abs(flipped.mean() - rate) <= binomial_tolerance(rate, labels.size)
    if 0 < rate:
        # The new label is uniform over the K-1 other classes: offsets 1..9 equally likely (chi-square, p > 1e-3).
        offsets = (noisy[flipped] - labels[flipped]) % 10
        counts = np.bincount(offsets, minlength=10)
        assert counts[0] == 0
        assert stats.chisquare(counts[1:]).pvalue > 1e-3


def test_symmetric_rate_per_class() -> None:
    labels = balanced_labels(10, 2000)
    noisy = noise.symmetric(labels, 10, 0.4, np.random.default_rng(2))
    for c in range(10):
        # 2000 samples per class: 4.5 sigma is about 0.049.
        assert abs((noisy[labels == c] != c).mean() - 0.4) <= binomial_tolerance(0.4, 2000)


@pytest.mark.parametrize(("n", "rate"), [(20000, 0.4), (1001, 0.35), (25, 0.5), (10, 0.0), (10, 1.0)])
def test_symmetric_exact_flips_exactly_round_rn(n: int, rate: float) -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=n)
    noisy = noise.symmetric(labels, 10, rate, np.random.default_rng(3), exact=True)
    assert np.count_nonzero(noisy != labels) == int(np.floor(rate * n + 0.5))


def test_uniform_realised_rate_is_r_times_k_minus_1_over_k() -> None:
    labels = balanced_labels(10, 2000)
    noisy = noise.uniform(labels, 10, 0.5, np.random.default_rng(4))
    expected = 0.5 * 9 / 10
    assert abs((noisy != labels).mean() - expected) <= binomial_tolerance(expected, labels.size)
    # Redrawn labels are uniform over all classes: the kept-correct ones show up as "no change".
    assert stats.chisquare(np.bincount(noisy[noisy != labels], minlength=10)).pvalue > 1e-3


def test_uniform_exact_redraws_exactly_round_rn() -> None:
    labels = balanced_labels(4, 5000)
    rate, n = 0.3, labels.size
    noisy = noise.uniform(labels, 4, rate, np.random.default_rng(5), exact=True)
    redrawn = int(np.floor(rate * n + 0.5))
    changed = np.count_nonzero(noisy != labels)
    # Of the `redrawn` samples a fraction 3/4 change label: binomial, tolerance 4.5 sigma.
    assert changed <= redrawn
    assert abs(changed / redrawn - 0.75) <= binomial_tolerance(0.75, redrawn)


@pytest.mark.parametrize("generator", [noise.symmetric, noise.uniform])
@pytest.mark.parametrize("exact", [False, True])
def test_symmetric_and_uniform_are_seed_deterministic(generator, exact: bool) -> None:
    labels = balanced_labels(10, 300)
    first = generator(labels, 10, 0.4, np.random.default_rng(7), exact=exact)
    again = generator(labels, 10, 0.4, np.random.default_rng(7), exact=exact)
    other = generator(labels, 10, 0.4, np.random.default_rng(8), exact=exact)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.dtype == np.int64


# --- asym ----------------------------------------------------------------------------------------


def test_cifar10_asym_map_class_by_class() -> None:
    targets = noise.cifar10_asym_targets(CIFAR10_CLASSES)
    name = dict(enumerate(CIFAR10_CLASSES))
    mapped = {name[c]: name[int(t)] for c, t in enumerate(targets) if t != c}
    assert mapped == {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}


def test_cifar10_asym_map_follows_class_names_not_positions() -> None:
    shuffled = tuple(reversed(CIFAR10_CLASSES))
    targets = noise.cifar10_asym_targets(shuffled)
    assert shuffled[targets[shuffled.index("truck")]] == "automobile"
    assert shuffled[targets[shuffled.index("frog")]] == "frog"
    with pytest.raises(SlnError, match="--matrix"):
        noise.cifar10_asym_targets(("zero", "one", "two"))


def test_cifar10_asym_flips_only_mapped_classes_at_rate_r() -> None:
    labels = balanced_labels(10, 2000)
    targets = noise.cifar10_asym_targets(CIFAR10_CLASSES)
    noisy = noise.pair_flip(labels, targets, 0.4, np.random.default_rng(9))
    for c in range(10):
        of_class = noisy[labels == c]
        if targets[c] == c:
            assert np.all(of_class == c), f"class {CIFAR10_CLASSES[c]} must be untouched"
        else:
            assert set(np.unique(of_class)) <= {c, int(targets[c])}, "flips only to the mapped class"
            # 2000 per class: tolerance 4.5 sigma (about 0.049).
            assert abs((of_class != c).mean() - 0.4) <= binomial_tolerance(0.4, 2000)
    # Five of ten classes are mapped, so the overall rate is about r/2 (N = 20,000).
    assert abs((noisy != labels).mean() - 0.2) <= binomial_tolerance(0.2, labels.size)


def test_cifar100_next_class_map_class_by_class() -> None:
    targets = noise.next_class_targets(100)
    for c in range(100):
        assert targets[c] == (c + 1) % 100
    labels = balanced_labels(100, 400)  # N = 40,000
    noisy = noise.pair_flip(labels, targets, 0.4, np.random.default_rng(10))
    for c in range(100):
        of_class = noisy[labels == c]
        assert set(np.unique(of_class)) <= {c, (c + 1) % 100}
        # 400 per class: tolerance 4.5 sigma (about 0.11).
        assert abs((of_class != c).mean() - 0.4) <= binomial_tolerance(0.4, 400)
    assert abs((noisy != labels).mean() - 0.4) <= binomial_tolerance(0.4, labels.size)


def test_superclass_map_stays_within_the_superclass() -> None:
    # CIFAR-100-like: 20 super-classes of 5 fine classes, members scattered across indices.
    superclass = np.random.default_rng(11).permutation(np.repeat(np.arange(20), 5))
    targets = noise.superclass_targets(superclass)
    assert sorted(targets.tolist()) == list(range(100)), "every class is the target of exactly one class"
    for c in range(100):
        members = np.flatnonzero(superclass == superclass[c])
        assert targets[c] != c and superclass[targets[c]] == superclass[c]
        # the next member by index, wrapping around to the first
        later = members[members > c]
        assert targets[c] == (later[0] if later.size else members[0])


def test_pair_flip_is_seed_deterministic() -> None:
    labels, targets = balanced_labels(100, 20), noise.next_class_targets(100)
    first = noise.pair_flip(labels, targets, 0.4, np.random.default_rng(12))
    assert np.array_equal(first, noise.pair_flip(labels, targets, 0.4, np.random.default_rng(12)))
    assert not np.array_equal(first, noise.pair_flip(labels, targets, 0.4, np.random.default_rng(13)))


# --- transition matrix ---------------------------------------------------------------------------


def test_transition_matrix_is_realised_cell_by_cell() -> None:
    rng = np.random.default_rng(14)
    matrix = rng.dirichlet(np.ones(5), size=5)
    matrix[0] = [0.7, 0.3, 0.0, 0.0, 0.0]  # zero cells must never be drawn
    labels = balanced_labels(5, 5000)
    noisy = noise.transition(labels, matrix, np.random.default_rng(15))
    for true in range(5):
        realised = np.bincount(noisy[labels == true], minlength=5) / 5000
        # per cell: 4.5 sigma at 5000 samples is at most 0.032
        assert np.all(np.abs(realised - matrix[true]) <= binomial_tolerance(0.5, 5000))
    assert set(np.unique(noisy[labels == 0])) <= {0, 1}
    assert np.array_equal(noisy, noise.transition(labels, matrix, np.random.default_rng(15)))


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.eye(3), "shape"),
        (np.full((4, 4), 0.3), "sum to 1"),
        (np.array([[1.5, -0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "non-negative"),
        (np.full((4, 4), np.nan), "finite"),
    ],
)
def test_bad_transition_matrices_are_refused(matrix: np.ndarray, message: str) -> None:
    with pytest.raises(SlnError, match=message):
        noise.check_transition_matrix(matrix, 4)


# --- dependent -----------------------------------------------------------------------------------


def test_dependent_flips_exactly_the_most_confusable_samples() -> None:
    rng = np.random.default_rng(16)
    labels = balanced_labels(10, 100)
    probs = rng.dirichlet(np.ones(10), size=labels.size)
    noisy = noise.dependent(labels, probs, 0.3)
    flipped = np.flatnonzero(noisy != labels)
    assert flipped.size == 300
    # Recompute the candidates independently: the best class other than the true one.
    candidate_prob = np.array(
        [max(p for j, p in enumerate(row) if j != y) for row, y in zip(probs, labels, strict=True)]
    )
    assert candidate_prob[flipped].min() >= np.delete(candidate_prob, flipped).max()
    for i in flipped:
        row = probs[i].copy()
        row[labels[i]] = -1
        assert noisy[i] == np.argmax(row)
    assert np.array_equal(noisy, noise.dependent(labels, probs, 0.3))


def test_dependent_at_rate_zero_flips_nothing() -> None:
    # The official generator's `argsort(...)[-int(r*N):]` flips every sample when int(r*N) == 0.
    labels = balanced_labels(10, 5)
    probs = np.random.default_rng(17).dirichlet(np.ones(10), size=labels.size)
    assert np.array_equal(noise.dependent(labels, probs, 0.0), labels)


@pytest.mark.parametrize(
    ("probs", "message"),
    [(np.full((50, 3), 1 / 3), "shape"), (np.full((50, 10), 0.5), "sum to 1"), (np.full((50, 10), 3.0), "logits")],
)
def test_bad_probability_matrices_are_refused(probs: np.ndarray, message: str) -> None:
    with pytest.raises(SlnError, match=message):
        noise.dependent(balanced_labels(10, 5), probs, 0.2)


# --- idn -----------------------------------------------------------------------------------------


def test_truncated_normal_matches_scipy_and_stays_in_unit_interval() -> None:
    for rate in (0.05, 0.4, 0.95):
        draws = noise.truncated_normal(rate, 0.1, 20000, np.random.default_rng(18))
        reference = stats.truncnorm((0 - rate) / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1)
        assert draws.min() >= 0 and draws.max() <= 1
        assert abs(noise.idn_expected_rate(rate) - reference.mean()) < 1e-9
        # Kolmogorov-Smirnov against scipy's distribution (p > 1e-3).
        assert stats.kstest(draws, reference.cdf).pvalue > 1e-3


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_idn_realised_rate_and_determinism(rate: float) -> None:
    labels = balanced_labels(10, 400)  # N = 4000
    images = np.random.default_rng(19).integers(0, 256, size=(labels.size, 3, 8, 8), dtype=np.uint8)
    noisy = noise.idn(labels, images, 10, rate, np.random.default_rng(20))
    expected = noise.idn_expected_rate(rate)
    # Flips are Bernoulli(f_i) with mean f = expected: tolerance 4.5 binomial sigma (about 0.035 at 0.4).
    assert abs((noisy != labels).mean() - expected) <= binomial_tolerance(expected, labels.size)
    assert np.array_equal(noisy, noise.idn(labels, images, 10, rate, np.random.default_rng(20)))
    assert not np.array_equal(noisy, noise.idn(labels, images, 10, rate, np.random.default_rng(21)))


def test_idn_flip_target_depends_on_the_image() -> None:
    # Two identical images of the same class get the same class scores, so their flip targets agree far more
    # often than the targets of two different images do (at these seeds about 0.78 against 0.32).
    labels = np.zeros(2000, dtype=np.int64)
    images = np.random.default_rng(22).integers(0, 256, size=(1000, 3, 8, 8), dtype=np.uint8)
    noisy = noise.idn(labels, np.concatenate([images, images]), 10, 1.0, np.random.default_rng(23))
    first, second = noisy[:1000], noisy[1000:]
    both = (first != 0) & (second != 0)
    same_image = (first[both] == second[both]).mean()
    other_image = (first[both] == np.roll(second, 1)[both]).mean()
    assert same_image >= other_image + 0.25
    assert len(np.unique(noisy[noisy != 0])) >= 4, "targets are spread over several classes"


def test_idn_at_rate_zero_changes_nothing() -> None:
    labels = balanced_labels(10, 50)
    images = np.random.default_rng(24).integers(0, 256, size=(labels.size, 1, 4, 4), dtype=np.uint8)
    assert np.array_equal(noise.idn(labels, images, 10, 0.0, np.random.default_rng(25)), labels)


# --- openset -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "num_source", "rate"), [(5000, 6000, 0.4), (101, 50, 0.3), (10, 10, 1.0)])
def test_openset_replaces_exactly_round_rn_with_distinct_source_images(n: int, num_source: int, rate: float) -> None:
    source_index = noise.openset(n, num_source, rate, np.random.default_rng(26))
    replaced = source_index[source_index >= 0]
    assert source_index.dtype == np.int64 and source_index.shape == (n,)
    assert replaced.size == int(np.floor(rate * n + 0.5))
    assert np.unique(replaced).size == replaced.size
    assert replaced.max(initial=0) < num_source and np.all(source_index >= -1)
    assert np.array_equal(source_index, noise.openset(n, num_source, rate, np.random.default_rng(26)))


def test_openset_needs_enough_source_images() -> None:
    with pytest.raises(SlnError, match="source dataset has only 10"):
        noise.openset(100, 10, 0.5, np.random.default_rng(0))
