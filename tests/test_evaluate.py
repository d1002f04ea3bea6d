"""`sln evaluate` on tiny runs trained once per session: the JSON contract, agreement with the metrics logged during
training, saved predictions that reproduce the table, seed aggregates, checkpoint choice, and every error path."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sln_cli.cli import app

runner = CliRunner()
CONTRACT = {"run", "weights", "split", "num_samples", "accuracy", "nll", "brier", "ece", "ece_adaptive", "mce"}


def evaluate_json(*args: str) -> list[dict]:
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def last_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def assert_one_line_error(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE written out independently: bins (b/15, (b+1)/15], confidence 0 in the first bin."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (confidence > low) & (confidence <= high) if b else (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def test_json_contract_and_agreement_with_the_training_log(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-0"]
    rows = evaluate_json(str(run), "--out", str(tmp_path))
    assert [(row["run"], row["weights"]) for row in rows] == [(str(run), "raw"), (str(run), "ema")]
    logged = last_metrics(run)
    for row, suffix in zip(rows, ("", "_ema"), strict=True):
        assert CONTRACT <= set(row) and row["split"] == "test" and row["num_samples"] == 100
        assert row["epoch"] == 2 and row["ece_bins"] == 15 and row["binning"] == "equal-width"
        assert "top5" not in row  # 10 classes: top-5 only from 20 on
        # The rebuilt test subset and network give what the training loop measured on the same weights.
        assert row["accuracy"] == pytest.approx(logged["test_acc" + suffix], abs=1e-9)
        assert row["nll"] == pytest.approx(logged["test_loss" + suffix], abs=1e-5)
        assert 0 <= row["ece"] <= row["mce"] <= 1 and 0 <= row["brier"] <= 2
    png = tmp_path / "reliability-test.png"
    assert png.read_bytes().startswith(b"\x89PNG") and rows[0]["reliability_diagram"] == str(png)


def test_saved_predictions_reproduce_the_table(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-1"]
    (row,) = evaluate_json(str(run), "--weights", "ema", "--save-predictions", str(tmp_path / "p.npz"),
                           "--out", str(tmp_path))
    saved = np.load(tmp_path / "p.npz", allow_pickle=False)
    probs, labels = saved["probs"], saved["labels"]
    assert probs.shape == (100, 10) and labels.shape == (100,) and saved["indices"].shape == (100,)
    assert str(saved["weights"]) == "ema" and str(saved["split"]) == "test"
    assert row["accuracy"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == labels)), abs=1e-12)
    assert row["ece"] == pytest.approx(expected_calibration_error(probs.astype(np.float64), labels), abs=1e-9)
    assert row["predictions"] == str(tmp_path / "p.npz")


def test_train_split_separates_clean_and_mislabelled(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-0"]
    rows = evaluate_json(str(run), "--split", "train", "--save-predictions", str(tmp_path / "train.npz"),
                         "--out", str(tmp_path))
    full = np.loadtxt(run / "labels.csv", delimiter=",", skiprows=1, dtype=np.int64)  # label, label_noisy
    for row in rows:
        saved = np.load(tmp_path / f"train-sln-0-{row['weights']}.npz", allow_pickle=False)
        indices, predicted = saved["indices"], saved["probs"].argmax(axis=1)
        assert row["num_samples"] == len(indices) == 200
        # indices point into the run's own label file, whose true / noisy labels the metrics use
        assert np.array_equal(saved["labels"], full[indices, 0])
        assert np.array_equal(saved["noisy_labels"], full[indices, 1])
        mislabelled = full[indices, 0] != full[indices, 1]
        assert row["mislabelled"]["num_samples"] == mislabelled.sum() > 0
        assert row["memorized"] == pytest.approx(np.mean(predicted[mislabelled] == full[indices, 1][mislabelled]))
        assert row["mislabelled"]["accuracy"] == pytest.approx(
            np.mean(predicted[mislabelled] == full[indices, 0][mislabelled]))
        assert set(row["clean"]) == set(row["mislabelled"]) == {"num_samples", "accuracy"}
        weighted = (row["clean"]["accuracy"] * row["clean"]["num_samples"]
                    + row["mislabelled"]["accuracy"] * row["mislabelled"]["num_samples"]) / 200
        assert row["accuracy"] == pytest.approx(weighted)


def test_runs_differing_only_in_seed_get_mean_and_std(tiny_runs, tmp_path) -> None:
    rows = evaluate_json(str(tiny_runs["sln-0"]), str(tiny_runs["sln-1"]), str(tiny_runs["ce-0"]),
                         "--csv", str(tmp_path / "table.csv"), "--out", str(tmp_path))
    per_run = [row for row in rows if not row.get("aggregate")]
    aggregates = [row for row in rows if row.get("aggregate")]
    assert len(per_run) == 6 and all(CONTRACT <= set(row) for row in per_run)
    assert [row["weights"] for row in aggregates] == ["raw", "ema"]  # ce-0 has another sigma: not grouped
    for aggregate in aggregates:
        members = [row for row in per_run if row["weights"] == aggregate["weights"] and "sln-" in row["name"]]
        values = [row["accuracy"] for row in members]
        assert aggregate["seeds"] == [0, 1] and aggregate["num_runs"] == 2
        assert aggregate["accuracy"] == pytest.approx(np.mean(values))
        assert aggregate["accuracy_std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    with open(tmp_path / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and table[0]["accuracy"] == repr(per_run[0]["accuracy"])
    assert not list(tmp_path.glob(".*.tmp"))
    result = runner.invoke(app, ["evaluate", str(tiny_runs["sln-0"]), str(tiny_runs["sln-1"]), "--out", str(tmp_path)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "mean ± std (2 seeds)" in result.stdout, result.output
    assert "mean ± std over sln-0, sln-1 (seeds 0, 1)" in result.stdout


def test_globs_checkpoint_choice_and_checkpoint_files(tiny_runs, tmp_path) -> None:
    root = tiny_runs["sln-0"].parent
    rows = evaluate_json(str(root / "sln-*"), "--weights", "raw", "--out", str(tmp_path))
    assert [row["name"] for row in rows if not row.get("aggregate")] == ["sln-0", "sln-1"]
    (first,) = evaluate_json(str(tiny_runs["sln-0"]), "--checkpoint", "epoch-1", "--weights", "raw",
                             "--out", str(tmp_path))
    epoch_file = tiny_runs["sln-0"] / "checkpoints" / "epoch-0001.pt"
    (direct,) = evaluate_json(str(epoch_file), "--weights", "raw", "--out", str(tmp_path))
    assert first["epoch"] == direct["epoch"] == 1 and direct["run"] == str(tiny_runs["sln-0"])
    assert first["accuracy"] == direct["accuracy"] == pytest.approx(last_metrics_epoch(tiny_runs["sln-0"], 1))
    (last,) = evaluate_json(str(tiny_runs["sln-0"] / "checkpoint.pt"), "--weights", "raw", "--out", str(tmp_path))
    assert last["epoch"] == 2


def last_metrics_epoch(run: Path, epoch: int) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(row["test_acc"] for row in rows if row["epoch"] == epoch)


def test_reliability_diagram_goes_to_the_first_run_by_default(tiny_runs) -> None:
    evaluate_json(str(tiny_runs["ce-0"]), "--weights", "raw")
    assert (tiny_runs["ce-0"] / "analysis" / "reliability-test.png").is_file()


def incompatible_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "other-dataset"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["dataset"] = "cifar10"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def test_errors_are_one_line_with_exit_code_1(tiny_runs, tmp_path) -> None:
    run = str(tiny_runs["sln-0"])
    assert_one_line_error(["evaluate", str(tmp_path / "missing")], "neither a run directory nor")
    assert_one_line_error(["evaluate", str(tmp_path / "nothing-*")], "no run directory or checkpoint matches")
    assert_one_line_error(["evaluate", run, "--checkpoint", "best"], "no best.pt")
    assert_one_line_error(["evaluate", run, "--checkpoint", "epoch-9"], "kept epochs: epoch-0001, epoch-0002")
    assert_one_line_error(["evaluate", str(tiny_runs["ce-0"]), "--checkpoint", "epoch-1"], "keep_checkpoints")
    assert_one_line_error(["evaluate", run + "/final.pt", "--checkpoint", "final"], "drop --checkpoint")
    assert_one_line_error(["evaluate", run, "--split", "val"], "no validation split")
    assert_one_line_error(["evaluate", run, "--split", "dev"], "unknown split")
    assert_one_line_error(["evaluate", run, "--weights", "best"], "unknown --weights")
    assert_one_line_error(["evaluate", run, str(incompatible_copy(tiny_runs["sln-0"], tmp_path))],
                          "incompatible runs: sln-0 uses digits but other-dataset uses cifar10")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text((tiny_runs["sln-0"] / "config.yaml").read_text())
    (tmp_path / "broken" / "final.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(["evaluate", str(tmp_path / "broken")], "not a readable sln checkpoint")
    shutil.copy(tiny_runs["sln-0"] / "final.pt", tmp_path / "broken" / "final.pt")
    assert_one_line_error(["evaluate", str(tmp_path / "broken")], "has no labels.csv")


def test_train_split_without_true_labels_is_an_error(tiny_runs, monkeypatch) -> None:
    import sln_cli.training.checkpoints as checkpoints

    real = checkpoints.build_trainset

    def without_truth(data, noise):  # as for Clothing1M, whose labels are themselves noisy
        return dataclasses.replace(real(data, noise), clean=None)

    monkeypatch.setattr(checkpoints, "build_trainset", without_truth)
    assert_one_line_error(["evaluate", str(tiny_runs["sln-0"]), "--split", "train"], "no true labels")


def test_val_split_of_a_dataset_that_has_one(tiny_runs, monkeypatch, tmp_path) -> None:
    import sln_cli.training.checkpoints as checkpoints

    real = checkpoints.build_trainset

    def with_validation(data, noise):  # digits has no validation split: lend it the test split as one
        trainset = real(data, noise)
        return dataclasses.replace(trainset, dataset=dataclasses.replace(trainset.dataset, val=trainset.dataset.test))

    monkeypatch.setattr(checkpoints, "build_trainset", with_validation)
    test = evaluate_json(str(tiny_runs["sln-0"]), "--out", str(tmp_path))
    val = evaluate_json(str(tiny_runs["sln-0"]), "--split", "val", "--out", str(tmp_path))
    assert [row["split"] for row in val] == ["val", "val"]
    assert [row["accuracy"] for row in val] == [row["accuracy"] for row in test]


def test_top5_from_20_classes_on_synthetic_cifar100(tmp_path) -> None:
    from tests.synthetic import write_cifar100

    write_cifar100(tmp_path / "DATA", n_train=300, n_test=50, seed=1)
    result = runner.invoke(app, ["train", "--preset", "quickstart", "--set", "data.dataset=cifar100", "--data-dir",
                                 str(tmp_path / "DATA"), "--set", "model.name=mlp", "--epochs", "1", "--quiet",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    rows = evaluate_json(str(tmp_path / "run"), "--save-predictions", str(tmp_path / "p.npz"))
    for row in rows:
        probs = np.load(tmp_path / f"p-run-{row['weights']}.npz")["probs"]
        labels = np.load(tmp_path / f"p-run-{row['weights']}.npz")["labels"]
        top5 = np.argsort(-probs, axis=1, kind="stable")[:, :5]
        assert row["num_classes"] == 100 and probs.shape == (50, 100)
        assert row["top5"] == pytest.approx(np.mean((top5 == labels[:, None]).any(axis=1)))


def test_a_run_made_with_a_relative_data_dir_evaluates_from_elsewhere(tmp_path, monkeypatch) -> None:
    from tests.synthetic import write_cifar10

    write_cifar10(tmp_path / "DATA", n_train=50, n_test=20, seed=0)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--preset", "cifar10-sym", "--data-dir", "DATA", "--epochs", "1",
                                 "--set", "model.name=mlp", "--quiet", "--out", "run"])
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--json", "--weights", "raw"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["num_samples"] == 20


def test_a_batch_size_below_one_is_a_user_error(tiny_runs) -> None:
    result = runner.invoke(app, ["evaluate", str(next(iter(tiny_runs.values()))), "--batch-size", "0"])
    assert result.exit_code == 1 and result.stderr.startswith("error: --batch-size must be at least 1")
