"""DivideMix's mechanisms against hand-computed cases: the co-divide (each network's division feeds the other),
co-refinement, co-guessing over both networks and both views, sharpening, mixup's lambda rule, the losses, the
uniform-prior penalty, the ramp-up, the GMM's clean component; its per-noise-setting defaults and bad settings."""

import contextlib
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sln_cli.config import MethodConfig, resolve
from sln_cli.data.batches import Augmentation, DeviceImages
from sln_cli.errors import SlnError
from sln_cli.methods import build_method, settle
from sln_cli.methods import dividemix as dm
from sln_cli.methods.base import EpochPass, MethodContext
from sln_cli.methods.dividemix_defaults import default_lambda_u
from sln_cli.models.pair import NetworkPair
from sln_cli.presets import load
from sln_cli.training.step import EpochMetrics

K, N = 3, 8
SETTINGS = MethodConfig(name="dividemix", warmup_epochs=1, p_threshold=0.5, lambda_u=25.0, mixmatch_alpha=4.0,
                        sharpen_t=0.5, rampup_epochs=16, gmm_window=1, warmup_penalty=False)


class Constant(nn.Module):
    """A 'network' that answers fixed logits for every image (and has one parameter, so SGD has work)."""

    def __init__(self, logits) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, images):
        return self.logits.expand(len(images), -1)


def _method(noisy=(0, 1, 2, 0, 1, 2, 0, 1)) -> dm.DivideMix:
    context = MethodContext(num_classes=K, num_samples=N, device=torch.device("cpu"), noisy=np.array(noisy),
                            clean=None, make_network=lambda: nn.Linear(2, K), forward=contextlib.nullcontext)
    return build_method(SETTINGS, context)


def _run(model: nn.Module, epoch: int = 2, sigma: float = 0.0) -> EpochPass:
    images = torch.randint(0, 255, (N, 1, 8, 8), dtype=torch.uint8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = dataclasses.make_dataclass("S", ["optimizer", "scaler", "ema", "autocast", "sigma", "noise"])(
        optimizer, torch.amp.GradScaler("cpu", enabled=False), type("E", (), {"update": lambda self: None})(),
        contextlib.nullcontext, sigma, torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    progress = type("P", (), {"start_epoch": lambda *a: None, "step": lambda *a: None})()
    return EpochPass(step=step, model=model, train=DeviceImages(images, (0.5,), (0.25,)), epoch=epoch, batch_size=4,
                     eval_batch_size=8, augmentation=Augmentation(padding=1, flip=False),
                     metrics=EpochMetrics(torch.device("cpu")), noisy=labels, clean=labels, progress=progress,
                     generator=lambda purpose: torch.Generator().manual_seed(1), seed=0)


# -- formulas -------------------------------------------------------------------------------------


def test_sharpen_raises_each_probability_to_one_over_t_and_renormalises():
    sharpened = dm.sharpen(torch.tensor([[0.6, 0.4]]), 0.5)
    assert torch.allclose(sharpened, torch.tensor([[0.36 / 0.52, 0.16 / 0.52]]))
    assert torch.allclose(dm.sharpen(torch.tensor([[0.6, 0.4]]), 1.0), torch.tensor([[0.6, 0.4]]))  # T = 1: none


def test_co_refinement_trusts_the_label_by_the_clean_posterior():
    refined = dm.co_refine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.2, 0.8]]), torch.tensor([0.7]))
    assert torch.allclose(refined, torch.tensor([[0.7 + 0.3 * 0.2, 0.3 * 0.8]]))  # [0.76, 0.24]


def test_co_guessing_averages_four_predictions():
    guess = dm.co_guess(*(torch.tensor([[p, 1 - p]]) for p in (0.9, 0.7, 0.5, 0.1)))
    assert torch.allclose(guess, torch.tensor([[0.55, 0.45]]))


@pytest.mark.parametrize("draw, lam", [(0.3, 0.7), (0.8, 0.8), (0.5, 0.5)])
def test_mixup_keeps_the_larger_of_lambda_and_one_minus_lambda(draw, lam):
    assert dm.mixup_lambda(draw) == pytest.approx(lam)


def test_mix_blends_inputs_and_targets_with_the_same_partner():
    inputs, targets = torch.tensor([[0.0], [10.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed_inputs, mixed_targets = dm.mix(inputs, targets, 0.7, torch.tensor([1, 0]))
    assert torch.allclose(mixed_inputs, torch.tensor([[3.0], [7.0]]))
    assert torch.allclose(mixed_targets, torch.tensor([[0.7, 0.3], [0.3, 0.7]]))


def test_uniform_prior_penalty_is_kl_from_uniform_to_the_mean_prediction():
    logits = torch.log(torch.tensor([[0.75, 0.25], [0.75, 0.25]]))
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # 0.1438
    assert dm.prior_penalty(logits).item() == pytest.approx(expected, abs=1e-6)
    assert dm.prior_penalty(torch.zeros(3, 4)).item() == pytest.approx(0.0, abs=1e-7)  # uniform: no penalty


def test_semi_loss_is_soft_cross_entropy_plus_probability_mse():
    logits = torch.log(torch.tensor([[0.5, 0.5]]))
    lx, lu = dm.semi_loss(logits, torch.tensor([[1.0, 0.0]]), logits, torch.tensor([[1.0, 0.0]]))
    assert lx.item() == pytest.approx(math.log(2))
    assert lu.item() == pytest.approx((0.25 + 0.25) / 2)  # mean over samples and classes


def test_negative_entropy_of_a_uniform_prediction_is_minus_log_k():
    assert dm.negative_entropy(torch.zeros(2, 4)).item() == pytest.approx(-math.log(4))


@pytest.mark.parametrize("current, weight", [(10.0, 0.0), (9.0, 0.0), (18.0, 12.5), (26.0, 25.0), (40.0, 25.0)])
def test_the_unlabelled_weight_ramps_linearly_over_sixteen_epochs_after_the_warm_up(current, weight):
    assert dm.unlabelled_weight(current, 10, 16, 25.0) == pytest.approx(weight)


def test_the_gmm_gives_small_losses_a_high_clean_probability():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.1, 0.03, 300), rng.normal(0.8, 0.05, 200)]).astype(np.float32)
    losses = dm.normalise(torch.as_tensor(losses)).numpy()
    probability = dm.clean_probability(losses, seed=0)
    assert probability[:300].mean() > 0.95 and probability[300:].mean() < 0.05  # the smaller-mean component
    labelled, unlabelled = dm.co_divide(probability, 0.5)
    assert set(labelled) == set(range(300)) and len(unlabelled) == 200


def test_normalise_maps_each_row_to_zero_one():
    assert torch.allclose(dm.normalise(torch.tensor([[2.0, 4.0, 3.0]])), torch.tensor([[0.0, 1.0, 0.5]]))


# -- the mechanisms inside the epoch --------------------------------------------------------------


def test_each_network_trains_on_the_division_of_the_other(monkeypatch):
    method = _method()
    first, second = Constant([0.0, 0.0, 0.0]), Constant([1.0, 0.0, 0.0])
    probability = np.array([[0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],   # the first network's division
                            [0.1, 0.1, 0.9, 0.9, 0.8, 0.1, 0.1, 0.1]])  # the second network's
    monkeypatch.setattr(dm.DivideMix, "divide", lambda self, run, nets: (probability, 0.0))
    trained = []

    def record(self, run, net, peer, labelled, unlabelled, weight, which, number):
        trained.append((net, peer, labelled.tolist(), weight.tolist()))
        return number

    monkeypatch.setattr(dm.DivideMix, "_train_network", record)
    method.train_pass(_run(NetworkPair(first, second)))
    (net_a, peer_a, labelled_a, weight_a), (net_b, peer_b, labelled_b, weight_b) = trained
    assert net_a is first and peer_a is second and labelled_a == [2, 3, 4]  # the second's division
    assert weight_a == pytest.approx(probability[1].tolist())
    assert net_b is second and peer_b is first and labelled_b == [0, 1]  # the first's division


def test_targets_are_co_refined_and_co_guessed_over_both_networks_then_sharpened():
    method = _method()
    p_net, p_peer = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.2, 0.2, 0.6])
    net, peer = Constant(p_net.log().tolist()), Constant(p_peer.log().tolist())
    run = _run(NetworkPair(net, peer))
    index = torch.tensor([0, 1])  # given labels 0 and 1
    weight = torch.tensor([0.8, 0.25, 0, 0, 0, 0, 0, 0])
    views = torch.zeros(2, 1, 8, 8)
    targets_x, targets_u, _ = method._targets(run, net, peer, index, weight, views, views, views, views)
    guess = (2 * p_net + 2 * p_peer) / 4  # both networks, both views
    assert torch.allclose(targets_u, dm.sharpen(guess.expand(2, -1), 0.5), atol=1e-6)
    refined = torch.stack([0.8 * torch.tensor([1.0, 0, 0]) + 0.2 * p_net,
                           0.25 * torch.tensor([0, 1.0, 0]) + 0.75 * p_net])
    assert torch.allclose(targets_x, dm.sharpen(refined, 0.5), atol=1e-6)


def test_a_mixmatch_step_uses_lambda_at_least_one_half_and_the_prior_penalty(monkeypatch):
    method = _method()
    seen = {"lam": [], "penalty": []}
    real_mix, real_penalty = dm.mix, dm.prior_penalty
    monkeypatch.setattr(dm, "mix", lambda i, t, lam, p: (seen["lam"].append(lam), real_mix(i, t, lam, p))[1])
    monkeypatch.setattr(dm, "prior_penalty", lambda z: (seen["penalty"].append(len(z)), real_penalty(z))[1])
    first, second = nn.Sequential(nn.Flatten(), nn.Linear(64, K)), nn.Sequential(nn.Flatten(), nn.Linear(64, K))
    run = _run(NetworkPair(first, second))
    before = [p.detach().clone() for p in second.parameters()]
    method._train_network(run, first, second, torch.arange(4), torch.arange(4, 8), torch.full((N,), 0.7), 0, 0)
    assert seen["lam"] and all(lam >= 0.5 for lam in seen["lam"])
    assert seen["penalty"] == [16]  # on all mixed logits: 2 labelled + 2 unlabelled views of 4
    assert all(torch.equal(a, b) for a, b in zip(before, second.parameters(), strict=True))  # the peer is fixed


def test_sln_noise_lands_on_the_labelled_targets_only_when_sigma_is_set(monkeypatch):
    method = _method()
    first, second = nn.Sequential(nn.Flatten(), nn.Linear(64, K)), nn.Sequential(nn.Flatten(), nn.Linear(64, K))
    captured = []
    real_mix = dm.mix
    monkeypatch.setattr(dm, "mix", lambda i, t, lam, p: (captured.append(t.clone()), real_mix(i, t, lam, p))[1])
    for sigma in (0.0, 1.0):
        run = _run(NetworkPair(first, second), sigma=sigma)
        method._train_network(run, first, second, torch.arange(4), torch.arange(4, 8), torch.full((N,), 0.7), 0, 0)
    clean, noisy = captured
    assert torch.allclose(clean[:8].sum(dim=1), torch.ones(8))  # sharpened: rows sum to one
    assert not torch.allclose(noisy[:8].sum(dim=1), torch.ones(8), atol=1e-3)  # noised labelled targets
    assert torch.allclose(noisy[8:].sum(dim=1), torch.ones(8))  # the co-guessed ones are left alone


# -- defaults and bad settings --------------------------------------------------------------------


@pytest.mark.parametrize("dataset, mode, rate, lambda_u", [
    ("cifar10", "sym", 0.2, 0.0), ("cifar10", "sym", 0.5, 25.0), ("cifar10", "sym", 0.9, 50.0),
    ("cifar10", "asym", 0.4, 0.0), ("cifar100", "sym", 0.5, 150.0), ("cifar100", "sym", 0.2, 25.0),
    ("digits", "sym", 0.4, 25.0)])
def test_lambda_u_follows_the_papers_setting(dataset, mode, rate, lambda_u):
    assert default_lambda_u(dataset, mode, rate) == lambda_u


def test_settle_fills_the_noise_setting_defaults():
    config = resolve(load("quickstart"), ["noise.rate=0.9", "data.train_limit=300"], {"method.name": "dividemix"})
    noisy = np.zeros(300, dtype=np.int64)
    settled = settle(config, noisy, noisy)
    assert (settled.method.p_threshold, settled.method.gmm_window, settled.method.lambda_u) == (0.6, 5, 50.0)
    with pytest.raises(SlnError, match="at least one batch"):
        settle(config, noisy[:10], noisy[:10])


@pytest.mark.parametrize("override, message", [
    ("method.p_threshold=1.0", "method.p_threshold must be in (0.0, 1.0)"),
    ("method.p_threshold=0", "method.p_threshold must be in (0.0, 1.0)"),
    ("method.mixmatch_alpha=0", "method.mixmatch_alpha must be in (0.0, inf]"),
    ("method.lambda_u=-1", "method.lambda_u must be in [0.0, inf]"),
    ("method.lambda_u=.nan", "method.lambda_u must be a finite number"),
    ("method.sharpen_t=.inf", "method.sharpen_t must be a finite number"),
    ("method.forget_rate=0.2", "method.forget_rate is a setting of coteaching; method dividemix does not use it"),
    ("sln.correction=5", "sln.correction does not combine with method dividemix"),
    ("method.sam=true", "method.sam does not combine with method dividemix"),
])
def test_bad_dividemix_settings_are_refused_naming_the_key(override, message):
    with pytest.raises(SlnError) as error:
        resolve(load("quickstart"), [override], {"method.name": "dividemix"})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_pair_predicts_the_mean_of_its_networks_logits():
    pair = NetworkPair(Constant([2.0, 0.0]), Constant([0.0, 4.0]))
    assert torch.allclose(pair(torch.zeros(1, 1)), torch.tensor([[1.0, 2.0]]))
    assert F.softmax(pair(torch.zeros(1, 1)), dim=1).argmax().item() == 1


@pytest.mark.parametrize("preset, warmup, lambda_u, penalty", [
    ("cifar10-sym-dividemix", 10, 25.0, False), ("cifar10-asym-dividemix", 10, 0.0, True),
    ("cifar100-sym-dividemix", 30, 150.0, False), ("cifar100-asym-dividemix", 30, 150.0, True)])
def test_the_dividemix_presets_settle_to_the_papers_settings(preset, warmup, lambda_u, penalty):
    config = resolve(load(preset))
    labels = np.zeros(50_000, dtype=np.int64)
    method = settle(config, labels, labels).method
    assert config.model.name == "preact-resnet18" and config.optim.batch_size == 64 and config.sln.sigma == 0
    assert (method.warmup_epochs, method.lambda_u, method.warmup_penalty, method.p_threshold) == \
        (warmup, lambda_u, penalty, 0.5)


# -- the clean probability as a label-issue score -------------------------------------------------

TINY_RUN = ["train", "--preset", "quickstart", "--train-limit", "300", "--test-limit", "100", "--set", "model.name=mlp",
            "--set", "optim.batch_size=50", "--set", "optim.lr=0.1", "--quiet"]


def test_analyze_issues_ranks_by_dividemix_clean_probability(tmp_path):
    import json

    from typer.testing import CliRunner

    from sln_cli.cli import app

    runner = CliRunner()
    for name, args in (("dm", ["--method", "dividemix", "--set", "method.warmup_epochs=3", "--epochs", "5"]),
                       ("warm", ["--method", "dividemix", "--set", "method.warmup_epochs=3", "--epochs", "2"]),
                       ("ce", ["--sigma", "0", "--epochs", "1"])):
        assert runner.invoke(app, [*TINY_RUN, *args, "--out", str(tmp_path / name)]).exit_code == 0
    result = runner.invoke(app, ["analyze", "issues", str(tmp_path / "dm"), "--score", "clean-probability",
                                 "--weights", "raw", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    saved = torch.load(tmp_path / "dm" / "checkpoint.pt", weights_only=True)["method"]["probability"]
    assert report["score"] == "clean-probability" and report["top"][0]["score"] == pytest.approx(
        saved.double().mean(dim=0).min().item())  # the most suspect: the lowest mean clean posterior
    assert report["detection"]["auroc"] > 0.75  # the division separates the flipped labels (40% noise)
    for name, message in (("warm", "holds no DivideMix division"), ("ce", "trained with method sln")):
        result = runner.invoke(app, ["analyze", "issues", str(tmp_path / name), "--score", "clean-probability"])
        assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_reports_name_dividemix_and_dividemix_with_sln_apart():
    from sln_cli.methods.catalog import display_name

    assert display_name("dividemix", 0.0, ema=False) == "DivideMix"
    assert display_name("dividemix", 0.5, ema=False) == "DivideMix+SLN"
    assert display_name("dividemix", 0.5, ema=True) == "DivideMix+SLN-MO"
    assert display_name("ls", 0.5, ema=False) == "LS+SLN"  # as every other method with SLN's noise (SOP+SLN)


def test_a_file_backed_balanced_draw_is_refused_with_dividemix():
    with pytest.raises(SlnError, match="data.balanced_per_class does not combine with method dividemix"):
        resolve(load("quickstart"), ["data.balanced_per_class=10"], {"method.name": "dividemix"})


def test_a_dividemix_run_killed_mid_epoch_resumes_exactly(tmp_path):
    """SIGKILL during a MixMatch epoch (after the checkpoint of a MixMatch epoch with a loss history of two), then
    --resume: the metrics and both networks' final weights equal those of a run never interrupted."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.hostile import ROOT

    args = [*TINY_RUN[1:], "--method", "dividemix", "--set", "method.warmup_epochs=1", "--set", "method.gmm_window=2",
            "--sigma", "0.3", "--epochs", "5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def train(*extra):
        return subprocess.Popen([sys.executable, "-m", "sln_cli", "train", *extra], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    assert train(*args, "--out", str(tmp_path / "straight")).wait() == 0
    killed = train(*args, "--out", str(tmp_path / "killed"))
    metrics = tmp_path / "killed" / "metrics.jsonl"
    while killed.poll() is None and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)  # during epoch 4 (or the checkpoint of 3): the next ones need the history
    killed.wait()
    assert len(metrics.read_text().splitlines()) < 5, "the run ended before it was killed"
    resumed = train("--resume", str(tmp_path / "killed"), "--quiet")
    assert resumed.wait() == 0, resumed.stderr.read()

    def rows(run):
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_seconds") and k != "images_per_second"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert rows(tmp_path / "straight") == rows(tmp_path / "killed") and len(rows(tmp_path / "killed")) == 5
    straight, again = (torch.load(tmp_path / name / "final.pt", weights_only=True) for name in ("straight", "killed"))
    assert all(torch.equal(straight["model"][key], again["model"][key]) for key in straight["model"])
