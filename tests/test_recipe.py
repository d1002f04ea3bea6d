"""The official instance-dependent recipe: its presets, the optimiser re-created every epoch, and the eval-mode
probability recording (equal to the average of eval-mode passes over the training set)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sln_cli import config, presets
from sln_cli.cli import app
from sln_cli.errors import SlnError

runner = CliRunner()


@pytest.mark.parametrize(("name", "dataset"), [("cifar10-idn-probs", "cifar10"), ("cifar100-idn-probs", "cifar100")])
def test_the_idn_presets_follow_the_official_recipe(name: str, dataset: str) -> None:
    c = config.resolve(presets.load(name))
    assert c.data.dataset == dataset and c.noise.mode == "none" and c.sln.sigma == 0
    assert c.model.name == "wrn-28-10"
    assert (c.optim.epochs, c.optim.batch_size, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (
        150, 128, 0.1, 0.9, 5e-4)
    assert c.optim.lr_milestones == (60, 120) and c.optim.lr_gamma == 0.2 and c.optim.reset_each_epoch
    assert (c.data.padding, c.data.flip) == (4, True)  # the usual crop-and-flip
    assert c.run.record_probs and c.run.record_probs_mode == "eval"


def test_the_clean_presets_say_what_they_are() -> None:
    for name in ("cifar10-clean", "cifar100-clean"):
        c = config.resolve(presets.load(name))
        assert c.description.startswith("Clean-label baseline") and "idn-probs" in c.description
        assert c.run.record_probs_mode == "batch"


def test_an_unknown_recording_mode_is_refused() -> None:
    with pytest.raises(SlnError, match="run.record_probs_mode must be one of batch, eval"):
        config.resolve({}, ["run.record_probs_mode=epoch"])


def train(workdir: Path, out: str, *settings: str) -> Path:
    args = ["train", "--preset", "quickstart", "--out", out, "--quiet", "--train-limit", "400", "--test-limit", "100"]
    for setting in settings:
        args += ["--set", setting]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return workdir / out


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow  # two short digits runs
def test_recorded_probabilities_are_the_average_of_eval_mode_passes(workdir: Path) -> None:
    """probs.npy = the mean over epochs of each epoch's eval-mode softmax of the training images, in dataset order,
    augmented as in training (digits: 1-pixel crops) with that epoch's draws."""
    import torch

    from sln_cli.data.batches import Augmentation
    from sln_cli.training.checkpoints import load_run, predict, resolve_targets, split_data
    from sln_cli.training.epoch import epoch_generator

    epochs = 3
    run_dir = train(workdir, "runs/eval", f"optim.epochs={epochs}", "run.record_probs=true",
                    "run.record_probs_mode=eval", "run.keep_checkpoints=1", "data.padding=1")
    recorded = np.load(run_dir / "probs.npy")
    augmented, plain = [], []
    for epoch in range(1, epochs + 1):  # each epoch's weights, in eval mode
        (target,) = resolve_targets([str(run_dir)], checkpoint=f"epoch-{epoch}")
        run = load_run(target, torch.device("cpu"))
        images = split_data(run, "train", true_labels=False).images
        network = run.network("raw").eval()
        generator = epoch_generator(torch.device("cpu"), run.config.run.seed, epoch, "probs")
        batches = images.batches(torch.arange(len(images)), run.config.run.eval_batch_size,
                                 augmentation=Augmentation(padding=1, flip=False), generator=generator)
        with torch.no_grad():
            augmented.append(torch.cat([torch.softmax(network(x), dim=1) for x, _ in batches]).numpy())
        plain.append(predict(network, images, batch_size=512))
    np.testing.assert_allclose(recorded, np.mean(augmented, axis=0), atol=1e-5)
    assert np.abs(recorded - np.mean(plain, axis=0)).max() > 0.01  # the training augmentation was applied
    # the cheaper in-batch mode records something else: train-mode softmax before each update
    batch_dir = train(workdir, "runs/batch", f"optim.epochs={epochs}", "run.record_probs=true", "data.padding=1")
    assert np.abs(np.load(batch_dir / "probs.npy") - recorded).max() > 0.05


@pytest.mark.slow  # two short digits runs
def test_the_optimiser_is_recreated_every_epoch(workdir: Path) -> None:
    settings = ("optim.epochs=2", "optim.lr_milestones=[1]", "optim.lr_gamma=0.5")
    reset = metrics(train(workdir, "runs/reset", *settings, "optim.reset_each_epoch=true"))
    kept = metrics(train(workdir, "runs/kept", *settings))
    measured = ("train_loss", "test_loss", "test_acc", "lr")
    assert [reset[0][k] for k in measured] == [kept[0][k] for k in measured]  # epoch 1 starts fresh in both
    assert reset[1]["lr"] == kept[1]["lr"] == 0.05 * 0.5  # the schedule still applies to the new optimiser
    assert reset[1]["train_loss"] != kept[1]["train_loss"]  # epoch 2: momentum restarted from zero


def test_reset_optimizer_drops_the_momentum_buffers() -> None:
    import torch

    from sln_cli.config import OptimConfig
    from sln_cli.methods.base import Method
    from sln_cli.training.optim import new_optimizer
    from sln_cli.training.recording import reset_optimizer

    class Holder:
        model = torch.nn.Linear(3, 2)
        method = Method()  # plain SLN: no extra networks to optimise

    state = Holder()
    state.optimizer = new_optimizer(state.model, OptimConfig(lr=0.1), torch.device("cpu"))
    state.model(torch.ones(1, 3)).sum().backward()
    state.optimizer.step()
    assert state.optimizer.state  # momentum buffers exist after a step
    reset_optimizer(state, OptimConfig(lr=0.1, reset_each_epoch=False), torch.device("cpu"))
    assert state.optimizer.state
    reset_optimizer(state, OptimConfig(lr=0.1, reset_each_epoch=True), torch.device("cpu"))
    assert not state.optimizer.state
    assert list(state.optimizer.param_groups[0]["params"]) == list(state.model.parameters())
