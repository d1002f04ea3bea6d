"""`sln analyze noise`: both estimators recover a known transition matrix from calibrated noisy posteriors within
stated tolerances; the command reads a run's probs.npy, prints errors beside the truth and draws heat maps."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sln_cli.analyze.noise_rate import Estimate, NoiseResult, Truth, anchor_estimate, estimates
from sln_cli.cli import app

runner = CliRunner()
T = np.array([[0.70, 0.20, 0.05, 0.05], [0.10, 0.80, 0.10, 0.00], [0.00, 0.15, 0.75, 0.10], [0.20, 0.00, 0.00, 0.80]])


def _draw(rng, probs):
    return (rng.random(len(probs))[:, None] > probs.cumsum(axis=1)).sum(axis=1).clip(max=probs.shape[1] - 1)


def _synthetic(seed, n=20_000):
    """Clean posteriors mostly confident (so anchor points exist), true labels drawn from them, noisy labels from T
    of the true label; the recorded probabilities are the exact noisy posteriors p(y~|x) = p(y|x) T."""
    rng = np.random.default_rng(seed)
    center, confidence = rng.integers(0, 4, n), 1 - 0.4 * rng.random(n) ** 4
    posterior = np.zeros((n, 4)) + ((1 - confidence) / 3)[:, None]
    posterior[np.arange(n), center] = confidence
    clean = _draw(rng, posterior)
    return posterior @ T, _draw(rng, T[clean]), clean


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_estimators_recover_a_known_transition_matrix(seed):
    probs, noisy, clean = _synthetic(seed)
    result = estimates(probs, noisy, clean)
    anchor = result["estimators"]["anchor"]
    assert np.abs(anchor["transition"] - T).mean() < 0.01  # tolerance: MAE of T below 0.01 ...
    assert anchor["noise_rate_error"] < 0.01  # ... and the noise rate within one point of the truth (~0.24)
    assert anchor["transition_mae"] < 0.01
    if result["estimators"]["confident_joint"] is not None:  # cleanlab installed
        joint = result["estimators"]["confident_joint"]
        # the confident joint counts a sample's confident class as its truth, so the posteriors' own uncertainty
        # reads as noise: a looser tolerance (measured ~0.04 rate error, ~0.02 MAE on these seeds)
        assert joint["noise_rate_error"] < 0.06 and joint["transition_mae"] < 0.03
        assert np.argmax(joint["transition"], axis=1).tolist() == [0, 1, 2, 3]
        assert joint["transition"][0, 1] > joint["transition"][1, 0]  # the asymmetry of T, the right way round


def test_the_anchor_noise_rate_needs_no_truth():
    probs, noisy, _ = _synthetic(0)
    matrix, rate = anchor_estimate(probs, noisy)
    assert np.allclose(matrix.sum(axis=1), 1) and 0.22 < rate < 0.26


def test_the_command_estimates_from_a_runs_probs_with_the_truth(tmp_path):
    run = tmp_path / "r"
    result = runner.invoke(app, ["train", "--preset", "quickstart", "--train-limit", "300", "--test-limit", "50",
                                 "--set", "model.name=mlp", "--epochs", "2", "--record-probs", "--quiet",
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["analyze", "noise", str(run), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    labels = np.loadtxt(run / "labels.csv", delimiter=",", skiprows=1, dtype=int)
    assert data["truth"]["noise_rate"] == pytest.approx(np.mean(labels[:, 0] != labels[:, 1]), abs=0.1)
    assert np.array(data["truth"]["transition"]).shape == (10, 10)
    assert 0 <= data["estimators"]["anchor"]["transition_mae"] <= 1
    for typed, value in [(NoiseResult, data), (Truth, data["truth"]),
                         *((Estimate, found) for found in data["estimators"].values() if found is not None)]:
        assert set(typed.__required_keys__) <= set(value) <= set(typed.__annotations__), (typed, set(value))
    assert all((run / "analysis" / name).stat().st_size > 1000 for name in ("noise-anchor.png", "noise-truth.png"))


def test_a_run_without_probs_is_a_one_line_error(tiny_runs):
    result = runner.invoke(app, ["analyze", "noise", str(tiny_runs["ce-0"])])
    assert result.exit_code == 1 and "--record-probs" in result.output
    assert len(result.output.strip().splitlines()) == 1
