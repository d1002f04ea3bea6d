"""The six places where a baseline differed from its authors' official code (issue 18), each pinned to what that
code does: co-teaching's open-set forget rate and schedule, ELR's asymmetric defaults, forward correction's
CIFAR-100 anchor, NCE+RCE's gradient clipping (the general `optim.grad_clip`), truncated GCE."""

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sln_cli import methods
from sln_cli.config import MethodConfig, resolve
from sln_cli.errors import SlnError
from sln_cli.methods import build_method
from sln_cli.methods.base import MethodContext
from sln_cli.methods.coteaching import forget_rate
from sln_cli.methods.forward import estimate_transition, transition_matrix
from sln_cli.presets import load

QUICKSTART = load("quickstart")


def _cifar(dataset: str, mode: str, method: str, *overrides: str):
    preset = {"data": {"dataset": dataset}, "noise": {"mode": mode, "rate": 0.4}, "method": {"name": method}}
    return resolve(preset, list(overrides))


# 1. co-teaching on open-set labels: the label set's stated noise fraction, not the realised label-flip rate (0)
def test_open_set_coteaching_forgets_the_stated_noise_fraction():
    config = resolve(QUICKSTART, [], {"method.name": "coteaching"})
    labels = np.array([0, 1, 2, 3, 4] * 4)  # open-set keeps every label: noisy == clean
    replaced = np.where(np.arange(20) < 6, 7, -1)  # 6 of 20 images replaced: 0.3
    settled = methods.settle(config, labels, labels, manifest={"requested_noise_rate": 0.4}, replaced=replaced)
    assert settled.method.forget_rate == 0.4
    unstated = methods.settle(config, labels, labels, manifest={}, replaced=replaced)
    assert unstated.method.forget_rate == pytest.approx(0.3)  # no manifest: the fraction replaced
    flipped = labels.copy()
    flipped[:5] = (flipped[:5] + 1) % 5
    assert methods.settle(config, flipped, labels).method.forget_rate == 0.25  # closed-set: as before


# 2. co-teaching's schedule: R(1) = tau/(T_k-1), tau reached at epoch T_k - 1 (official rate_schedule[epoch])
def test_coteaching_schedule_is_the_official_rate_schedule():
    tau, t_k, epochs = 0.4, 10, 200
    official = np.ones(epochs) * tau
    official[:t_k] = np.linspace(0, tau, t_k)
    # the official loop trains epochs 1 .. n_epoch - 1 with rate_schedule[epoch]
    assert [forget_rate(e, tau, t_k) for e in range(1, epochs)] == pytest.approx(official[1:].tolist())


# 3. ELR: CIFAR-10 asymmetric noise takes config_cifar10_asym.json's lambda 1, beta 0.9
@pytest.mark.parametrize(("dataset", "mode", "lam", "beta"), [
    ("cifar10", "asym", 1.0, 0.9), ("cifar10", "sym", 3.0, 0.7), ("cifar10", "dependent", 3.0, 0.7),
    ("cifar100", "asym", 7.0, 0.9), ("cifar100", "sym", 7.0, 0.9)])
def test_elr_defaults_follow_the_official_config_of_the_noise_type(dataset, mode, lam, beta):
    method = _cifar(dataset, mode, "elr").method
    assert (method.elr_lambda, method.elr_beta) == (lam, beta)


def test_elr_asym_default_also_applies_to_the_official_asym_label_file():
    preset = {"data": {"dataset": "cifar10"}, "noise": {"labels": "official:cifar10/asym0.4"},
              "method": {"name": "elr"}}
    assert resolve(preset).method.elr_lambda == 1.0
    assert _cifar("cifar10", "asym", "elr", "method.elr_lambda=2").method.elr_lambda == 2.0  # asked: kept


# 4. forward correction: the plain argmax anchor on CIFAR-100 (filter_outlier=False), 97th percentile elsewhere
def test_forward_takes_the_argmax_anchor_on_cifar100(tmp_path):
    assert _cifar("cifar100", "sym", "forward").method.forward_anchor == "argmax"
    assert _cifar("cifar10", "sym", "forward").method.forward_anchor == "percentile"
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=200)  # (200, 3)
    np.save(tmp_path / "probs.npy", probs)
    context = MethodContext(num_classes=3, num_samples=4, device=torch.device("cpu"), noisy=np.zeros(4, int),
                            clean=None, make_network=lambda: nn.Linear(2, 3), forward=contextlib.nullcontext)
    argmax = transition_matrix(str(tmp_path), context, anchor="argmax")
    assert np.allclose(argmax, np.stack([probs[np.argmax(probs[:, i])] for i in range(3)]))
    assert np.allclose(argmax, estimate_transition(probs, None))
    assert not np.allclose(argmax, transition_matrix(str(tmp_path), context, anchor="percentile"))
    with pytest.raises(SlnError, match="method.forward_anchor must be one of percentile, argmax"):
        _cifar("cifar100", "sym", "forward", "method.forward_anchor=mean")


# 5. NCE+RCE: the official trainer clips the gradient norm at 5.0; a general optim.grad_clip
def test_nce_rce_clips_gradients_at_5_by_default_and_others_do_not():
    assert _cifar("cifar10", "sym", "nce-rce").optim.grad_clip == 5.0
    assert _cifar("cifar10", "sym", "nce-rce", "optim.grad_clip=1").optim.grad_clip == 1.0
    assert _cifar("cifar10", "sym", "sln").optim.grad_clip is None
    assert _cifar("cifar10", "sym", "sln", "optim.grad_clip=2").optim.grad_clip == 2.0


@pytest.mark.parametrize("value", ["-1", "0", ".nan", ".inf"])
def test_a_bad_grad_clip_is_refused_naming_the_key(value):
    with pytest.raises(SlnError, match=r"optim\.grad_clip must be"):
        resolve(QUICKSTART, [f"optim.grad_clip={value}"])


def test_the_step_clips_the_global_gradient_norm():
    from sln_cli.training.ema import WeightEMA
    from sln_cli.training.step import Step, sgd_step

    def run(clip):
        torch.manual_seed(0)
        network = nn.Linear(4, 3)
        before = [p.detach().clone() for p in network.parameters()]
        optimizer = torch.optim.SGD(network.parameters(), lr=1.0)
        step = Step(optimizer=optimizer, scaler=torch.amp.GradScaler("cpu", enabled=False),
                    ema=WeightEMA(network, 0.9), autocast=contextlib.nullcontext, sigma=0.0,
                    noise=torch.Generator().manual_seed(0), grad_clip=clip)
        images = torch.randn(8, 4) * 100  # a large gradient
        sgd_step(step, network, images, F.one_hot(torch.arange(8) % 3, 3).float(), torch.arange(8))
        after = list(network.parameters())
        return math.sqrt(sum(((p.detach() - b) ** 2).sum().item() for p, b in zip(after, before, strict=True)))

    assert run(None) > 5.0  # lr 1: the update is the gradient
    assert run(0.5) == pytest.approx(0.5, rel=1e-4)


# 6. GCE: truncated Lq (k = 0.5, weights re-scored every 10 epochs from epoch 40) by default; plain Lq with k = 0
def _gce(**settings):
    context = MethodContext(num_classes=3, num_samples=4, device=torch.device("cpu"), noisy=np.array([0, 1, 2, 0]),
                            clean=None, make_network=lambda: nn.Linear(2, 3), forward=contextlib.nullcontext)
    return build_method(MethodConfig(name="gce", **settings), context)


def test_gce_defaults_to_the_truncated_loss():
    method = _cifar("cifar10", "sym", "gce").method
    assert (method.gce_q, method.gce_k, method.gce_prune_from) == (0.7, 0.5, 40)


def test_truncated_gce_drops_samples_whose_loss_exceeds_lq_k_at_the_official_epochs():
    q, k = 0.7, 0.5
    gce = _gce(gce_q=q, gce_k=k, gce_prune_from=40)
    assert [e for e in range(1, 101) if gce.rescores(e)] == [40, 50, 60, 70, 80, 90, 100]
    logits = torch.tensor([[3.0, 0, 0], [0, 0, 3.0], [0, 0, 3.0], [0, 3.0, 0]])  # p_y high for 0, 2; low for 1, 3
    gce.rescore(logits, torch.arange(4))
    assert gce.weights.tolist() == [1.0, 0.0, 1.0, 0.0]
    logits = logits.clone().requires_grad_(True)
    loss = gce(logits, None, torch.arange(4))
    p_y = torch.softmax(logits.detach(), 1)[torch.arange(4), torch.tensor([0, 1, 2, 0])]
    expected = (torch.tensor([1.0, 0, 1, 0]) * ((1 - p_y ** q) / q - (1 - k ** q) / q)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[[1, 3]].abs().sum() == 0  # a dropped sample gives no gradient
    assert gce.state_dict()["gce_weights"].tolist() == [1.0, 0.0, 1.0, 0.0]  # resumes with its weights


def test_plain_lq_is_gce_k_zero():
    gce = _gce(gce_q=0.7, gce_k=0.0, gce_prune_from=40)
    assert not any(gce.rescores(e) for e in range(1, 200))
    logits = torch.tensor([[3.0, 0, 0], [0, 0, 3.0]])
    p_y = torch.softmax(logits, 1)[torch.arange(2), torch.tensor([0, 1])]
    assert gce(logits, None, torch.arange(2)).item() == pytest.approx(((1 - p_y ** 0.7) / 0.7).mean().item())


def test_the_training_pass_rescores_truncated_gce_at_its_epochs_only():
    from tests.test_step import _epochs, _loop

    loop = _loop("method.name=gce", "sln.sigma=0", "method.gce_prune_from=10", "method.gce_k=0.9")
    method = loop.state.method
    _epochs(loop, range(9, 10), loss=None)  # epoch 9: no scoring pass, every weight still 1
    assert method.weights.eq(1).all()
    _epochs(loop, range(10, 11), loss=None)  # epoch 10: scored before its steps (k = 0.9 drops the unsure ones)
    assert method.weights.eq(0).any() and ((method.weights == 0) | (method.weights == 1)).all()


def test_every_method_names_the_official_code_its_defaults_were_checked_against():
    import json
    import re

    from typer.testing import CliRunner

    from sln_cli.cli import app
    from sln_cli.methods.catalog import METHODS

    listed = json.loads(CliRunner().invoke(app, ["methods", "--json"]).output)
    for row in listed:
        if row["name"] in METHODS:
            ref = row["reference"]
            assert set(ref) == {"repository", "file", "commit"}, row["name"]
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", ref["repository"]) and re.fullmatch(r"[0-9a-f]{40}", ref["commit"])
    assert {row["name"] for row in listed} >= set(METHODS)
