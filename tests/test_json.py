"""The `--json` of each command: its keys (the schema: the command's result type, which keeps every key pinned
here), one spelling per idea across commands (`realized_noise_rate`, `mislabelled`), and the one emitter's strict
JSON (NaN and infinities as null, the same shape for one input as for several)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sln_cli.analyze.workflow import ConfidenceResult, LandscapeResult
from sln_cli.cli import app
from sln_cli.evaluate import METRICS, EvaluationRow, SeedAggregate
from sln_cli.labels.corrupt import CorruptSummary
from sln_cli.render.json import emit, text

runner = CliRunner()
BANNED = {"realised_noise_rate", "num_noisy", "fitted_noisy_label"}  # old spellings of ideas named otherwise


def _strict(text: str) -> Any:
    """JSON as a reader other than Python's takes it: NaN, Infinity and -Infinity are refused."""
    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _json(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return _strict(result.stdout)


def _keys_of(typed: Any, value: dict) -> None:
    """`value` has every required key of the TypedDict `typed`, and no key the type does not declare."""
    assert set(typed.__required_keys__) <= set(value) <= set(typed.__annotations__), \
        (set(typed.__required_keys__) - set(value), set(value) - set(typed.__annotations__))


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
    _keys_of(CorruptSummary, made)
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
        _keys_of(EvaluationRow, row)
        assert set(row["clean"]) == set(row["mislabelled"]) == {"num_samples", "accuracy"}
    _check_spelling(rows)


CONFIDENCE = {"run", "name", "checkpoint", "epoch", "weights", "split", "num_samples", "num_mislabelled",
              "realized_noise_rate", "auroc_loss", "detection", "clean", "mislabelled", "memorisation", "plots"}
SCORES = {"max_probability", "entropy", "margin", "loss"}


def test_analyze_confidence_json_schema(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    result = _json("analyze", "confidence", str(tiny_runs["sln-0"]), "--out", str(tmp_path))
    assert set(result) == CONFIDENCE, set(result) ^ CONFIDENCE
    _keys_of(ConfidenceResult, result)
    assert set(result["detection"]) == {"flagged", "precision", "recall", "score", "noise_rate"}
    for group in ("clean", "mislabelled"):
        assert set(result[group]) == SCORES
        assert {"mean", "median"} <= set(result[group]["loss"]) and "count" not in result[group]["loss"]
    _check_spelling(result)


LANDSCAPE = {"run", "name", "checkpoint", "epoch", "weights", "labels", "samples", "seed", "loss",
             "hessian_eigenvalues", "hessian", "hessian_trace", "hessian_trace_stderr", "hutchinson_samples", "rho",
             "sharpness_avg", "sharpness_avg_stderr", "sharpness_worst", "sharpness", "directions", "span", "points",
             "curve", "plots"}  # and, when asked, "grid" (--grid) and "interpolation" (--interpolate)


def test_analyze_landscape_json_is_a_list_even_for_one_run(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    cheap = ["--points", "3", "--samples", "40", "--top-k", "1", "--lanczos-iterations", "3", "--hutchinson-samples",
             "2", "--sharpness-samples", "2", "--ascent-steps", "1", "--out", str(tmp_path)]
    one = _json("analyze", "landscape", str(tiny_runs["ce-0"]), *cheap)
    assert isinstance(one, list) and len(one) == 1  # one run, one weights: still a list
    assert set(one[0]) == LANDSCAPE, set(one[0]) ^ LANDSCAPE
    _keys_of(LandscapeResult, one[0])


@pytest.mark.parametrize(("typed", "pinned"), [(CorruptSummary, CORRUPT), (ConfidenceResult, CONFIDENCE),
                                               (LandscapeResult, LANDSCAPE), (EvaluationRow, EVALUATE)])
def test_each_result_type_keeps_every_pinned_key(typed: Any, pinned: set[str]) -> None:
    """A key that exists is a contract: the type may gain keys, never lose one the JSON promised."""
    assert pinned <= set(typed.__annotations__), pinned - set(typed.__annotations__)


def test_seed_aggregates_match_their_type(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    rows = _json("evaluate", str(tiny_runs["sln-0"]), str(tiny_runs["sln-1"]), "--out", str(tmp_path))
    aggregates = [row for row in rows if row.get("aggregate")]
    assert aggregates and all(_keys_of(SeedAggregate, row) is None for row in aggregates)
    assert {f"{metric}{suffix}" for metric in METRICS for suffix in ("", "_std")} <= set(SeedAggregate.__annotations__)
    for row in rows:
        if not row.get("aggregate"):
            _keys_of(EvaluationRow, row)


def test_presets_json_schema() -> None:
    described = _json("presets")
    assert "quickstart" in described and all(isinstance(text, str) for text in described.values())


@pytest.mark.parametrize("command", [["corrupt"], ["presets"], ["evaluate"], ["analyze", "confidence"],
                                     ["analyze", "landscape"], ["bench"], ["cache"]])
def test_every_json_flag_is_the_one_shared_declaration(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0
    assert "Print JSON instead of tables (its keys: docs/reference/json.md)." in result.stdout


def test_the_emitter_prints_strict_json_with_non_finite_numbers_as_null(capsys: pytest.CaptureFixture) -> None:
    @dataclasses.dataclass  # inside the test: scripts/gen_docs.py loads this module for its constants only
    class _Result:
        loss: float
        values: Any
        where: Path

    result = [_Result(math.nan, np.array([1.5, np.inf, -np.inf], dtype=np.float32), Path("runs") / "a"),
              {"std": np.float64("nan"), "count": np.int64(3), "pair": (math.inf, 2), "ok": True}]
    emit(result)
    printed = capsys.readouterr().out
    assert printed == text(result) and printed.endswith("}\n]\n")
    assert _strict(printed) == [{"loss": None, "values": [1.5, None, None], "where": str(Path("runs") / "a")},
                                {"std": None, "count": 3, "pair": [None, 2], "ok": True}]


def test_a_command_json_never_holds_nan_or_numpy_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `--json` goes through the emitter: a result holding NaN, infinity and numpy arrays still prints as
    strict JSON (before the emitter, an array made the command fail and a bare NaN was an invalid token)."""
    from sln_cli.methods import catalog

    rows = [{"name": "x", "sigma": math.nan, "rates": np.array([0.5, np.inf]), "mean": np.float32("-inf")}]
    monkeypatch.setattr(catalog, "describe", lambda dataset: rows)
    assert _json("methods") == [{"name": "x", "sigma": None, "rates": [0.5, None], "mean": None}]
