"""`sln analyze issues`: the ranking numerics, the CSV / JSON contract checked against probabilities computed
independently by `sln evaluate --save-predictions`, checkpoint averaging, the LC weight, file-backed datasets,
cleanlab side by side (and its absence), and the one-line errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sln_cli.analyze import ranking
from sln_cli.cli import app
from tests.conftest import TINY_RUN as TINY
from tests.conftest import require_extra
from tests.test_evaluate import assert_one_line_error
from tests.test_json import _check_spelling  # one spelling per idea across commands

runner = CliRunner()  # tiny_runs: conftest's session fixture, trained once
ISSUES = {"run", "name", "checkpoint", "epoch", "weights", "score", "score_meaning", "inputs", "averaged_epochs",
          "suggested_label", "num_samples", "num_classes", "classes", "threshold", "num_flagged", "flagged_by",
          "lc_weight", "truth_known", "title", "num_mislabelled", "realized_noise_rate", "detection", "files", "top"}
DETECTION = {"auroc", "noise_rate", "flagged_at_rate", "precision_at_rate", "recall_at_rate", "k", "precision_at_k",
             "flagged"}


def issues_json(*args: str) -> dict:
    result = runner.invoke(app, ["analyze", "issues", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def saved_probs(run: Path, tmp_path: Path, weights: str, checkpoint: str = "final") -> dict[str, np.ndarray]:
    path = tmp_path / f"p-{weights}-{checkpoint}.npz"
    result = runner.invoke(app, ["evaluate", str(run), "--split", "train", "--weights", weights, "--checkpoint",
                                 checkpoint, "--save-predictions", str(path), "--out", str(tmp_path / "diagrams"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in ("probs", "labels", "noisy_labels", "indices")}


# ------------------------------------------------------------------------------------------------- numerics


def test_scores_ranks_thresholds_and_overlap_on_a_hand_made_example() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4]])
    given = np.array([0, 0, 1, 1])
    loss = ranking.given_label_scores(probs, given, "loss")
    assert loss == pytest.approx(-np.log([0.9, 0.2, 0.5, 0.4]))
    probability = ranking.given_label_scores(probs, given, "probability")
    assert probability == pytest.approx([0.9, 0.2, 0.5, 0.4])
    assert ranking.rank_order(loss, "loss").tolist() == [1, 3, 2, 0]
    assert ranking.rank_order(probability, "probability").tolist() == [1, 3, 2, 0]  # the same order
    tied = np.array([1.0, 2.0, 2.0, 0.5])
    assert ranking.rank_order(tied, "loss").tolist() == [1, 2, 0, 3]  # ties in sample order
    assert ranking.flagged_by_threshold(loss, "loss", -np.log(0.45)).tolist() == [False, True, False, True]
    assert ranking.flagged_by_threshold(probability, "probability", 0.45).tolist() == [False, True, False, True]
    ours, theirs = np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool)
    assert ranking.overlap(ours, theirs) == {"both": 1, "only_ours": 1, "only_theirs": 1, "jaccard": 1 / 3}


def test_ranking_report_against_the_truth() -> None:
    mislabelled = np.array([True, False, True, False, False])
    scores = np.array([3.0, 2.5, 0.1, 0.2, 0.0])  # losses: sample 0 is first, sample 2 is nearly last
    report = ranking.ranking_report(scores, "loss", mislabelled, noise_rate=None, top=1)
    assert report["flagged_at_rate"] == 2 and report["precision_at_rate"] == 0.5 and report["recall_at_rate"] == 0.5
    assert report["precision_at_k"] == 1.0 and report["k"] == 1
    assert report["auroc"] == pytest.approx(4 / 6)  # pairs (mislabelled > clean): 3 of 3 for sample 0, 1 of 3 for 2


def test_a_good_score_separates_mislabelled_samples_statistically() -> None:
    """Seeded: a network that predicts the true class with p ~ U(0.5, 1) gives the given (wrong) label of mislabelled
    samples a low probability; both scores rank them first (AUROC > 0.95, precision at r·N > 0.9)."""
    rng = np.random.default_rng(0)
    n, k = 2000, 10
    true = rng.integers(0, k, n)
    mislabelled = rng.random(n) < 0.3
    given = np.where(mislabelled, (true + rng.integers(1, k, n)) % k, true)
    probs = np.full((n, k), 0.0)
    confident = rng.uniform(0.5, 1.0, n)
    probs[:] = ((1 - confident) / (k - 1))[:, None]
    probs[np.arange(n), true] = confident
    for score in ranking.SCORES:
        scores = ranking.given_label_scores(probs, given, score)
        report = ranking.ranking_report(scores, score, mislabelled, noise_rate=None, top=100)
        assert report["auroc"] > 0.95 and report["precision_at_rate"] > 0.9 and report["precision_at_k"] == 1.0


# ------------------------------------------------------------------------------------------------- the command


def test_csv_and_json_match_the_ema_probabilities(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-0"]
    out = tmp_path / "issues"
    result = issues_json(str(run), "--out", str(out), "--top", "7")
    saved = saved_probs(run, tmp_path, "ema")
    probs, given = saved["probs"].astype(np.float64), saved["noisy_labels"]
    loss = -np.log(np.maximum(probs[np.arange(len(given)), given], 1e-12))
    rows = read_csv(out / "issues.csv")
    assert len(rows) == len(given) == result["num_samples"]
    assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
    assert {"index", "given_label", "given_class", "suggested_label", "suggested_class", "score", "rank",
            "true_label", "mislabelled", "flagged"} <= set(rows[0])
    position = {int(index): i for i, index in enumerate(saved["indices"])}
    for row in rows:
        i = position[int(row["index"])]
        assert float(row["score"]) == pytest.approx(loss[i], rel=1e-4, abs=1e-5)
        assert int(row["given_label"]) == given[i] and int(row["suggested_label"]) == probs[i].argmax()
        assert row["given_class"] == str(given[i])  # digits: class names are the digits
    assert np.all(np.diff([float(row["score"]) for row in rows]) <= 1e-6)  # most suspect first
    mislabelled = saved["labels"] != given
    top = np.argsort(-loss, kind="stable")[: round(mislabelled.mean() * len(loss))]
    detection = result["detection"]
    assert detection["precision_at_rate"] == pytest.approx(mislabelled[top].mean(), abs=1e-9)
    assert result["realized_noise_rate"] == pytest.approx(mislabelled.mean())
    assert result["num_flagged"] == int((probs.argmax(axis=1) != given).sum())
    assert len(result["top"]) == 7 and result["top"][0]["rank"] == 1
    assert set(result) == ISSUES and set(detection) == DETECTION
    _check_spelling(result)
    with Image.open(out / "contact-sheet.png") as image:
        assert image.format == "PNG" and image.width > 300


def test_probability_score_threshold_and_raw_weights(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-0"]
    result = issues_json(str(run), "--out", str(tmp_path / "o"), "--weights", "raw", "--score", "probability",
                         "--threshold", "0.3", "--top", "3")
    saved = saved_probs(run, tmp_path, "raw")
    p_given = saved["probs"][np.arange(len(saved["probs"])), saved["noisy_labels"]]
    assert result["num_flagged"] == int((p_given <= 0.3).sum())
    rows = read_csv(tmp_path / "o" / "issues.csv")
    assert float(rows[0]["score"]) == pytest.approx(p_given.min(), abs=1e-6)
    assert sum(int(row["flagged"]) for row in rows) == result["num_flagged"]


def test_averaging_over_kept_checkpoints(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-0"]  # kept epochs 1 and 2
    result = issues_json(str(run), "--average-checkpoints", "--out", str(tmp_path / "o"))
    assert result["averaged_epochs"] == [1, 2]
    mean = (saved_probs(run, tmp_path, "ema", "epoch-1")["probs"].astype(np.float64)
            + saved_probs(run, tmp_path, "ema", "epoch-2")["probs"]) / 2
    given = saved_probs(run, tmp_path, "ema")["noisy_labels"]
    expected = np.sort(-np.log(mean[np.arange(len(given)), given]))[::-1]
    got = [float(row["score"]) for row in read_csv(tmp_path / "o" / "issues.csv")]
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_the_lc_weight_comes_from_the_ema_and_the_saved_targets(tmp_path) -> None:
    run = tmp_path / "lc"
    trained = runner.invoke(app, ["train", *TINY, "--set", "sln.correction=1", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    issues_json(str(run), "--out", str(tmp_path / "o"), "--weights", "raw")  # the LC weight is the EMA's anyway
    ema = saved_probs(run, tmp_path, "ema")
    targets = torch.load(run / "checkpoint.pt", weights_only=True)["targets"].double().numpy()
    loss = -(targets * np.log(np.maximum(ema["probs"].astype(np.float64), 1e-12))).sum(axis=1)
    weight = (loss - loss.min()) / (loss.max() - loss.min())
    position = {int(index): i for i, index in enumerate(ema["indices"])}
    rows = read_csv(tmp_path / "o" / "issues.csv")
    got = np.array([float(row["lc_weight"]) for row in rows])
    assert got == pytest.approx(weight[[position[int(row["index"])] for row in rows]], abs=2e-5)


def test_a_file_backed_dataset_without_truth_gets_paths_and_no_detection(tmp_path) -> None:
    from tests.synthetic import write_imagefolder

    root = write_imagefolder(tmp_path / "images", n_train=6, n_test=2, size=(14, 12))
    run = tmp_path / "r"
    trained = runner.invoke(app, [
        "train", "--set", "data.dataset=imagefolder", "--data-dir", str(root), "--set", "model.name=mlp",
        "--set", "data.resize=12", "--set", "data.crop=8", "--set", "data.workers=0", "--set", "data.padding=0",
        "--set", "noise.mode=none", "--set", "optim.batch_size=6", "--epochs", "1", "--device", "cpu", "--quiet",
        "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    result = issues_json(str(run), "--top", "18")
    assert result["truth_known"] is False and "detection" not in result
    rows = read_csv(result["files"]["csv"])
    assert all(Path(row["path"]).is_file() and row["given_class"] in ("cat", "dog", "emu") for row in rows)
    assert "true_label" not in rows[0] and "mislabelled" not in rows[0]
    assert Path(result["files"]["contact_sheet"]).is_file()
    assert_one_line_error(["analyze", "issues", str(run), "--noise-rate", "0.2", "--top", "2", "--out",
                           str(tmp_path / "o")], "need true labels")
    plain = runner.invoke(app, ["analyze", "issues", str(run), "--top", "2", "--overwrite"])
    assert plain.exit_code == 0 and "img_" in plain.stdout, plain.output  # the table shows file names


# ------------------------------------------------------------------------------------------------- cleanlab


def test_cleanlab_side_by_side_on_the_same_probabilities(tiny_runs, tmp_path) -> None:
    require_extra("cleanlab", "cleanlab")
    from cleanlab.filter import find_label_issues

    run = tiny_runs["sln-0"]
    result = issues_json(str(run), "--compare", "cleanlab", "--out", str(tmp_path / "o"))
    saved = saved_probs(run, tmp_path, "ema")
    probs = saved["probs"].astype(np.float64)
    theirs = find_label_issues(saved["noisy_labels"], probs / probs.sum(axis=1, keepdims=True), n_jobs=1)
    cleanlab = result["cleanlab"]
    assert cleanlab["count"] == int(theirs.sum())
    mislabelled = saved["labels"] != saved["noisy_labels"]
    if theirs.any():
        assert cleanlab["precision"] == pytest.approx(mislabelled[theirs].mean())
    assert cleanlab["recall"] == pytest.approx(mislabelled[theirs].sum() / mislabelled.sum())
    assert cleanlab["ours_at_same_count"]["count"] == cleanlab["count"]
    flags = {int(row["index"]): int(row["cleanlab_issue"]) for row in read_csv(tmp_path / "o" / "issues.csv")}
    assert [flags[int(i)] for i in saved["indices"]] == theirs.astype(int).tolist()


def test_missing_cleanlab_is_a_one_line_error(tiny_runs, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # `import cleanlab...` now raises ImportError
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    out = tmp_path / "o"
    assert_one_line_error(["analyze", "issues", str(tiny_runs["sln-0"]), "--compare", "cleanlab", "--out", str(out)],
                          "pip install 'sln-cli[cleanlab]'")
    assert not out.exists()  # nothing half-written


# ------------------------------------------------------------------------------------------------- errors


def test_errors_are_one_line(tiny_runs, tmp_path) -> None:
    sln, ce = str(tiny_runs["sln-0"]), str(tiny_runs["ce-0"])
    out = ["--out", str(tmp_path / "o")]
    assert_one_line_error(["analyze", "issues", ce, "--average-checkpoints", *out], "kept no epoch checkpoints")
    assert_one_line_error(["analyze", "issues", sln, "--top", "201", *out], "larger than the training set (200")
    assert_one_line_error(["analyze", "issues", sln, "--top", "0", *out], "--top must be at least 1")
    assert_one_line_error(["analyze", "issues", sln, "--score", "margin", *out], "Invalid value for '--score'")
    assert_one_line_error(["analyze", "issues", sln, "--compare", "other", *out], "Invalid value for '--compare'")
    assert_one_line_error(["analyze", "issues", sln, "--score", "probability", "--threshold", "2", *out],
                          "a probability in [0, 1]")
    assert not (tmp_path / "o").exists()
    issues_json(sln, "--top", "2", *out)
    issues_json(sln, "--top", "2", *out)  # the folder sln made is refreshed (tests/test_relabel.py: a user's one)
