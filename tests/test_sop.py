"""SOP and SOP+ against hand-computed cases: the two loss terms and their gradients, one u, v update with their
own learning rates, the balance and consistency terms, the strong view (one forward of both views, Cutout as the
official `CutoutDefault`), and the state a checkpoint carries."""

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sln_cli.config import MethodConfig
from sln_cli.data.augment import channel_constants
from sln_cli.data.strong import cutout, strong_views
from sln_cli.methods import build_method
from sln_cli.methods.base import MethodContext
from sln_cli.methods.sop import balance, consistency

K = 3
LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.3, 1.2]]  # (B=2, K=3); sample 1 predicts class 2, not its label 1
LABELS = [0, 1]  # given labels of samples 0 and 1
U = [0.5, 0.3]  # u_i
V = [[0.9, 0.2, 0.1], [0.3, 0.7, 0.1]]  # v_i; v on the given class is masked out
LR_U, LR_V = 2.0, 5.0


def _context(images=None) -> MethodContext:
    return MethodContext(num_classes=K, num_samples=4, device=torch.device("cpu"), noisy=np.array([0, 1, 2, 0]),
                         clean=None, make_network=lambda: nn.Linear(2, K), forward=contextlib.nullcontext,
                         images=images, mean=(0.5,), std=(0.25,), padding=1, flip=True)


def _sop(name="sop", images=None, **settings):
    settings = {"lr_u": LR_U, "lr_v": LR_V} | settings
    method = build_method(MethodConfig(name=name, **settings), _context(images))
    with torch.no_grad():
        method.u[:2] = torch.tensor(U)[:, None]
        method.v[:2] = torch.tensor(V)
    return method


def _by_hand():
    """Loss, dL/du (2,), dL/dv (2, K) of the SOP loss for LOGITS, LABELS, U, V, written out per entry.

    With no clamp active, r_ik = p_ik + u_i² [k = y_i] − v_ik² [k ≠ y_i], S_i = Σ_k r_ik, q = r / S:
    CE = −mean_i log q_iy;  MSE = (1/B) Σ_ik (h_ik + s_ik − y_ik)², h = onehot(argmax z), s the r − p above;
    dCE/du_i = −(1/B) 2u_i (1/r_iy − 1/S_i); v gets no CE gradient (detached in q);
    dMSE/du_i = (1/B) 2(h_iy + u_i² − 1) 2u_i;  dMSE/dv_ik = (1/B) 2(h_ik − v_ik²)(−2 v_ik) for k ≠ y_i.
    """
    b, loss, du, dv = 2, 0.0, [0.0, 0.0], [[0.0] * K for _ in range(2)]
    for i in range(b):
        exps = [math.exp(z) for z in LOGITS[i]]
        p = [e / sum(exps) for e in exps]
        y, h = LABELS[i], max(range(K), key=lambda k: LOGITS[i][k])
        s = [U[i] ** 2 if k == y else -V[i][k] ** 2 for k in range(K)]
        r = [p[k] + s[k] for k in range(K)]
        total = sum(r)
        loss += -math.log(r[y] / total) / b
        loss += sum(((k == h) + s[k] - (k == y)) ** 2 for k in range(K)) / b
        du[i] = -2 * U[i] * (1 / r[y] - 1 / total) / b + 2 * ((y == h) + U[i] ** 2 - 1) * 2 * U[i] / b
        for k in range(K):
            if k != y:
                dv[i][k] = 2 * ((k == h) - V[i][k] ** 2) * (-2 * V[i][k]) / b
    return loss, torch.tensor(du), torch.tensor(dv)


def _loss(method, targets=None):
    logits = torch.tensor(LOGITS, requires_grad=True)
    targets = F.one_hot(torch.tensor(LABELS), K).float() if targets is None else targets
    return method(logits, targets, torch.tensor([0, 1])), logits


def test_sop_loss_and_its_u_v_gradients_match_the_hand_computed_case():
    method = _sop()
    loss, _ = _loss(method)
    loss.backward()
    expected, du, dv = _by_hand()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(method.u.grad[:2, 0], du, atol=1e-6), (method.u.grad[:2, 0], du)
    assert torch.allclose(method.v.grad[:2], dv, atol=1e-6), (method.v.grad[:2], dv)
    assert not method.u.grad[2:].any() and not method.v.grad[2:].any()  # samples outside the batch: no gradient


def test_one_step_moves_u_and_v_by_their_own_learning_rates():
    method = _sop()
    before_u, before_v = method.u.detach().clone(), method.v.detach().clone()
    loss, _ = _loss(method)
    (optimizer,) = method.optimizers()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    _, du, dv = _by_hand()
    assert torch.allclose(method.u[:2, 0] - before_u[:2, 0], -LR_U * du, atol=1e-6)
    assert torch.allclose(method.v[:2] - before_v[:2], -LR_V * dv, atol=1e-6)
    assert torch.equal(method.u[2:], before_u[2:]) and torch.equal(method.v[2:], before_v[2:])
    groups = optimizer.param_groups  # train.py: SGD, no momentum, no weight decay
    assert [g["momentum"] for g in groups] == [0.0, 0.0] and [g["weight_decay"] for g in groups] == [0.0, 0.0]


def test_u_and_v_start_near_zero_and_the_network_sees_the_prediction_shifted_by_u():
    method = build_method(MethodConfig(name="sop", lr_u=1.0, lr_v=1.0), _context())
    assert method.u.shape == (4, 1) and method.v.shape == (4, K)  # sized by the training set the method sees
    assert 0 < method.u.abs().max() < 1e-7 and 0 < method.v.abs().max() < 1e-7  # N(0, 1e-8²)
    # with u, v ~ 0 the loss is CE plus the MSE of onehot(argmax) to the label: 2/B for sample 1's wrong argmax
    loss, logits = _loss(method)
    ce = F.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS)).item()
    assert loss.item() == pytest.approx(ce + 2 / 2, rel=1e-5)


def test_sln_noise_reaches_the_ce_and_the_mse_target_but_not_the_masks():
    method = _sop()
    noise = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.5, -0.4]])
    targets = F.one_hot(torch.tensor(LABELS), K).float() + noise
    loss, _ = _loss(method, targets)
    logits = torch.tensor(LOGITS)
    labels = F.one_hot(torch.tensor(LABELS), K).float()
    u2 = torch.tensor(U)[:, None] ** 2 * labels
    v2 = torch.tensor(V) ** 2 * (1 - labels)
    q = torch.softmax(logits, 1) + u2 - v2
    q = q / q.sum(1, keepdim=True)
    hard = F.one_hot(logits.argmax(1), K).float()
    expected = -(targets * q.log()).sum(1).mean() + ((hard + u2 - v2 - targets) ** 2).sum() / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_balance_is_the_uniform_prior_against_the_mean_prediction():
    q = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    mean = [0.4, 0.15, 0.45]
    assert balance(q).item() == pytest.approx(-sum(math.log(m) / 3 for m in mean), rel=1e-6)


def test_consistency_is_kl_from_the_weak_to_the_strong_view_and_trains_only_the_strong():
    weak = torch.tensor(LOGITS, requires_grad=True)
    strong = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0]], requires_grad=True)
    value = consistency(weak, strong)
    p, r = torch.softmax(weak.detach(), 1), torch.softmax(strong.detach(), 1)
    assert value.item() == pytest.approx((p * (p.log() - r.log())).sum(1).mean().item(), rel=1e-6)
    value.backward()
    assert weak.grad is None or not weak.grad.any()
    assert torch.allclose(strong.grad, (r - p) / 2, atol=1e-6)  # d KL / d z' = (softmax(z') − p) / B


class Recorder(nn.Module):
    """A network that records its input and returns fixed logits per row."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, images):
        self.inputs.append(images)
        return images.flatten(1)[:, :K] * 3.0


def _images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=generator)


def test_sop_plus_runs_the_weak_and_the_strong_views_in_one_forward_and_adds_both_terms():
    images = _images()
    method = _sop("sop-plus", images, ratio_consistency=0.9, ratio_balance=0.1)
    index = torch.tensor([0, 1])
    weak = (images[index].float() / 255 - 0.5) / 0.25
    network = Recorder()
    method.start_step(index)
    logits = method.forward(network, weak)
    (seen,) = network.inputs
    assert seen.shape == (4, 1, 8, 8) and torch.equal(seen[:2], weak)  # weak views first, then strong ones
    assert not torch.equal(seen[2:], weak)  # the strong views are other views of the same images
    assert torch.equal(logits, seen[:2].flatten(1)[:, :K] * 3.0)
    targets = F.one_hot(torch.tensor(LABELS), K).float()
    total = method(logits, targets, index)
    plain = _sop("sop")(logits, targets, index)
    prediction = _prediction(logits)
    extra = 0.1 * balance(prediction) + 0.9 * consistency(logits, seen[2:].flatten(1)[:, :K] * 3.0)
    assert total.item() == pytest.approx((plain + extra).item(), rel=1e-6)


def _prediction(logits):
    labels = F.one_hot(torch.tensor(LABELS), K).float()
    q = torch.softmax(logits, 1) + torch.tensor(U)[:, None] ** 2 * labels - torch.tensor(V) ** 2 * (1 - labels)
    return F.normalize(q.clamp_min(1e-4), p=1, eps=1e-4).clamp(1e-4, 1)


def test_sop_plus_without_consistency_runs_no_strong_view():
    method = _sop("sop-plus", _images(), ratio_consistency=0.0, ratio_balance=0.1)
    network = Recorder()
    method.start_step(torch.tensor([0, 1]))
    method.forward(network, torch.zeros(2, 1, 8, 8))
    assert network.inputs[0].shape[0] == 2  # as the official trainer: one view unless the consistency term is on


def test_strong_views_repeat_for_the_same_draws_and_differ_across_epochs():
    images = _images()
    constants = channel_constants((0.5,), (0.25,), torch.device("cpu"))

    def views(epoch_seed):
        generator = torch.Generator().manual_seed(epoch_seed)
        return strong_views(images, 7 + epoch_seed, generator, constants, padding=1, flip=True)

    assert torch.equal(views(1), views(1)) and not torch.equal(views(1), views(2))
    method = _sop("sop-plus", images, ratio_consistency=0.9, ratio_balance=0.1)
    index = torch.arange(4)
    method.start_epoch(3)
    method.start_step(index)
    first = method.strong
    method.start_epoch(3)  # a resumed epoch draws what the uninterrupted one drew
    method.start_step(index)
    assert torch.equal(first, method.strong)


def test_cutout_is_the_official_cutout_default():
    images = torch.ones(6, 2, 8, 8)
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    got = cutout(images, generator, 4)
    generator.set_state(state)
    ys = torch.randint(0, 8, (6,), generator=generator).tolist()
    xs = torch.randint(0, 8, (6,), generator=generator).tolist()
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):  # data_loader/augmentations.py CutoutDefault.__call__
        mask = np.ones((8, 8), np.float32)
        y1, y2 = np.clip(y - 4 // 2, 0, 8), np.clip(y + 4 // 2, 0, 8)
        x1, x2 = np.clip(x - 4 // 2, 0, 8), np.clip(x + 4 // 2, 0, 8)
        mask[y1:y2, x1:x2] = 0.0
        assert torch.equal(got[i], torch.from_numpy(mask).expand(2, 8, 8)), i


def test_u_v_and_their_optimiser_make_the_method_state():
    method = _sop()
    loss, _ = _loss(method)
    loss.backward()
    method.optimizers()[0].step()
    state = method.state_dict()
    fresh = build_method(MethodConfig(name="sop", lr_u=LR_U, lr_v=LR_V), _context())
    fresh.load_state_dict(state)
    assert torch.equal(fresh.u, method.u) and torch.equal(fresh.v, method.v)
    assert fresh.optimizers()[0].state_dict() == method.optimizers()[0].state_dict()


def test_sop_plus_refuses_a_dataset_without_images_in_memory():
    from sln_cli.errors import SlnError

    with pytest.raises(SlnError, match="in memory"):
        build_method(MethodConfig(name="sop-plus", lr_u=1.0, lr_v=1.0, ratio_consistency=0.9, ratio_balance=0.1),
                     _context())
