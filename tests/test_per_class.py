"""`sln evaluate --per-class`: per-class accuracy and the confusion matrix agree with the saved predictions, the
PNG is written, and the table shows every class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.evaluate import per_class_report

runner = CliRunner()


def test_per_class_report_on_a_hand_made_example() -> None:
    report = per_class_report(np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 1]), ["a", "b", "c", "d"])
    assert report["confusion_matrix"] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert report["accuracy"] == [1.0, 0.5, 0.5, None] and report["count"] == [1, 2, 2, 0]


def test_per_class_matches_the_saved_predictions(tiny_runs, tmp_path: Path) -> None:
    run = tiny_runs["sln-0"]
    saved = tmp_path / "p.npz"
    result = runner.invoke(app, ["evaluate", str(run), "--weights", "ema", "--per-class", "--out", str(tmp_path / "o"),
                                 "--save-predictions", str(saved), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    with np.load(saved) as predictions:
        predicted, labels = predictions["probs"].argmax(axis=1), predictions["labels"]
    matrix = np.asarray(row["per_class"]["confusion_matrix"])
    for true in range(matrix.shape[0]):
        for guess in range(matrix.shape[1]):
            assert matrix[true, guess] == np.sum((labels == true) & (predicted == guess))
    assert np.trace(matrix) / matrix.sum() == row["accuracy"]
    for k, accuracy in enumerate(row["per_class"]["accuracy"]):
        assert accuracy == (None if not (labels == k).any() else np.mean(predicted[labels == k] == k))
    assert Path(row["confusion_matrix_png"]).stat().st_size > 1000
    table = runner.invoke(app, ["evaluate", str(run), "--per-class", "--out", str(tmp_path / "o")],
                          env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "per-class accuracy" in table.stdout, table.output
    for name in row["per_class"]["classes"]:
        assert any(line.split()[:1] == [name] for line in table.stdout.splitlines()), name
