"""The noisy validation split (`data.noisy_val`): stratified, seeded apart, recorded, never trained on, selects."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.config import resolve
from sln_cli.errors import SlnError
from sln_cli.labels import noisy_val
from sln_cli.labels.trainset import build_trainset
from sln_cli.presets import load
from sln_cli.training import epoch as epoch_lib
from sln_cli.training import train as train_lib
from tests.conftest import tiny

runner = CliRunner()
TINY = tiny(train_limit=300)


def _config(*overrides: str, **flags):
    return resolve(load("quickstart"), ["data.train_limit=300", "data.test_limit=100", "model.name=mlp",
                                        "optim.batch_size=50", *overrides], flags)


def test_the_split_is_stratified_by_noisy_label_and_seeded_by_its_own_seed():
    rng = np.random.default_rng(0)
    noisy = rng.choice(5, size=2000, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    held = noisy_val.split(noisy, 500, seed=3)
    assert len(held) == 500 and len(np.unique(held)) == 500
    expected = np.bincount(noisy, minlength=5) * 500 / 2000
    assert np.abs(np.bincount(noisy[held], minlength=5) - expected).max() <= 1  # proportional, up to rounding
    assert np.array_equal(held, noisy_val.split(noisy, 500, seed=3))
    assert not np.array_equal(held, noisy_val.split(noisy, 500, seed=4))


def test_every_method_and_training_seed_holds_out_the_same_samples_another_split_seed_others():
    base = build_trainset(_config("data.noisy_val=60").data, _config("data.noisy_val=60").noise)
    for overrides in (["run.seed=5"], ["method.name=gce"], ["method.name=elr", "run.seed=2"]):
        config = _config("data.noisy_val=60", *overrides)
        assert np.array_equal(build_trainset(config.data, config.noise).noisy_val.indices, base.noisy_val.indices)
    other = _config("data.noisy_val=60", "data.noisy_val_seed=1")
    assert not np.array_equal(build_trainset(other.data, other.noise).noisy_val.indices, base.noisy_val.indices)


def test_the_held_out_samples_leave_the_training_set():
    config = _config("data.noisy_val=0.2")
    trainset = build_trainset(config.data, config.noise)
    held = trainset.noisy_val
    assert len(held.indices) == 60 and len(trainset.noisy) == 240 == len(trainset.dataset.train.labels)
    assert not set(held.indices.tolist()) & set(trainset.train_indices.tolist())
    assert np.array_equal(held.noisy, trainset.labels.noisy[held.indices])


def test_no_training_step_label_correction_or_method_state_sees_a_held_out_sample(tmp_path, monkeypatch):
    """Every index a training step receives, mapped back to the dataset, lies outside the held-out set; LC targets
    and ELR's per-sample state are sized on the remaining samples."""
    seen, built = [], {}
    step, build = epoch_lib.sgd_step, train_lib.build_trainset

    def recording_step(step_config, network, images, targets, index):
        seen.append(index.clone())
        return step(step_config, network, images, targets, index)

    def keeping_trainset(*args):
        built["trainset"] = build(*args)
        return built["trainset"]

    monkeypatch.setattr(epoch_lib, "sgd_step", recording_step)
    monkeypatch.setattr(train_lib, "build_trainset", keeping_trainset)
    for name, extra in (("lc", ["sln.correction=1"]), ("elr", ["method.name=elr"])):
        seen.clear()
        config = _config("data.noisy_val=100", "optim.epochs=2", f"run.out={tmp_path / name}", *extra)
        train_lib.train(config, quiet=True)
        trainset = built["trainset"]
        trained = trainset.train_indices[torch.cat(seen).numpy()]
        assert len(np.unique(trained)) == 200  # every remaining sample was trained on ...
        assert not set(trained.tolist()) & set(trainset.noisy_val.indices.tolist())  # ... and no held-out one
        saved = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
        assert saved["targets"].shape[0] == 200
        if name == "elr":
            assert saved["method"]["elr_targets"].shape[0] == 200


def test_a_run_records_its_split_and_noisy_validation_metrics_and_selects_best_pt(tmp_path):
    run = tmp_path / "r"
    result = runner.invoke(app, ["train", *TINY, "--epochs", "3", "--noisy-val", "60", "--out", str(run)])
    assert result.exit_code == 0, result.output
    recorded = noisy_val.read(run / noisy_val.FILE)
    config = _config("data.noisy_val=60")
    assert np.array_equal(recorded, build_trainset(config.data, config.noise).noisy_val.indices)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for suffix in ("", "_ema"):
        for key in ("noisy_val_acc", "noisy_val_loss", "noisy_val_clean_acc"):
            assert all(np.isfinite(row[key + suffix]) for row in rows), key + suffix
    summary = json.loads((run / "summary.json").read_text())
    best = max(rows, key=lambda row: row["noisy_val_acc_ema"])  # the first of equal bests
    assert summary["selection"] == "noisy_val_acc_ema" and summary["best"]["epoch"] == best["epoch"]
    assert summary["noisy_val"] == {"samples": 60, "seed": 0}
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == best["epoch"]
    result = runner.invoke(app, ["evaluate", str(run), "--checkpoint", "best-noisy-val", "--json"])
    assert result.exit_code == 0, result.output
    assert {row["epoch"] for row in json.loads(result.stdout)} == {best["epoch"]}


def test_a_resume_whose_split_differs_is_refused(tmp_path):
    run = tmp_path / "r"
    assert runner.invoke(app, ["train", *TINY, "--epochs", "1", "--noisy-val", "60", "--out", str(run)]).exit_code == 0
    indices = noisy_val.read(run / noisy_val.FILE)
    noisy_val.write(run, np.sort(np.append(indices[1:], 299 if 299 not in indices else 298)))
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    assert result.exit_code == 1 and "differs" in result.output and "Traceback" not in result.output
    (run / noisy_val.FILE).unlink()
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    assert result.exit_code == 1 and "no noisy_val.csv" in result.output


def test_best_noisy_val_of_a_run_without_one_is_an_error(tiny_runs):
    result = runner.invoke(app, ["evaluate", str(tiny_runs["ce-0"]), "--checkpoint", "best-noisy-val"])
    assert result.exit_code == 1 and "held out no noisy validation split" in result.output


@pytest.mark.parametrize(("value", "message"), [
    ("0", "count >= 1 or a fraction"), ("-3", "count >= 1 or a fraction"), ("1.5", "count >= 1 or a fraction"),
    ("300", "holds out 300 of the 300"), ("1000", "holds out 1000 of the 300"), ("0.001", "holds out no sample"),
])
def test_bad_noisy_val_values_are_one_line_errors(tmp_path, value, message):
    result = runner.invoke(app, ["train", *TINY, "--epochs", "1", "--set", f"data.noisy_val={value}",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_a_class_too_small_to_stratify_is_an_error():
    with pytest.raises(SlnError, match="single training sample"):
        noisy_val.split(np.array([0, 0, 0, 1, 1, 1, 2]), 3, seed=0)
    with pytest.raises(SlnError, match="at least 3 held out"):
        noisy_val.split(np.array([0, 0, 1, 1, 2, 2, 2]), 2, seed=0)
