"""Hessian of the loss w.r.t. the trainable parameters, seen through Hessian-vector products (double backprop).

Top eigenvalues by Lanczos with full reorthogonalisation; trace by Hutchinson's estimator with Rademacher
vectors. Both seeded with a CPU `torch.Generator`, both in eval mode (see `sln_cli.analyze`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from sln_cli.analyze import Batch, LossFn, batch_weights, cross_entropy_loss, evaluation_mode, trainable_parameters
from sln_cli.errors import SlnError
from sln_cli.training.devices import ieee_fp32

Operator = Callable[[torch.Tensor], torch.Tensor]  # flat vector (P,) -> H @ vector (P,)


@dataclass(frozen=True)
class EigenResult:
    eigenvalues: list[float]  # largest first
    residuals: list[float]  # ||H v - lambda v|| / |lambda| per pair, recomputed at the end (see _residual_scale)
    tolerance: float  # the relative residual Lanczos stopped at
    iterations: int  # Lanczos steps = Hessian-vector products, not counting the final residual check
    converged: bool  # every Ritz residual estimate reached `tolerance` before `max_iterations`

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TraceResult:
    estimate: float  # mean of v^T H v over Rademacher vectors v
    standard_error: float  # sample std (ddof=1) / sqrt(samples)
    samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def hessian_operator(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn = cross_entropy_loss) -> Operator:
    """`v -> H v` for the sample-weighted mean loss over `batches`; call it inside `evaluation_mode(model)`."""
    params = [param for _, param in trainable_parameters(model)]
    weights = batch_weights(batches)

    @ieee_fp32()  # whoever calls: a TF32 product would be off by about the Lanczos tolerance
    def apply(vector: torch.Tensor) -> torch.Tensor:
        chunks = vector.split([param.numel() for param in params])
        pieces = [piece.view_as(param) for piece, param in zip(chunks, params, strict=True)]
        total = torch.zeros_like(vector)
        for weight, batch in zip(weights, batches, strict=True):  # one graph at a time: one batch's memory
            grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
            grad_dot_vector = sum((grad * piece).sum() for grad, piece in zip(grads, pieces, strict=True))
            hvp = torch.autograd.grad(grad_dot_vector, params, allow_unused=True)
            total += weight * torch.cat([torch.zeros_like(p).flatten() if h is None else h.flatten()
                                         for h, p in zip(hvp, params, strict=True)])
        return total

    return apply


def top_eigenvalues(model: nn.Module, batches: Sequence[Batch], *, k: int = 1, tolerance: float = 1e-3,
                    max_iterations: int = 100, seed: int = 0,
                    loss_fn: LossFn = cross_entropy_loss) -> EigenResult:
    """The k largest (algebraic) Hessian eigenvalues, largest first, by Lanczos.

    Stops once every top-k Ritz pair has relative residual ||H y - theta y|| / |theta| <= `tolerance` (which
    bounds each eigenvalue's relative error by `tolerance`), or after `max_iterations` steps. Keeps one
    vector per step: memory is steps x parameters floats.
    """
    params = [param for _, param in trainable_parameters(model)]
    size = sum(param.numel() for param in params)
    if not 1 <= k <= min(size, max_iterations):
        raise SlnError(f"k must be between 1 and min(parameters, max_iterations) = {min(size, max_iterations)}")
    with evaluation_mode(model):
        apply = hessian_operator(model, batches, loss_fn)
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(size, generator=generator, dtype=torch.float64).to(params[0])
        basis, theta, ritz, converged = _lanczos(apply, start, generator, k, tolerance, min(max_iterations, size))
        vectors = [_combination(ritz[:, i], basis) for i in range(k)]
        scale = _residual_scale(theta, torch.finfo(params[0].dtype).eps)
        residuals = [float((apply(v) - t * v).norm() / v.norm() / s)
                     for t, v, s in zip(theta, vectors, scale, strict=True)]
    return EigenResult([float(t) for t in theta], residuals, tolerance, len(basis), converged)


def _lanczos(apply: Operator, start: torch.Tensor, generator: torch.Generator, k: int, tolerance: float,
             steps: int) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray, bool]:
    """Lanczos with full reorthogonalisation.

    Returns the m basis vectors, the top-k Ritz values (largest first), their m x k coordinates, and whether
    every Ritz residual estimate reached `tolerance`."""
    basis = [start / start.norm()]
    alphas: list[float] = []
    betas: list[float] = []  # off-diagonal of T; 0 after a restart in a new invariant subspace
    while True:
        w = apply(basis[-1])
        alphas.append(float(w @ basis[-1]))
        norm_before = w.norm()
        _orthogonalise(w, basis, passes=2)  # "twice is enough" (Parlett): no spurious copies of Ritz values
        beta = float(w.norm())
        theta, coords = np.linalg.eigh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
        order = np.argsort(theta)[::-1][:k]
        # ||H y_i - theta_i y_i|| = beta * |last coordinate of y_i| for the Ritz pair y_i = basis^T coords_i.
        estimates = beta * np.abs(coords[-1, order]) / _residual_scale(theta[order], torch.finfo(w.dtype).eps)
        done = len(alphas) >= k and bool(np.all(estimates <= tolerance))
        if done or len(alphas) == steps:
            return basis, theta[order], coords[:, order], done
        if beta <= math.sqrt(torch.finfo(w.dtype).eps) * float(norm_before):
            # An invariant subspace: what is left of w is rounding noise. Restart orthogonally to the basis.
            w = torch.randn(w.numel(), generator=generator, dtype=torch.float64).to(w)
            _orthogonalise(w, basis, passes=3)
            beta_t = 0.0
        else:
            beta_t = beta
        betas.append(beta_t)
        basis.append(w / w.norm())


def _combination(coefficients: np.ndarray, basis: list[torch.Tensor]) -> torch.Tensor:
    """sum_j coefficients[j] * basis[j], summed in order from zero (as the builtin sum() of the terms)."""
    total = torch.zeros_like(basis[0])
    for c, q in zip(coefficients, basis, strict=True):
        total = total + float(c) * q
    return total


def _residual_scale(theta: np.ndarray, eps: float) -> np.ndarray:
    """What a residual is relative to: |theta|, floored at sqrt(eps) * max |theta| because float arithmetic
    cannot resolve eigenvalues closer to zero than that (ARPACK floors its test in the same spirit)."""
    return np.maximum(np.abs(theta), math.sqrt(eps) * max(float(np.abs(theta).max()), 1e-300))


def _orthogonalise(vector: torch.Tensor, basis: list[torch.Tensor], passes: int) -> None:
    """Remove from `vector`, in place, its components along the orthonormal `basis` (one vector at a time, to
    avoid stacking a second copy of the basis)."""
    for _ in range(passes):
        for q in basis:
            vector -= (q @ vector) * q


def hessian_trace(model: nn.Module, batches: Sequence[Batch], *, samples: int = 100, seed: int = 0,
                  loss_fn: LossFn = cross_entropy_loss) -> TraceResult:
    """Hutchinson's estimate of tr(H): the mean of v^T H v over `samples` Rademacher vectors v (E[v v^T] = I)."""
    if samples < 2:
        raise SlnError("the Hutchinson trace needs at least 2 samples to report a standard error")
    params = [param for _, param in trainable_parameters(model)]
    size = sum(param.numel() for param in params)
    generator = torch.Generator().manual_seed(seed)
    values = []
    with evaluation_mode(model):
        apply = hessian_operator(model, batches, loss_fn)
        for _ in range(samples):
            vector = (torch.randint(0, 2, (size,), generator=generator) * 2 - 1).to(params[0])
            values.append(float(vector @ apply(vector)))
    spread = np.std(values, ddof=1)
    return TraceResult(float(np.mean(values)), float(spread / math.sqrt(samples)), samples)
