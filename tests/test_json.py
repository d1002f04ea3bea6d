"""The `--json` of each command: its keys (the schema), one spelling per idea across commands
(`realized_noise_rate`, `mislabelled`), and no number under two keys where one is derived from the other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app

runner = CliRunner()
BANNED = {"realised_noise_rate", "num_noisy", "fitted_noisy_label"}  # old spellings of ideas named otherwise


def _json(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _objects(value: Any) -> list[dict]:
    """Every JSON object at any depth."""
    if isinstance(value, dict):
        return [value, *(o for item in value.values() for o in _objects(item))]
    if isinstance(value, list):
        return [o for item in value for o in _objects(item)]
    return []


def _check_spelling(value: Any) -> None:
    for obj in _objects(value):
        assert not set(obj) & BANNED, set(obj) & BANNED
        # the group of samples whose label is wrong is `mislabelled` (`noisy` names a label, as in top_confusions)
        assert not {"clean", "noisy"} <= set(obj), obj.keys()


CORRUPT = {"mode", "num_samples", "num_classes", "requested_noise_rate", "realized_noise_rate", "num_mislabelled",
           "per_class_noise_rate", "class_counts", "transition_matrix", "top_confusions", "expected_noise_rate",
           "dataset", "seed", "file", "manifest", "classes", "note"}


def test_corrupt_json_schema(tmp_path: Path) -> None:
    out = tmp_path / "labels.csv"
    made = _json("corrupt", "--dataset", "digits", "--mode", "sym", "--rate", "0.3", "--out", str(out))
    assert set(made) == CORRUPT
    inspected = _json("corrupt", "--inspect", str(out))
    assert set(inspected) == CORRUPT
    assert inspected["num_mislabelled"] == made["num_mislabelled"] > 0
    _check_spelling([made, inspected])


EVALUATE = {"run", "name", "checkpoint", "epoch", "weights", "split", "num_samples", "num_classes", "seed", "sigma",
            "accuracy", "nll", "brier", "ece", "ece_adaptive", "mce", "ece_bins", "binning", "ece_adaptive_bins",
            "ece_adaptive_binning", "brier_convention", "nll_probability_floor", "labels",
            "accuracy_noisy", "clean", "mislabelled", "memorized", "reliability", "reliability_diagram",
            "method"}  # the method that trained the run and these weights (CE, SLN-MO, GCE-MO, ...)


def test_evaluate_json_schema(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    rows = _json("evaluate", str(tiny_runs["sln-0"]), "--split", "train", "--out", str(tmp_path))
    for row in rows:
        assert set(row) == EVALUATE, set(row) ^ EVALUATE
        assert set(row["clean"]) == set(row["mislabelled"]) == {"num_samples", "accuracy"}
    _check_spelling(rows)


CONFIDENCE = {"run", "name", "checkpoint", "epoch", "weights", "split", "num_samples", "num_mislabelled",
              "realized_noise_rate", "auroc_loss", "detection", "clean", "mislabelled", "memorisation", "plots"}
SCORES = {"max_probability", "entropy", "margin", "loss"}


def test_analyze_confidence_json_schema(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    result = _json("analyze", "confidence", str(tiny_runs["sln-0"]), "--out", str(tmp_path))
    assert set(result) == CONFIDENCE, set(result) ^ CONFIDENCE
    assert set(result["detection"]) == {"flagged", "precision", "recall", "score", "noise_rate"}
    for group in ("clean", "mislabelled"):
        assert set(result[group]) == SCORES
        assert {"mean", "median"} <= set(result[group]["loss"]) and "count" not in result[group]["loss"]
    _check_spelling(result)


def test_presets_json_schema() -> None:
    described = _json("presets")
    assert "quickstart" in described and all(isinstance(text, str) for text in described.values())


@pytest.mark.parametrize("command", [["corrupt"], ["presets"], ["evaluate"], ["analyze", "confidence"],
                                     ["analyze", "landscape"], ["bench"], ["cache"]])
def test_every_json_flag_is_the_one_shared_declaration(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0
    assert "Print JSON instead of tables (its keys: docs/reference/json.md)." in result.stdout
