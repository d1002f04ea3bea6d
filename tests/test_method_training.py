"""Every method through `sln train --method NAME` on tiny digits: it learns, its run directory names it, and
a resumed run with per-method state (ELR's targets, co-teaching's peer, SAM) equals an uninterrupted one."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from sln_cli.cli import app
from tests.conftest import tiny, untimed_metrics

runner = CliRunner()
TINY = [*tiny(train_limit=300, test_limit=200), "--set", "optim.lr=0.1"]
VARIANTS = [["--method", name] for name in ("ce", "sln", "gce", "sce", "nce-rce", "ls", "bootstrap-soft",
                                             "bootstrap-hard", "forward", "elr", "coteaching")]
VARIANTS += [["--method", "ce", "--sam"], ["--method", "ls", "--sigma", "0.5"], ["--method", "sop"],
             ["--method", "sop-plus"], ["--method", "sop", "--sigma", "0.5"]]
DIVIDEMIX = ["--method", "dividemix", "--set", "method.warmup_epochs=3"]  # MixMatch from the fourth epoch
VARIANTS += [DIVIDEMIX, [*DIVIDEMIX, "--sigma", "0.5"]]


def _train(*args: str) -> None:
    result = runner.invoke(app, ["train", *TINY, *args])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("variant", VARIANTS, ids=" ".join)
def test_every_method_learns_and_records_itself(tmp_path, variant):
    _train(*variant, "--epochs", "8", "--out", str(tmp_path / "run"))
    rows = untimed_metrics(tmp_path / "run")
    # learns: far above chance (0.10), and above its first epoch; the robust losses (NCE+RCE, GCE) learn slowly
    # on this small MLP, and SLN's raw network swings at this learning rate, so the best epoch of either network
    best = max(max(row["test_acc"], row["test_acc_ema"]) for row in rows)
    assert best >= 0.28 and best >= rows[0]["test_acc"] + 0.15
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["method"]["name"] == variant[1] and config["method"]["sam"] == ("--sam" in variant)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == variant[1] and summary["method_names"]["ema"].endswith(("-MO", "-MO+SAM", "-MO+SLN"))


@pytest.mark.parametrize("variant", [["--method", "elr"], ["--method", "coteaching"], ["--method", "sln", "--sam"],
                                     ["--method", "sop"], ["--method", "sop-plus"],
                                     ["--method", "dividemix", "--set", "method.warmup_epochs=1", "--set",
                                      "method.gmm_window=2", "--sigma", "0.3"]], ids=" ".join)
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, variant):
    _train(*variant, "--epochs", "3", "--out", str(tmp_path / "straight"))
    _train(*variant, "--epochs", "2", "--out", str(tmp_path / "resumed"))
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "resumed"), "--epochs", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert untimed_metrics(tmp_path / "straight") == untimed_metrics(tmp_path / "resumed")
    straight, resumed = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
                         for name in ("straight", "resumed"))
    for key in straight["method"]:  # ELR's targets, the peer's weights, SOP's u, v, DivideMix's loss history
        assert str(straight["method"][key]) == str(resumed["method"][key])
        if isinstance(straight["method"][key], torch.Tensor):
            assert torch.equal(straight["method"][key], resumed["method"][key])


def test_sop_trains_u_and_v_with_their_own_optimizer_during_a_run(tmp_path):
    _train("--method", "sop", "--epochs", "1", "--out", str(tmp_path / "run"))
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state = checkpoint["method"]
    assert state["sop_u"].shape == (300, 1) and state["sop_v"].shape == (300, 10)  # the training set's samples
    assert [group["lr"] for group in state["sop_optimizer"]["param_groups"]] == [10.0, 10.0]  # lr_u, lr_v (CIFAR-10)
    assert len(checkpoint["optimizer"]["param_groups"]) == 1  # the network's optimiser does not hold u, v
    # u, v started at N(0, 1e-8²) (seed 0): one epoch of their own SGD steps has moved them
    from sln_cli.methods.sop import INIT_STD, SEED_OFFSET

    generator = torch.Generator().manual_seed(0 + SEED_OFFSET)
    u0 = torch.empty(300, 1).normal_(0.0, INIT_STD, generator=generator)
    v0 = torch.empty(300, 10).normal_(0.0, INIT_STD, generator=generator)
    assert state["sop_u"].abs().max() > 2 * u0.abs().max()  # u grows: |u|² takes up the noisy labels' residual
    assert (state["sop_v"] - v0).abs().max() > 0.1 * v0.abs().max()


def test_coteaching_trains_its_peer_with_the_same_optimizer(tmp_path):
    _train("--method", "coteaching", "--epochs", "1", "--out", str(tmp_path / "run"))
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert len(checkpoint["optimizer"]["param_groups"]) == 2  # the model's and the peer's parameters
    peer, model = checkpoint["method"]["peer"], checkpoint["model"]
    assert peer.keys() == model.keys() and any(not torch.equal(peer[k], model[k]) for k in peer)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert 0.3 < config["method"]["forget_rate"] < 0.5  # the labels' realised noise rate (40% requested)


@pytest.mark.parametrize("args, message", [
    (["--method", "gce", "--sigma", "0.5"], "sln.sigma acts on soft targets, but method gce"),
    (["--method", "forward", "--set", "method.forward_matrix=nowhere.npy"], "method.forward_matrix must be"),
    (["--method", "nope"], "method.name must be one of"),
    (["--method", "sop", "--set", "method.lr_u=-1"], "method.lr_u must be in [0.0, inf], got -1"),
    (["--method", "sop-plus", "--set", "method.lr_v=nan"], "method.lr_v must be a finite number, got nan"),
    (["--method", "sop-plus", "--set", "method.ratio_balance=-0.1"], "method.ratio_balance must be in [0.0, inf]"),
    (["--method", "sop", "--set", "method.ratio_consistency=0.9"],
     "method.ratio_consistency is a setting of sop-plus; method sop does not use it"),
    (["--method", "sop", "--set", "method.elr_lambda=3"], "method.elr_lambda is a setting of elr; method sop does"),
    (["--method", "sop", "--sam"], "method.sam does not combine with method sop"),
    (["--method", "sop", "--set", "sln.correction=5"], "sln.correction does not combine with method sop"),
])
def test_bad_method_settings_end_in_one_error_line_and_no_run_directory(tmp_path, args, message):
    result = runner.invoke(app, ["train", *TINY, *args, "--epochs", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "run").exists()


def test_sln_methods_lists_every_method_with_its_defaults():
    result = runner.invoke(app, ["methods", "--dataset", "cifar100", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["sce"]["hyperparameters"]["sce_alpha"]["value"] == 6.0
    assert rows["elr"]["hyperparameters"]["elr_lambda"]["value"] == 7.0
    assert "Foret" in rows["sam (method.sam=true)"]["paper"]
    assert rows["sop"]["hyperparameters"]["lr_u"]["value"] == 1.0 and rows["sop"]["sln_noise"]
    assert rows["sop-plus"]["hyperparameters"]["ratio_consistency"]["value"] == 0.9
    assert rows["sop-plus"]["reference"] == {"repository": "shengliu66/SOP", "file": "model/loss.py",
                                             "commit": "4d991cedf1fafec98f858a213ccc31e52318a77f"}
    assert "sln.correction: refused" in rows["sop"]["combinations"] and rows["elr"]["combinations"] is None
