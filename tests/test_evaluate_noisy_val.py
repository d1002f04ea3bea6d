"""`sln evaluate RUN --split noisy-val`: the samples the run held out (noisy_val.csv), scored on their noisy labels
and, when known, their true ones; it repeats what training measured there; a run without the split is refused."""

import json

import numpy as np
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.labels import noisy_val
from tests.conftest import tiny

runner = CliRunner()
TINY = [*tiny(train_limit=300), "--set", "run.cpu_threads=1"]


def _evaluate(run, *args):
    result = runner.invoke(app, ["evaluate", str(run), "--split", "noisy-val", "--json", *args])
    assert result.exit_code == 0, result.output
    return [row for row in json.loads(result.stdout) if not row.get("aggregate")]


def test_noisy_val_split_repeats_the_accuracies_training_logged_there(tmp_path):
    run = tmp_path / "r"
    result = runner.invoke(app, ["train", *TINY, "--epochs", "2", "--noisy-val", "60", "--out", str(run)])
    assert result.exit_code == 0, result.output
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    rows = {row["weights"]: row for row in _evaluate(run, "--out", str(tmp_path / "eval"))}
    assert set(rows) == {"raw", "ema"}
    for weights, suffix in (("raw", ""), ("ema", "_ema")):
        row = rows[weights]
        assert row["split"] == "noisy-val" and row["num_samples"] == 60 and row["epoch"] == last["epoch"]
        assert abs(row["accuracy_noisy"] - last["noisy_val_acc" + suffix]) < 1e-9, (weights, row, last)
        assert abs(row["accuracy"] - last["noisy_val_clean_acc" + suffix]) < 1e-9, (weights, row, last)
        assert row["labels"] == "true labels of the label file"
        groups = row["clean"]["num_samples"] + row["mislabelled"]["num_samples"]
        assert groups == 60 and row["mislabelled"]["num_samples"] > 0  # quickstart's noise reaches the held-out
    text = runner.invoke(app, ["evaluate", str(run), "--split", "noisy-val", "--out", str(tmp_path / "eval")])
    assert text.exit_code == 0 and "noisy-val" in text.stdout and "acc vs noisy" in text.stdout, text.output


def test_the_predictions_name_the_held_out_samples(tmp_path):
    run = tmp_path / "r"
    assert runner.invoke(app, ["train", *TINY, "--epochs", "1", "--noisy-val", "60", "--out", str(run)]).exit_code == 0
    _evaluate(run, "--weights", "raw", "--save-predictions", str(tmp_path / "p.npz"), "--out", str(tmp_path / "e"))
    saved = np.load(tmp_path / "p.npz")
    assert np.array_equal(saved["indices"], noisy_val.read(run / noisy_val.FILE))


def test_a_run_without_a_noisy_split_or_with_a_changed_one_is_one_line(tmp_path, tiny_runs):
    result = runner.invoke(app, ["evaluate", str(tiny_runs["ce-0"]), "--split", "noisy-val"])
    assert result.exit_code == 1 and "held out no noisy validation split" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    run = tmp_path / "r"
    assert runner.invoke(app, ["train", *TINY, "--epochs", "1", "--noisy-val", "60", "--out", str(run)]).exit_code == 0
    indices = noisy_val.read(run / noisy_val.FILE)
    noisy_val.write(run, np.sort(np.append(indices[1:], 299 if 299 not in indices else 298)))
    result = runner.invoke(app, ["evaluate", str(run), "--split", "noisy-val"])
    assert result.exit_code == 1 and "names other samples" in result.stderr, result.output
    (run / noisy_val.FILE).unlink()
    result = runner.invoke(app, ["evaluate", str(run), "--split", "noisy-val"])
    assert result.exit_code == 1 and "has no noisy_val.csv" in result.stderr, result.output
    assert not (run / "analysis").exists()


def test_without_true_labels_the_held_out_samples_are_scored_on_their_noisy_labels(tmp_path):
    first = tmp_path / "a"
    assert runner.invoke(app, ["train", *TINY, "--epochs", "1", "--out", str(first)]).exit_code == 0
    noisy_only = [line.split(",")[1] for line in (first / "labels.csv").read_text().splitlines()]
    (tmp_path / "noisy.csv").write_text("\n".join(noisy_only) + "\n")  # a label file without the truth
    run = tmp_path / "r"
    result = runner.invoke(app, ["train", *TINY, "--epochs", "1", "--noisy-val", "60", "--set",
                                 f"noise.labels={tmp_path / 'noisy.csv'}", "--out", str(run)])
    assert result.exit_code == 0, result.output
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    (row,) = _evaluate(run, "--weights", "raw", "--out", str(tmp_path / "e"))
    assert row["labels"] == "noisy labels (true labels unknown)" and "clean" not in row
    assert row["accuracy"] == row["accuracy_noisy"] and abs(row["accuracy"] - last["noisy_val_acc"]) < 1e-9
