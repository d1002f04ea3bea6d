"""`sln train` end to end on the bundled digits: the run directory, determinism, resume, and errors."""

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sln_cli.cli import app
from tests.conftest import TINY, untimed_metrics

runner = CliRunner()
KEYS = ["epoch", "train_loss", "train_acc_noisy", "train_acc_clean", "memorized", "test_loss", "test_acc",
        "test_loss_ema", "test_acc_ema", "sigma", "lr", "epoch_seconds", "images_per_second"]


def _train(*args: str):
    result = runner.invoke(app, ["train", *TINY, *args])
    assert result.exit_code == 0, result.output
    return result


def test_a_tiny_run_writes_the_run_directory(tmp_path):
    run = tmp_path / "run"
    _train("--epochs", "2", "--out", str(run))
    for name in ["config.yaml", "meta.json", "metrics.jsonl", "checkpoint.pt", "final.pt", "summary.json",
                 "labels.csv", "labels.json"]:
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(k in rows[0] for k in KEYS)
    for key in ["train_acc_noisy", "train_acc_clean", "memorized", "test_acc", "test_acc_ema"]:
        assert 0.0 <= rows[-1][key] <= 1.0, key
    meta = json.loads((run / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["device"] == "cpu" and "torch" in meta
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last"]["epoch"] == 2 and summary["best"] is None  # digits has no validation split
    labels = np.loadtxt(run / "labels.csv", delimiter=",", skiprows=1, dtype=int)
    assert 0.3 < (labels[:, 0] != labels[:, 1]).mean() < 0.5  # quickstart asks for 40% symmetric noise
    final = torch.load(run / "final.pt", weights_only=True)
    assert set(final) >= {"model", "ema"}


def test_the_resolved_config_repeats_the_run(tmp_path):
    _train("--epochs", "2", "--out", str(tmp_path / "a"))
    result = runner.invoke(app, ["train", "--preset", str(tmp_path / "a" / "config.yaml"), "--out",
                                 str(tmp_path / "b"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert untimed_metrics(tmp_path / "a") == untimed_metrics(tmp_path / "b")


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    _train("--epochs", "2", "--seed", "3", "--out", str(tmp_path / "a"))
    _train("--epochs", "2", "--seed", "3", "--out", str(tmp_path / "b"))
    _train("--epochs", "2", "--seed", "4", "--out", str(tmp_path / "c"))
    assert untimed_metrics(tmp_path / "a") == untimed_metrics(tmp_path / "b")
    assert untimed_metrics(tmp_path / "a") != untimed_metrics(tmp_path / "c")


def test_a_resumed_run_equals_the_uninterrupted_run(tmp_path):
    lc = ["--set", "sln.correction=1"]  # label correction from epoch 2 on: its targets must survive resume
    _train("--epochs", "4", "--out", str(tmp_path / "full"), *lc)
    _train("--epochs", "2", "--out", str(tmp_path / "part"), *lc)
    config = yaml.safe_load((tmp_path / "part" / "config.yaml").read_text())
    assert config["optim"]["epochs"] == 2
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "part"), "--epochs", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    assert untimed_metrics(tmp_path / "full") == untimed_metrics(tmp_path / "part")
    full = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    part = torch.load(tmp_path / "part" / "final.pt", weights_only=True)
    for key, value in full["ema"].items():
        assert torch.equal(value, part["ema"][key]), key


def test_label_correction_records_how_many_targets_point_at_the_truth(tmp_path):
    _train("--epochs", "2", "--set", "sln.correction=1", "--out", str(tmp_path / "r"))
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert "corrected_acc" not in rows[0] and 0.0 <= rows[1]["corrected_acc"] <= 1.0
    assert rows[0]["sigma"] == 0.5 and rows[1]["sigma"] == 0.0  # LC stops the label noise


def test_a_class_balanced_draw_trains_on_a_fresh_subset_each_epoch(tmp_path):
    """Clothing1M's setting: every epoch draws `balanced_per_class` samples of each noisy class."""
    _train("--epochs", "2", "--set", "data.balanced_per_class=7", "--set", "sln.correction=1",
           "--out", str(tmp_path / "r"))
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_samples"] for r in rows] == [70, 70]
    assert 0.0 <= rows[1]["corrected_acc"] <= 1.0


def test_record_probs_writes_an_averaged_softmax(tmp_path):
    _train("--epochs", "2", "--record-probs", "--out", str(tmp_path / "r"))
    probs = np.load(tmp_path / "r" / "probs.npy")
    assert probs.shape == (200, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_ablations_run(tmp_path):
    for i, key in enumerate(["sln.grad_noise_sigma=0.01", "sln.logit_grad_noise_sigma=0.5"]):
        _train("--epochs", "1", "--sigma", "0", "--set", key, "--out", str(tmp_path / str(i)))


def test_print_config_prints_yaml_and_writes_nothing(tmp_path):
    result = runner.invoke(app, ["train", *TINY, "--sigma", "0.25", "--print-config", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["sln"]["sigma"] == 0.25
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cuda:7"], "not available"),
        (["--set", "optim.epoch=3"], "did you mean 'optim.epochs'"),
        (["--noise-rate", "2"], "noise.rate must be in [0, 1]"),
        (["--set", "model.name=wrn28"], "did you mean"),
        (["--labels", "missing.csv"], "missing.csv"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / "r"
    result = runner.invoke(app, ["train", *TINY, "--epochs", "1", "--out", str(out), *args])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_an_existing_run_is_replaced_only_with_overwrite(tmp_path):
    run = tmp_path / "r"
    _train("--epochs", "1", "--out", str(run))
    result = runner.invoke(app, ["train", *TINY, "--epochs", "1", "--out", str(run)])
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    _train("--epochs", "2", "--out", str(run), "--overwrite")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["train", *TINY, "--epochs", "1", "--out", str(other), "--overwrite"])
    assert result.exit_code == 1 and "was not made by sln" in result.stderr
    assert (other / "mine.txt").read_text() == "keep me"


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and "not a run directory" in result.stderr


def test_resume_refuses_to_change_the_method(tmp_path):
    _train("--epochs", "1", "--out", str(tmp_path / "r"))
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--sigma", "0.1", "--quiet"])
    assert result.exit_code == 1 and "cannot change sln.sigma" in result.stderr


def test_a_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "r"
    explode = ["--set", "optim.lr_milestones=[1]", "--set", "optim.lr_gamma=1e30"]  # epoch 2: lr = 5e28
    result = runner.invoke(app, ["train", *TINY, "--epochs", "3", "--out", str(run), *explode])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the training loss became non-finite at epoch 2, step ")
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_file_backed_dataset_with_a_validation_split_selects_on_it(tmp_path):
    """imagefolder goes through DataLoader workers; its labels are the only truth, and val drives best.pt."""
    from tests.synthetic import write_imagefolder

    root = write_imagefolder(tmp_path / "images", n_train=8, n_test=4, n_val=4, size=(12, 12))
    run = tmp_path / "r"
    result = runner.invoke(app, [
        "train", "--set", "data.dataset=imagefolder", "--data-dir", str(root), "--set", "model.name=mlp",
        "--set", "data.resize=12", "--set", "data.crop=8", "--set", "data.workers=0", "--set", "data.padding=0",
        "--set", "noise.mode=none", "--set", "optim.batch_size=8", "--epochs", "2", "--device", "cpu",
        "--sigma", "0.5", "--quiet", "--out", str(run),
    ])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train_samples"] == 24 and rows[0]["train_acc_clean"] is None and rows[0]["memorized"] is None
    assert 0.0 <= rows[-1]["val_acc_ema"] <= 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selection"] == "val_acc_ema"
    assert summary["best"]["val_acc_ema"] == max(r["val_acc_ema"] for r in rows)
    assert (run / "best.pt").is_file()
    assert (run / "labels.csv").read_text().splitlines()[0] == "label_noisy"  # no truth to record


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path, monkeypatch):
    import sln_cli.training.train as train_module

    real = train_module.run_epoch

    def interrupt_in_epoch_two(state, *args, **kwargs):
        if state.epoch == 1:
            raise KeyboardInterrupt
        return real(state, *args, **kwargs)

    monkeypatch.setattr(train_module, "run_epoch", interrupt_in_epoch_two)
    run = tmp_path / "r"
    result = runner.invoke(app, ["train", *TINY, "--epochs", "3", "--out", str(run)])
    assert result.exit_code == 130
    assert result.stderr.startswith(f"error: interrupted during epoch 2; `sln train --resume {run}`")
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_a_run_with_relative_paths_resumes_from_another_directory(tmp_path, monkeypatch):
    from tests.synthetic import write_cifar10

    write_cifar10(tmp_path / "DATA", n_train=50, n_test=20, seed=0)
    monkeypatch.chdir(tmp_path)
    args = ["train", "--preset", "cifar10-sym", "--data-dir", "DATA", "--set", "model.name=mlp", "--quiet"]
    assert runner.invoke(app, [*args, "--epochs", "1", "--out", "run"]).exit_code == 0
    monkeypatch.chdir(tmp_path / "run")
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_transition_matrix_drives_generated_noise(tmp_path):
    """noise.matrix sets the noise by itself: noise.rate (a float in every config) must not get in its way."""
    matrix = np.eye(10) * 0.5
    for k in range(10):
        matrix[k, (k + 1) % 10] += 0.5  # half of every class goes to the next one
    np.save(tmp_path / "m.npy", matrix)
    _train("--epochs", "1", "--set", "noise.mode=transition", "--set", f"noise.matrix={tmp_path / 'm.npy'}",
           "--out", str(tmp_path / "r"))
    labels = np.loadtxt(tmp_path / "r" / "labels.csv", delimiter=",", skiprows=1, dtype=int)
    flipped = labels[:, 0] != labels[:, 1]
    assert np.all(labels[flipped, 1] == (labels[flipped, 0] + 1) % 10)
    assert 0.4 < flipped.mean() < 0.6  # 1,297 draws at p = 0.5: well within 7 standard errors


def test_a_metrics_line_cut_off_by_a_kill_is_dropped_but_damage_elsewhere_is_an_error(tmp_path):
    from sln_cli.errors import SlnError
    from sln_cli.rundir import runs

    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert runs.read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(SlnError, match="line 2 is not valid JSON"):
        runs.read_metrics(tmp_path)
