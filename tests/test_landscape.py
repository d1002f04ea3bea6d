"""Filter-normalised directions, 1D/2D landscapes, interpolation and sharpness on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sln_cli.analyze import Batch, mean_loss
from sln_cli.analyze.landscape import (
    direction_norm,
    interpolate_states,
    loss_curve,
    loss_surface,
    random_direction,
    sharpness_average,
    sharpness_worst_case,
)
from sln_cli.errors import SlnError


def small_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


@pytest.fixture
def batches() -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (8,), generator=generator)
    return [(images[:5], labels[:5]), (images[5:], labels[5:])]


def directions(model: nn.Module, seed: int) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(seed)
    return random_direction(model, generator), random_direction(model, generator)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def assert_same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    assert all(torch.equal(current[name], value) for name, value in state.items())


def test_same_seed_same_direction_other_seed_other_direction() -> None:
    first, second = directions(small_cnn(0), 7), directions(small_cnn(0), 7)
    other = directions(small_cnn(0), 8)
    assert all(torch.equal(first[0][name], second[0][name]) for name in first[0])
    assert not torch.equal(first[0]["0.weight"], other[0]["0.weight"])
    assert not torch.equal(first[0]["0.weight"], first[1]["0.weight"])  # x and y directions differ


def test_filter_norms_match_weights_and_1d_parameters_are_zero() -> None:
    model = small_cnn(0)
    direction = random_direction(model, torch.Generator().manual_seed(1))
    for name, param in model.named_parameters():
        if param.dim() > 1:
            torch.testing.assert_close(direction[name].flatten(1).norm(dim=1), param.detach().flatten(1).norm(dim=1))
        else:
            assert torch.count_nonzero(direction[name]) == 0, name
    plain = random_direction(model, torch.Generator().manual_seed(1), "none")
    assert torch.count_nonzero(plain["1.weight"]) > 0  # BatchNorm scale is perturbed without normalisation


def test_curve_at_zero_is_the_plain_loss_and_weights_come_back(batches) -> None:
    model = small_cnn(0).train()
    model[1].eval()  # a frozen BatchNorm inside a training model: each module gets its own flag back
    flags = [module.training for module in model.modules()]
    before = snapshot(model)
    direction, _ = directions(model, 0)
    curve = loss_curve(model, batches, direction, span=(-1.0, 1.0), points=5)
    np.testing.assert_array_equal(curve.coordinates, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert curve.losses[2] == pytest.approx(mean_loss(model, batches), rel=1e-6)
    assert curve.losses[0] != pytest.approx(curve.losses[2])  # the direction does move the weights
    assert_same_state(model, before)  # weights and BatchNorm running statistics untouched
    assert [module.training for module in model.modules()] == flags


def test_interrupted_grid_resumes_to_the_full_grid(batches) -> None:
    model = small_cnn(0)
    before = snapshot(model)
    dx, dy = directions(model, 0)
    full = loss_surface(model, batches, dx, dy, points_x=3, points_y=4)
    assert full.losses.shape == (3, 4) and np.isfinite(full.losses).all()

    saved: list[np.ndarray] = []

    def stop_after_five(done: int, total: int, losses: np.ndarray) -> None:
        assert total == 12
        saved.append(losses.copy())
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loss_surface(model, batches, dx, dy, points_x=3, points_y=4, on_point=stop_after_five)
    assert_same_state(model, before)  # restored even though interrupted
    partial = saved[-1]
    assert np.count_nonzero(np.isnan(partial)) == 7

    progress: list[int] = []
    resumed = loss_surface(model, batches, dx, dy, points_x=3, points_y=4, partial=partial,
                           on_point=lambda done, total, losses: progress.append(done))
    assert progress == [6, 7, 8, 9, 10, 11, 12]  # only the missing points were computed
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-6)
    assert np.isnan(partial).sum() == 7  # the caller's array is not modified


def test_grid_rejects_partial_of_another_size(batches) -> None:
    model = small_cnn(0)
    dx, dy = directions(model, 0)
    with pytest.raises(SlnError, match="partial grid"):
        loss_surface(model, batches, dx, dy, points_x=3, points_y=3, partial=np.full((2, 3), np.nan))


def test_direction_of_another_architecture_is_rejected(batches) -> None:
    direction = random_direction(nn.Linear(3, 2), torch.Generator().manual_seed(0))
    with pytest.raises(SlnError, match="another architecture"):
        loss_curve(small_cnn(0), batches, direction)


def test_interpolation_endpoints_are_the_endpoint_losses(batches) -> None:
    start_model, end_model = small_cnn(0), small_cnn(1)
    start_model(batches[0][0])  # one train-mode pass so the running statistics differ between the two
    model = small_cnn(2)
    before = snapshot(model)
    curve = interpolate_states(model, batches, start_model.state_dict(), end_model.state_dict(), points=3)
    np.testing.assert_array_equal(curve.coordinates, [0.0, 0.5, 1.0])
    assert curve.losses[0] == pytest.approx(mean_loss(start_model, batches), rel=1e-6)
    assert curve.losses[2] == pytest.approx(mean_loss(end_model, batches), rel=1e-6)
    assert_same_state(model, before)


def test_interpolation_rejects_mismatched_states(batches) -> None:
    with pytest.raises(SlnError, match="architecture"):
        interpolate_states(small_cnn(0), batches, small_cnn(1).state_dict(), nn.Linear(3, 2).state_dict())


@pytest.fixture
def least_squares_at_minimum() -> tuple[nn.Module, list[Batch], np.ndarray]:
    """A linear model set to the exact least-squares solution, and its Hessian 2 A^T A / N, A = [X, 1]."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)) * np.array([3.0, 1.0, 1.0, 0.5, 0.2])
    y = x @ rng.standard_normal(5) + 0.3 * rng.standard_normal(40)
    design = np.hstack([x, np.ones((40, 1))])
    solution = np.linalg.lstsq(design, y, rcond=None)[0]
    model = nn.Linear(5, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(solution[:5]).view(1, 5))
        model.bias.copy_(torch.tensor(solution[5:]))
    return model, [(torch.tensor(x), torch.tensor(y))], 2 * design.T @ design / 40


def squared_error(model: nn.Module, batch: Batch) -> torch.Tensor:
    return ((model(batch[0]).squeeze(1) - batch[1]) ** 2).mean()


def test_sharpness_at_a_convex_minimum(least_squares_at_minimum) -> None:
    """At the minimum of a quadratic, L(theta + delta) - L(theta) = delta^T H delta / 2, so on the sphere of
    radius rho the uniform average is rho^2 tr(H) / (2 D) and the maximum is rho^2 lambda_max / 2."""
    model, batches, hessian = least_squares_at_minimum
    before = snapshot(model)
    rho = 0.1
    average = sharpness_average(model, batches, rho=rho, samples=200, normalization="none", loss_fn=squared_error)
    expected_average = rho**2 * np.trace(hessian) / (2 * hessian.shape[0])
    assert average.increase > 0
    assert abs(average.increase - expected_average) <= 4 * average.standard_error  # statistical, fixed seed
    filtered = sharpness_average(model, batches, rho=rho, samples=5, loss_fn=squared_error)
    assert filtered.increase > 0 and filtered.method == "average-filter"

    worst = sharpness_worst_case(model, batches, rho=rho, steps=10, loss_fn=squared_error)
    expected_worst = rho**2 * np.linalg.eigvalsh(hessian).max() / 2
    assert 0.99 * expected_worst <= worst.increase <= expected_worst * (1 + 1e-9)
    assert worst.increase >= average.increase
    assert_same_state(model, before)


def test_sharpness_is_seeded(least_squares_at_minimum) -> None:
    model, batches, _ = least_squares_at_minimum
    runs = [sharpness_average(model, batches, rho=0.1, samples=3, seed=seed, loss_fn=squared_error)
            for seed in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0].increase != runs[2].increase


def test_direction_norm_is_the_global_l2_norm() -> None:
    direction = {"a": torch.tensor([3.0]), "b": torch.tensor([[4.0, 0.0]])}
    assert direction_norm(direction) == pytest.approx(5.0)
