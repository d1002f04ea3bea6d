"""Hessian-vector products, Lanczos eigenvalues and Hutchinson trace against a least-squares model whose
Hessian is known exactly: for L(w, b) = mean((X w + b - y)^2), H = 2 A^T A / N with A = [X, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sln_cli.analyze import Batch, evaluation_mode
from sln_cli.analyze import hessian as hessian_module
from sln_cli.analyze.hessian import hessian_operator, hessian_trace, top_eigenvalues
from sln_cli.errors import SlnError

FEATURES = 12
SAMPLES = 60


def squared_error(model: nn.Module, batch: Batch) -> torch.Tensor:
    inputs, targets = batch
    return ((model(inputs).squeeze(1) - targets) ** 2).mean()


@pytest.fixture
def problem() -> tuple[nn.Module, list[Batch], np.ndarray]:
    """A linear model, three unequal batches, and the exact Hessian (float64 numpy)."""
    rng = np.random.default_rng(0)
    scales = 1.6 ** np.arange(FEATURES)[::-1] / 10  # spread-out spectrum so the top eigenvalues are separated
    x = rng.standard_normal((SAMPLES, FEATURES)) * scales
    y = rng.standard_normal(SAMPLES)
    torch.manual_seed(0)
    model = nn.Linear(FEATURES, 1)  # parameters: weight (1 x F), then bias (1)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    batches = [(xt[:25], yt[:25]), (xt[25:45], yt[25:45]), (xt[45:], yt[45:])]  # unequal on purpose
    design = np.hstack([x, np.ones((SAMPLES, 1))])
    return model, batches, 2 * design.T @ design / SAMPLES


def test_hessian_vector_product_matches_exact_hessian(problem) -> None:
    model, batches, hessian = problem
    vector = np.random.default_rng(1).standard_normal(FEATURES + 1)
    with evaluation_mode(model):
        hvp = hessian_operator(model, batches, squared_error)(torch.tensor(vector, dtype=torch.float32))
    np.testing.assert_allclose(hvp.numpy(), hessian @ vector, rtol=1e-4, atol=1e-4 * np.abs(hessian @ vector).max())


def test_top_eigenvalues_match_numpy_within_tolerance(problem) -> None:
    model, batches, hessian = problem
    tolerance = 1e-3
    result = top_eigenvalues(model, batches, k=3, tolerance=tolerance, seed=0, loss_fn=squared_error)
    exact = np.sort(np.linalg.eigvalsh(hessian))[::-1][:3]
    assert result.converged
    assert result.eigenvalues == sorted(result.eigenvalues, reverse=True)
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=tolerance)
    # the reported residuals are recomputed, and float32 arithmetic keeps them near the stopping tolerance
    assert max(result.residuals) <= 10 * tolerance
    assert result.iterations <= FEATURES + 1


def test_eigenvalues_stop_at_max_iterations_and_say_so(problem) -> None:
    model, batches, _ = problem
    result = top_eigenvalues(model, batches, k=2, tolerance=1e-12, max_iterations=3, loss_fn=squared_error)
    assert result.iterations == 3
    assert not result.converged


def test_hutchinson_trace_within_three_standard_errors(problem) -> None:
    model, batches, hessian = problem
    result = hessian_trace(model, batches, samples=200, seed=0, loss_fn=squared_error)
    assert result.samples == 200
    assert result.standard_error > 0
    assert abs(result.estimate - np.trace(hessian)) <= 3 * result.standard_error


def test_same_seed_same_numbers_other_seed_other_numbers(problem) -> None:
    model, batches, _ = problem
    first = hessian_trace(model, batches, samples=10, seed=3, loss_fn=squared_error)
    second = hessian_trace(model, batches, samples=10, seed=3, loss_fn=squared_error)
    other = hessian_trace(model, batches, samples=10, seed=4, loss_fn=squared_error)
    assert first == second
    assert other.estimate != first.estimate
    eig_a = top_eigenvalues(model, batches, k=2, seed=5, loss_fn=squared_error)
    eig_b = top_eigenvalues(model, batches, k=2, seed=5, loss_fn=squared_error)
    assert eig_a == eig_b


def test_rank_deficient_hessian_restarts_lanczos(monkeypatch) -> None:
    """With all inputs zero only the bias is curved: H = diag(0, 0, 0, 0, 2). The Krylov space of any start
    vector is 2-dimensional, so Lanczos must restart past that invariant subspace to report k = 3 values."""
    restarts = []
    original = hessian_module._orthogonalise
    monkeypatch.setattr(hessian_module, "_orthogonalise",
                        lambda v, basis, passes: (restarts.append(passes == 3), original(v, basis, passes)))
    model = nn.Linear(4, 1)
    result = top_eigenvalues(model, [(torch.zeros(8, 4), torch.ones(8))], k=3, loss_fn=squared_error)
    assert any(restarts)
    assert result.converged
    np.testing.assert_allclose(result.eigenvalues, [2.0, 0.0, 0.0], atol=1e-5)
    assert max(result.residuals) <= 1e-3


def test_batchnorm_is_evaluated_in_eval_mode_and_flags_restored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    before = model[1].running_mean.clone()
    batches = [(torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0]))]
    hessian_trace(model, batches, samples=2)
    top_eigenvalues(model, batches, k=1, max_iterations=5)
    assert torch.equal(model[1].running_mean, before)  # train mode would have updated the running stats
    assert all(module.training for module in model.modules())


def test_k_out_of_range_is_a_user_error(problem) -> None:
    model, batches, _ = problem
    with pytest.raises(SlnError, match="k must be"):
        top_eigenvalues(model, batches, k=0, loss_fn=squared_error)
    with pytest.raises(SlnError, match="at least 2 samples"):
        hessian_trace(model, batches, samples=1, loss_fn=squared_error)
