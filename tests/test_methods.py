"""Each baseline's loss (value and gradient) against hand-derived formulas, co-teaching's selection, the ELR
target update and SAM's two-pass update, on tiny hand-made batches."""

import contextlib
import dataclasses
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sln_cli.config import MethodConfig
from sln_cli.errors import SlnError
from sln_cli.methods import build_method
from sln_cli.methods.base import MethodContext
from sln_cli.methods.coteaching import forget_rate, small_loss
from sln_cli.methods.forward import estimate_transition
from sln_cli.methods.sam import SharpnessAware

K = 3
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 1.2]])  # (B=2, K=3)
LABELS = torch.tensor([0, 1])  # the given labels of samples 0 and 1 (the context's `noisy`)
P = torch.softmax(LOGITS, dim=1)
ONE_HOT = F.one_hot(LABELS, K).float()
A = -math.log(1e-4)  # RCE's constant: -log of the clipped zero of the one-hot label


def _context(**changes) -> MethodContext:
    context = MethodContext(num_classes=K, num_samples=4, device=torch.device("cpu"),
                            noisy=np.array([0, 1, 2, 0]), clean=np.array([0, 1, 1, 0]),
                            make_network=lambda: nn.Linear(2, K), forward=contextlib.nullcontext)
    return dataclasses.replace(context, **changes)


def _method(name: str, context: MethodContext | None = None, **settings):
    return build_method(MethodConfig(name=name, **settings), context or _context())


def _value_and_grad(method, targets=None, index=(0, 1)):
    logits = LOGITS.clone().requires_grad_(True)
    loss = method(logits, ONE_HOT if targets is None else targets, torch.tensor(index))
    loss.backward()
    return loss.item(), logits.grad


P_Y = P[torch.arange(2), LABELS]


def _check(method, value, grad, targets=None, index=(0, 1)):
    got_value, got_grad = _value_and_grad(method, targets, index)
    assert got_value == pytest.approx(float(value), rel=1e-5)
    assert torch.allclose(got_grad, grad, atol=1e-6), (got_grad, grad)


def test_ce_and_sln_are_soft_cross_entropy():
    noisy_targets = ONE_HOT + torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.5, -0.4]])
    for name in ("ce", "sln"):
        value = -(noisy_targets * P.log()).sum() / 2
        grad = (P * noisy_targets.sum(1, keepdim=True) - noisy_targets) / 2  # targets need not sum to 1
        _check(_method(name), value, grad, noisy_targets)


def test_gce_is_one_minus_p_to_the_q_over_q():
    q = 0.7
    value = ((1 - P_Y ** q) / q).mean()
    grad = -(P_Y ** q)[:, None] * (ONE_HOT - P) / 2  # d/dz of -p_y^q/q = -p_y^q (e_y - p)
    _check(_method("gce", gce_q=q), value, grad)


def test_sce_adds_reverse_cross_entropy_to_ce():
    alpha, beta = 0.1, 1.0
    value = alpha * -(P_Y.log()).mean() + beta * (A * (1 - P_Y)).mean()
    grad = (alpha * (P - ONE_HOT) - beta * A * P_Y[:, None] * (ONE_HOT - P)) / 2
    _check(_method("sce", sce_alpha=alpha, sce_beta=beta), value, grad)


def test_nce_rce_normalises_ce_by_all_labels():
    alpha, beta = 1.0, 1.0
    log_p = P.log()
    a, s = log_p[torch.arange(2), LABELS], log_p.sum(1)  # log p_y, sum_k log p_k
    value = alpha * (a / s).mean() + beta * (A * (1 - P_Y)).mean()
    da, ds = ONE_HOT - P, 1 - K * P  # gradients of a and s with respect to the logits
    grad_nce = (da * s[:, None] - a[:, None] * ds) / (s ** 2)[:, None]
    grad = (alpha * grad_nce - beta * A * P_Y[:, None] * (ONE_HOT - P)) / 2
    _check(_method("nce-rce", nce_rce_alpha=alpha, nce_rce_beta=beta), value, grad)


def test_label_smoothing_mixes_in_the_uniform_distribution():
    smoothed = 0.9 * ONE_HOT + 0.1 / K
    _check(_method("ls", smoothing=0.1), -(smoothed * P.log()).sum() / 2, (P - smoothed) / 2)


def test_soft_bootstrapping_adds_a_minimum_entropy_term():
    beta = 0.95
    value = -((beta * ONE_HOT + (1 - beta) * P) * P.log()).sum() / 2
    entropy_grad = P * (P.log() - (P * P.log()).sum(1, keepdim=True))  # d/dz of sum p log p
    grad = (beta * (P - ONE_HOT) - (1 - beta) * entropy_grad) / 2
    _check(_method("bootstrap-soft", bootstrap_beta=beta), value, grad)


def test_hard_bootstrapping_mixes_in_the_predicted_class():
    beta = 0.8
    target = beta * ONE_HOT + (1 - beta) * F.one_hot(LOGITS.argmax(1), K).float()  # sample 1 predicts class 2
    _check(_method("bootstrap-hard", bootstrap_beta=beta), -(target * P.log()).sum() / 2, (P - target) / 2)


def test_forward_correction_pushes_the_prediction_through_t(tmp_path):
    matrix = np.array([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])
    np.save(tmp_path / "t.npy", matrix)
    t = torch.tensor(matrix, dtype=torch.float32)
    u = P @ t  # (B, K) predicted distribution of the given label
    value = -(ONE_HOT * u.log()).sum() / 2
    g = -(ONE_HOT / u) @ t.T  # dL/dp
    grad = P * (g - (P * g).sum(1, keepdim=True)) / 2
    _check(_method("forward", forward_matrix=str(tmp_path / "t.npy")), value, grad)


def test_forward_correction_counts_t_from_the_labels():
    method = _method("forward", forward_matrix="labels")  # clean [0, 1, 1, 0] given [0, 1, 2, 0]
    assert torch.allclose(method.transition, torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5], [0, 0, 1]]))


@pytest.mark.parametrize("matrix, message", [
    (np.full((3, 3), 0.5), "not row-stochastic (row 0 sums to 1.5000)"),
    (np.eye(2), "is 2×2, expected 3×3"),
    (np.array([[1.5, -0.5, 0], [0, 1, 0], [0, 0, 1]]), "negative or non-finite"),
])
def test_a_bad_forward_matrix_is_refused(tmp_path, matrix, message):
    np.save(tmp_path / "t.npy", matrix)
    with pytest.raises(SlnError, match="method.forward_matrix: .*" + re.escape(message)):
        _method("forward", forward_matrix=str(tmp_path / "t.npy"))


def test_forward_correction_without_a_matrix_is_refused(tmp_path):
    with pytest.raises(SlnError, match="forward_matrix=labels needs the true labels"):
        _method("forward", _context(clean=None), forward_matrix="labels")
    with pytest.raises(SlnError, match="has no probs.npy"):
        _method("forward", forward_matrix=str(tmp_path))


def test_transition_estimate_takes_the_97th_percentile_anchor():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=200)  # (200, 3)
    estimate = estimate_transition(probs)
    for i in range(3):
        column = probs[:, i]
        below = np.sort(column[column < np.percentile(column, 97, method="higher")])
        assert estimate[i, i] == below[-1]  # the largest p(i|x) under the 97th percentile
    assert np.allclose(estimate.sum(1), 1)


def test_elr_updates_its_targets_then_regularises_towards_them():
    lam, beta = 3.0, 0.7
    method = _method("elr", elr_lambda=lam, elr_beta=beta)
    method.ema_targets[0] = torch.tensor([0.5, 0.3, 0.2])
    index = torch.tensor([0, 2])
    method.observe(LOGITS, index)
    expected = torch.stack([beta * torch.tensor([0.5, 0.3, 0.2]) + (1 - beta) * P[0], (1 - beta) * P[1]])
    assert torch.allclose(method.ema_targets[[0, 2]], expected, atol=1e-6)
    assert method.ema_targets[[1, 3]].abs().sum() == 0  # samples not in the batch keep their target
    inner = (expected * P).sum(1)  # <t_i, p_i>
    value = -(P_Y.log()).mean() + lam * (1 - inner).log().mean()
    grad = (P - ONE_HOT) / 2 + lam * (-1 / (1 - inner))[:, None] * P * (expected - inner[:, None]) / 2
    _check(method, value, grad, index=(0, 2))
    state = method.state_dict()["elr_targets"].clone()
    method(LOGITS, ONE_HOT, index)
    assert torch.equal(method.ema_targets, state)  # the loss (SAM evaluates it twice) changes nothing


def test_coteaching_forget_rate_ramps_over_t_k_epochs():
    # official main.py: rate_schedule[:5] = linspace(0, 0.4, 5), training epochs 1, 2, ... index it
    assert [forget_rate(e, 0.4, 5) for e in (1, 2, 3, 4, 5, 50)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])


def test_coteaching_trains_each_network_on_the_samples_the_other_finds_easy():
    method = _method("coteaching", forget_rate=0.5, forget_epochs=1)
    method.start_epoch(1)  # R = 0.5: keep 2 of 4
    labels = torch.tensor([0, 1, 2, 0])  # the context's given labels of samples 0..3
    peer_logits = torch.tensor([[5.0, 0, 0], [0, 0, 5], [0, 0, 5], [0, 5, 0]], requires_grad=True)  # easy: 0, 2
    logits = torch.tensor([[0.0, 5, 0], [0, 5, 0], [0, 0, 0], [5, 0, 0]], requires_grad=True)  # easy: 1, 3
    method.peer = lambda images: peer_logits  # the networks' outputs on this batch, as crafted above
    assert method.forward(lambda images: logits, torch.zeros(4, 2)) is logits
    loss = method(logits, F.one_hot(labels, K).float(), torch.arange(4))
    expected = F.cross_entropy(logits[[0, 2]], labels[[0, 2]])  # the model learns what the peer picked
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert logits.grad[[1, 3]].abs().sum() == 0 and logits.grad[[0, 2]].abs().sum() > 0
    assert peer_logits.grad[[0, 2]].abs().sum() == 0 and peer_logits.grad[[1, 3]].abs().sum() > 0


def test_small_loss_keeps_the_smallest_with_stable_ties():
    losses = torch.tensor([0.3, 0.1, 0.3, 0.0, 0.3])
    assert small_loss(losses, 3).tolist() == [3, 1, 0]


def test_sam_takes_the_gradient_at_the_ascended_point():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    rho, lr = 0.05, 0.1
    params = list(model.parameters())
    # the two-pass formula by hand: e = rho g / |g|, w <- w - lr * grad L(w + e)
    g = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    names = [name for name, _ in model.named_parameters()]
    shifted = [(p.detach() + rho * gi / norm).requires_grad_(True) for p, gi in zip(params, g, strict=True)]
    shifted_logits = torch.func.functional_call(model, dict(zip(names, shifted, strict=True)), x)
    g_adv = torch.autograd.grad(F.cross_entropy(shifted_logits, y), shifted)
    expected = [p.detach() - lr * ga for p, ga in zip(params, g_adv, strict=True)]

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    sam = SharpnessAware([model], rho)

    def objective():
        F.cross_entropy(model(x), y).backward()

    optimizer.zero_grad()
    objective()
    sam.second_gradient(objective)
    optimizer.step()
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p, e, atol=1e-6)


def test_sam_leaves_batchnorm_statistics_to_the_first_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    F.cross_entropy(model(x), y).backward()
    after_first = model[1].running_mean.clone()
    SharpnessAware([model], 0.05).second_gradient(lambda: F.cross_entropy(model(x), y).backward())
    assert torch.equal(model[1].running_mean, after_first) and model[1].momentum == 0.1
