"""The loss around a trained model: filter-normalised random directions (Li et al., NeurIPS 2018), 1D curves,
resumable 2D grids, interpolation between two checkpoints, and average- / worst-case sharpness.

Every function evaluates in eval mode (see `sln_cli.analyze`) and puts the model's weights back afterwards,
also when it is interrupted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from sln_cli.analyze import (
    Batch,
    LossFn,
    batch_weights,
    cross_entropy_loss,
    evaluation_mode,
    mean_loss,
    trainable_parameters,
)
from sln_cli.errors import SlnError

Direction = dict[str, torch.Tensor]  # parameter name -> perturbation of that parameter's shape
Normalization = Literal["filter", "none"]
PointCallback = Callable[[int, int, np.ndarray], None]  # (points done, points in grid, losses so far)


@dataclass(frozen=True)
class LandscapeCurve:
    coordinates: np.ndarray  # (points,) alpha along a direction, or t of an interpolation
    losses: np.ndarray  # (points,)


@dataclass(frozen=True)
class LandscapeGrid:
    alphas: np.ndarray  # (points_x,) coordinates along the first direction
    betas: np.ndarray  # (points_y,) coordinates along the second direction
    losses: np.ndarray  # (points_x, points_y): losses[i, j] is the loss at (alphas[i], betas[j])


@dataclass(frozen=True)
class SharpnessResult:
    method: str  # "average-filter", "average-none" or "worst-case"
    rho: float  # L2 radius of the perturbation in parameter space
    base_loss: float
    increase: float  # mean (average-case) or largest found (worst-case) loss increase over base_loss
    standard_error: float | None  # of the mean, average-case only
    evaluations: int  # random directions drawn, or ascent steps taken

    def to_dict(self) -> dict:
        return asdict(self)


def random_direction(model: nn.Module, generator: torch.Generator,
                     normalization: Normalization = "filter") -> Direction:
    """A Gaussian direction, drawn on the CPU generator in `named_parameters` order (same seed and architecture,
    same direction). "filter": each filter (row along dim 0) of each weight with 2+ dimensions is rescaled to
    the norm of the matching weight filter and 1-D parameters (biases, BatchNorm) are zero, as Li et al.'s
    `normalize_directions_for_weights(..., ignore="biasbn")`; "none": the raw draw for every parameter."""
    direction = {}
    for name, param in trainable_parameters(model):
        draw = torch.randn(param.shape, generator=generator).to(param.detach())  # every parameter draws
        if normalization == "filter":
            draw = _filter_normalised(draw, param.detach()) if param.dim() > 1 else torch.zeros_like(draw)
        direction[name] = draw
    return direction


def _filter_normalised(draw: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    rows, weight_rows = draw.flatten(1), weight.flatten(1)
    # + 1e-10 as in Li et al.'s `normalize_direction`, so an all-zero filter stays zero instead of NaN.
    scale = weight_rows.norm(dim=1, keepdim=True) / (rows.norm(dim=1, keepdim=True) + 1e-10)
    return (rows * scale).view_as(draw)


def direction_norm(direction: Direction) -> float:
    """The L2 norm of a direction over all parameters together."""
    return math.sqrt(sum(float(piece.double().square().sum()) for piece in direction.values()))


@contextlib.contextmanager
def _perturbed(model: nn.Module) -> Iterator[Callable[[Sequence[tuple[float, Direction]]], None]]:
    """Yield `move(terms)` that sets the weights to theta0 + sum(coefficient * direction); restore theta0 at exit."""
    named = trainable_parameters(model)
    originals = {name: param.detach().clone() for name, param in named}

    def move(terms: Sequence[tuple[float, Direction]]) -> None:
        with torch.no_grad():
            for name, param in named:  # always from theta0, so rounding errors never accumulate
                param.copy_(originals[name] + sum(coefficient * d[name] for coefficient, d in terms))

    try:
        with evaluation_mode(model):
            yield move
    finally:
        with torch.no_grad():
            for name, param in named:
                param.copy_(originals[name])


def _check_direction(model: nn.Module, direction: Direction) -> None:
    expected = {name: tuple(param.shape) for name, param in trainable_parameters(model)}
    if {name: tuple(piece.shape) for name, piece in direction.items()} != expected:
        raise SlnError("the direction was drawn for another architecture; draw it with random_direction(model, ...)")


def loss_curve(model: nn.Module, batches: Sequence[Batch], direction: Direction, *,
               span: tuple[float, float] = (-1.0, 1.0), points: int = 51,
               loss_fn: LossFn = cross_entropy_loss) -> LandscapeCurve:
    """The loss at theta0 + alpha * direction for `points` values of alpha evenly spaced over `span`."""
    _check_direction(model, direction)
    alphas = np.linspace(span[0], span[1], points)
    losses = np.empty(points)
    with _perturbed(model) as move:
        for i, alpha in enumerate(alphas):
            move([(float(alpha), direction)])
            losses[i] = mean_loss(model, batches, loss_fn)
    return LandscapeCurve(alphas, losses)


def loss_surface(model: nn.Module, batches: Sequence[Batch], direction_x: Direction, direction_y: Direction, *,
                 span_x: tuple[float, float] = (-1.0, 1.0), span_y: tuple[float, float] = (-1.0, 1.0),
                 points_x: int = 21, points_y: int = 21, partial: np.ndarray | None = None,
                 on_point: PointCallback | None = None, loss_fn: LossFn = cross_entropy_loss) -> LandscapeGrid:
    """The loss at theta0 + alpha * direction_x + beta * direction_y on a points_x x points_y grid.

    Resumable: entries of `partial` that are NaN are computed, the others kept. `on_point(done, total, losses)`
    runs after each new point with the live array, so a caller can save a copy and resume from it after an
    interruption. A loss that comes out NaN (diverged) is stored as +inf, so NaN always means "not computed".
    """
    _check_direction(model, direction_x)
    _check_direction(model, direction_y)
    if partial is not None and partial.shape != (points_x, points_y):
        raise SlnError(f"the partial grid has shape {partial.shape}, expected ({points_x}, {points_y}); "
                       "resume with the grid size it was started with")
    alphas, betas = np.linspace(*span_x, points_x), np.linspace(*span_y, points_y)
    losses = np.full((points_x, points_y), np.nan) if partial is None else partial.astype(float, copy=True)
    with _perturbed(model) as move:
        for i, j in zip(*np.nonzero(np.isnan(losses)), strict=True):  # row-major order
            move([(float(alphas[i]), direction_x), (float(betas[j]), direction_y)])
            value = mean_loss(model, batches, loss_fn)
            losses[i, j] = math.inf if math.isnan(value) else value
            if on_point is not None:
                on_point(int(np.count_nonzero(~np.isnan(losses))), losses.size, losses)
    return LandscapeGrid(alphas, betas, losses)


def interpolate_states(model: nn.Module, batches: Sequence[Batch], state_start: Mapping[str, torch.Tensor],
                       state_end: Mapping[str, torch.Tensor], *, span: tuple[float, float] = (0.0, 1.0),
                       points: int = 21, buffers: Literal["interpolate", "start"] = "interpolate",
                       loss_fn: LossFn = cross_entropy_loss) -> LandscapeCurve:
    """The loss of (1 - t) * theta_start + t * theta_end for `points` values of t evenly spaced over `span`.

    Floating-point buffers (BatchNorm running statistics) are interpolated like the weights with
    `buffers="interpolate"` (the default: eval mode reads them, so they must match the weights), or taken from
    `state_start`; integer buffers (`num_batches_tracked`) always come from `state_start`.
    """
    own = model.state_dict()
    shapes = {name: tuple(value.shape) for name, value in own.items()}
    if any({name: tuple(value.shape) for name, value in state.items()} != shapes for state in (state_start, state_end)):
        raise SlnError("the two states do not match the model's architecture; load checkpoints of this model")
    parameter_names = {name for name, _ in model.named_parameters()}
    saved = {name: value.detach().clone() for name, value in own.items()}
    ts, losses = np.linspace(span[0], span[1], points), np.empty(points)
    try:
        for i, t in enumerate(ts.tolist()):
            mixed = {}
            for name, start in state_start.items():
                blend = start.is_floating_point() and (buffers == "interpolate" or name in parameter_names)
                mixed[name] = (1 - t) * start + t * state_end[name].to(start.device) if blend else start
            model.load_state_dict(mixed)
            losses[i] = mean_loss(model, batches, loss_fn)
    finally:
        model.load_state_dict(saved)
    return LandscapeCurve(ts, losses)


def sharpness_average(model: nn.Module, batches: Sequence[Batch], *, rho: float, samples: int = 10, seed: int = 0,
                      normalization: Normalization = "filter",
                      loss_fn: LossFn = cross_entropy_loss) -> SharpnessResult:
    """Mean loss increase over `samples` random directions, each `random_direction(..., normalization)` rescaled
    to L2 norm `rho` over all parameters: points on the sphere of radius rho, shaped like the weights with
    "filter" (1-D parameters unperturbed), uniform on it with "none"."""
    if samples < 2 or rho <= 0:
        raise SlnError("average-case sharpness needs rho > 0 and at least 2 samples")
    generator = torch.Generator().manual_seed(seed)
    base = mean_loss(model, batches, loss_fn)
    increases = []
    with _perturbed(model) as move:
        for _ in range(samples):
            direction = random_direction(model, generator, normalization)
            if direction_norm(direction) == 0:
                raise SlnError("filter-normalised directions are zero for this model; use normalization='none'")
            move([(rho / direction_norm(direction), direction)])
            increases.append(mean_loss(model, batches, loss_fn) - base)
    error = float(np.std(increases, ddof=1) / math.sqrt(samples))
    return SharpnessResult(f"average-{normalization}", rho, base, float(np.mean(increases)), error, samples)


def sharpness_worst_case(model: nn.Module, batches: Sequence[Batch], *, rho: float, steps: int = 5,
                         step_size: float | None = None, seed: int = 0,
                         loss_fn: LossFn = cross_entropy_loss) -> SharpnessResult:
    """Largest loss increase found in the L2 ball of radius `rho` around theta0 (all trainable parameters).

    Projected gradient ascent in the spirit of SAM (Foret et al. 2021) and Keskar et al. (2017): start at a
    random point of the sphere (seeded; at a minimum the gradient is ~0 and would not move), take `steps`
    normalised-gradient steps of length `step_size` (default rho: on a quadratic this is close to power
    iteration on the Hessian, which smaller steps only slow down), project back onto the ball after each, and
    report the largest loss seen over the start and every step. A lower bound on the true maximum.
    """
    if steps < 1 or rho <= 0:
        raise SlnError("worst-case sharpness needs rho > 0 and at least 1 ascent step")
    step_size = rho if step_size is None else step_size
    base = mean_loss(model, batches, loss_fn)
    start = random_direction(model, torch.Generator().manual_seed(seed), "none")
    delta = {name: piece * (rho / direction_norm(start)) for name, piece in start.items()}
    worst = -math.inf
    with _perturbed(model) as move:
        for _ in range(steps):
            move([(1.0, delta)])
            loss, gradient = _loss_and_gradient(model, batches, loss_fn)
            worst = max(worst, loss)
            norm = direction_norm(gradient)
            if norm > 0:
                delta = {name: delta[name] + (step_size / norm) * gradient[name] for name in delta}
                delta = {name: piece * min(1.0, rho / direction_norm(delta)) for name, piece in delta.items()}
        move([(1.0, delta)])
        worst = max(worst, mean_loss(model, batches, loss_fn))
    return SharpnessResult("worst-case", rho, base, worst - base, None, steps)


def _loss_and_gradient(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> tuple[float, Direction]:
    """Sample-weighted mean loss and its gradient, without touching the parameters' `.grad`."""
    named = trainable_parameters(model)
    total = 0.0
    gradient = {name: torch.zeros_like(param) for name, param in named}
    for weight, batch in zip(batch_weights(batches), batches, strict=True):
        loss = loss_fn(model, batch)
        grads = torch.autograd.grad(loss, [param for _, param in named], allow_unused=True)
        for (name, _), grad in zip(named, grads, strict=True):
            if grad is not None:
                gradient[name] += weight * grad
        total += weight * float(loss.detach())
    return total, gradient
