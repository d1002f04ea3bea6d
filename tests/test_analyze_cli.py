"""`sln analyze confidence` and `sln analyze landscape` on tiny trained runs: the JSON contracts checked against
direct computations from `sln evaluate --save-predictions`, seeded directions, the resumable grid, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from tests.test_evaluate import assert_one_line_error, incompatible_copy

runner = CliRunner()
# Every training sample (200 < 2000), few points and few estimator iterations: seconds on a CPU.
CHEAP = ["--points", "5", "--samples", "2000", "--top-k", "2", "--lanczos-iterations", "8", "--hutchinson-samples",
         "3", "--sharpness-samples", "2", "--ascent-steps", "1"]


def invoke_json(*args: str):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def train_predictions(run: Path, tmp_path: Path, weights: str = "raw") -> dict[str, np.ndarray]:
    """Raw-weight probabilities on the run's training set, with true and noisy labels, via `sln evaluate`."""
    path = tmp_path / f"train-{weights}.npz"
    invoke_json("evaluate", str(run), "--split", "train", "--weights", weights, "--save-predictions", str(path),
                "--out", str(tmp_path))
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in ("probs", "labels", "noisy_labels")}


def pairwise_auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(tie), counted over all pairs."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + ties / 2)


def test_confidence_matches_direct_computation(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-0"]
    result = invoke_json("analyze", "confidence", str(run), "--out", str(tmp_path))
    saved = train_predictions(run, tmp_path)
    probs = saved["probs"].astype(np.float64)
    mislabelled = saved["labels"] != saved["noisy_labels"]
    loss = -np.log(np.maximum(probs[np.arange(len(probs)), saved["noisy_labels"]], 1e-12))
    assert result["auroc_loss"] == pytest.approx(pairwise_auroc(loss[mislabelled], loss[~mislabelled]), abs=1e-12)
    entropy = -(probs * np.log(probs)).sum(axis=1)
    assert result["num_mislabelled"] == mislabelled.sum() and result["num_samples"] == len(mislabelled)
    for group, mask in (("clean", ~mislabelled), ("mislabelled", mislabelled)):
        assert result[group]["max_probability"]["mean"] == pytest.approx(probs[mask].max(axis=1).mean(), abs=1e-9)
        assert result[group]["entropy"]["mean"] == pytest.approx(entropy[mask].mean(), abs=1e-6)
    flagged = np.argsort(-loss, kind="stable")[: mislabelled.sum()]  # r·N highest losses, r the realised rate
    assert result["detection"]["precision"] == pytest.approx(mislabelled[flagged].mean())
    for name in ("histograms", "memorisation"):
        assert Path(result["plots"][name]).read_bytes().startswith(b"\x89PNG")


def test_memorisation_curve_from_epoch_checkpoints(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-0"]
    curve = invoke_json("analyze", "confidence", str(run), "--out", str(tmp_path))["memorisation"]
    assert curve["source"] == "checkpoints" and curve["epochs"] == [1, 2]
    for weights in ("raw", "ema"):
        (final,) = invoke_json("evaluate", str(run), "--split", "train", "--weights", weights, "--out", str(tmp_path))
        # epoch 2 is the last epoch, so its checkpoint holds the final weights
        assert curve[weights]["noisy_label"][-1] == pytest.approx(final["memorized"])
        assert curve[weights]["true_label"][-1] == pytest.approx(final["mislabelled"]["accuracy"])


def test_memorisation_curve_falls_back_to_the_training_log(tiny_runs, tmp_path) -> None:
    run = tiny_runs["ce-0"]  # trained without run.keep_checkpoints
    curve = invoke_json("analyze", "confidence", str(run), "--weights", "ema", "--out", str(tmp_path))["memorisation"]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert curve["source"] == "metrics.jsonl" and curve["epochs"] == [1, 2]
    assert curve["raw"]["noisy_label"] == [row["memorized"] for row in logged]


def test_landscape_contract_and_the_curve_at_zero_is_the_plain_loss(tiny_runs, tmp_path) -> None:
    run = tiny_runs["sln-0"]
    (result,) = invoke_json("analyze", "landscape", str(run), *CHEAP, "--out", str(tmp_path))  # a list of one
    for key in ("hessian_eigenvalues", "hessian_trace", "hessian_trace_stderr", "sharpness_avg", "sharpness_worst",
                "rho", "curve"):
        assert key in result, key
    assert result["samples"] == 200 and result["rho"] == 0.05 and len(result["curve"]) == 5
    eigenvalues = result["hessian_eigenvalues"]
    assert len(eigenvalues) == 2 and eigenvalues[0] >= eigenvalues[1]
    assert result["hessian_trace_stderr"] >= 0 and result["sharpness_worst"] >= 0
    saved = train_predictions(run, tmp_path)
    probs = saved["probs"].astype(np.float64)
    plain = -np.log(probs[np.arange(len(probs)), saved["noisy_labels"]]).mean()  # the loss trained on
    (middle,) = [point for point in result["curve"] if point["alpha"] == 0]
    assert middle["loss"] == result["loss"] == pytest.approx(plain, rel=1e-5)
    assert Path(result["plots"]["curves"]).read_bytes().startswith(b"\x89PNG")


def test_same_seed_same_directions(tiny_runs, tmp_path) -> None:
    run = str(tiny_runs["sln-1"])
    cheap = ["--points", "3", "--samples", "50", "--top-k", "1", "--lanczos-iterations", "3",
             "--hutchinson-samples", "2", "--sharpness-samples", "2", "--ascent-steps", "1", "--out", str(tmp_path)]
    (first,) = invoke_json("analyze", "landscape", run, *cheap, "--seed", "3")
    (again,) = invoke_json("analyze", "landscape", run, *cheap, "--seed", "3")
    (other,) = invoke_json("analyze", "landscape", run, *cheap, "--seed", "4")
    assert first["curve"] == again["curve"] and first["hessian_trace"] == again["hessian_trace"]
    assert first["curve"][0]["loss"] != other["curve"][0]["loss"]


def test_several_runs_share_plots_and_interpolation_ends_at_the_other_checkpoint(tiny_runs, tmp_path) -> None:
    a, b = tiny_runs["sln-0"], tiny_runs["sln-1"]
    results = invoke_json("analyze", "landscape", str(a), str(b), *CHEAP, "--interpolate", str(b),
                          "--out", str(tmp_path))
    assert [result["name"] for result in results] == ["sln-0", "sln-1"]
    assert results[0]["plots"] == results[1]["plots"]
    line = results[0]["interpolation"]["curve"]
    assert line[0]["t"] == 0 and line[-1]["t"] == 1
    assert line[0]["loss"] == pytest.approx(results[0]["loss"], rel=1e-6)
    assert line[-1]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)  # same subset, same seed
    assert Path(results[0]["plots"]["interpolation"]).read_bytes().startswith(b"\x89PNG")


def test_interrupted_grid_resumes_only_with_the_same_settings(tiny_runs, tmp_path) -> None:
    run = str(tiny_runs["sln-0"])
    cheap = ["--grid", "--points", "3", "--samples", "40", "--top-k", "1", "--lanczos-iterations", "3",
             "--hutchinson-samples", "2", "--sharpness-samples", "2", "--ascent-steps", "1", "--out", str(tmp_path)]
    (full,) = invoke_json("analyze", "landscape", run, *cheap)
    saved = tmp_path / "landscape-grid-sln-0-raw.npy"
    grid = np.array(full["grid"]["losses"])
    assert np.array_equal(np.load(saved), grid) and full["grid"]["losses"][1][1] == full["loss"]
    interrupted = grid.copy()
    interrupted[2, :] = np.nan  # the last row never ran
    interrupted[0, 0] = 123.0  # a marker: a resumed grid keeps what it finds
    np.save(saved, interrupted)
    resumed = np.array(invoke_json("analyze", "landscape", run, *cheap)[0]["grid"]["losses"])
    assert resumed[0, 0] == 123.0 and np.allclose(resumed[2], grid[2], rtol=1e-6)
    np.save(saved, interrupted)
    other_seed = np.array(invoke_json("analyze", "landscape", run, *cheap, "--seed", "1")[0]["grid"]["losses"])
    assert other_seed[0, 0] != 123.0 and not np.isnan(other_seed).any()
    assert Path(full["plots"]["surfaces"]).read_bytes().startswith(b"\x89PNG")


def test_progress_bar_is_on_stderr_and_not_with_json(tiny_runs, tmp_path) -> None:
    cheap = ["--grid", "--points", "2", "--samples", "20", "--top-k", "1", "--lanczos-iterations", "2",
             "--hutchinson-samples", "2", "--sharpness-samples", "2", "--ascent-steps", "1", "--out", str(tmp_path)]
    shown = runner.invoke(app, ["analyze", "landscape", str(tiny_runs["ce-0"]), *cheap])
    assert shown.exit_code == 0, shown.output
    assert "2D grid ce-0" in shown.stderr and "sln analyze landscape" in shown.stdout
    quiet = runner.invoke(app, ["analyze", "landscape", str(tiny_runs["ce-0"]), *cheap, "--seed", "5", "--json"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and json.loads(quiet.stdout)[0]["seed"] == 5


def test_analyze_errors_are_one_line_with_exit_code_1(tiny_runs, tmp_path) -> None:
    run, root = str(tiny_runs["sln-0"]), tiny_runs["sln-0"].parent
    assert_one_line_error(["analyze", "confidence", str(root / "sln-*")], "takes one run or checkpoint")
    assert_one_line_error(["analyze", "confidence", run, "--weights", "both"], "Invalid value for '--weights'")
    assert_one_line_error(["analyze", "confidence", str(tmp_path / "missing")], "neither a run directory nor")
    assert_one_line_error(["analyze", "landscape", run, "--checkpoint", "best"], "no best.pt")
    assert_one_line_error(["analyze", "landscape", run, "--points", "1", "--rho", "0"],
                          "--points must be at least 2; --rho must be positive")
    assert_one_line_error(["analyze", "landscape", run, "--labels", "clean"], "Invalid value for '--labels'")
    assert_one_line_error(["analyze", "landscape", run, str(incompatible_copy(tiny_runs["sln-0"], tmp_path))],
                          "incompatible runs")
