"""`sln doctor`: the machine's description, every check's pass/fail/skip, and exit code 1 on a failure.

The full set of checks (ten short trainings) runs in the `sln doctor` example of docs/results.md; here two real checks,
a path the machine lacks, and a failing one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sln_cli.bench import doctor
from sln_cli.cli import app

runner = CliRunner()


def _broken(device: torch.device, out: Path) -> tuple[float, str]:
    raise RuntimeError("a kernel returned garbage\nsecond line")


@pytest.fixture
def few_checks(monkeypatch: pytest.MonkeyPatch) -> list:
    # the table is rich's: wide enough here for a check's detail on one line
    monkeypatch.setenv("COLUMNS", "200")
    checks = [("ema", doctor._ema), ("ddp-1-process", doctor._ddp), ("nvjpeg", doctor._nvjpeg)]
    monkeypatch.setattr(doctor, "CHECKS", checks)
    return checks


def test_every_check_passes_or_is_skipped_with_why(few_checks: list) -> None:
    result = runner.invoke(app, ["doctor", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["machine"]["device"] == "cpu"
    assert {"torch", "torchvision", "python", "capability", "memory_total_gib"} <= set(report["machine"])
    by_name = {check["name"]: check for check in report["checks"]}
    assert by_name["ema"]["status"] == by_name["ddp-1-process"]["status"] == "pass"
    assert by_name["ddp-1-process"]["images_per_second"] > 0
    assert by_name["nvjpeg"] == {**by_name["nvjpeg"], "status": "skip", "detail": "nvJPEG needs a CUDA device"}


def test_a_failing_check_is_reported_and_exits_1(few_checks: list) -> None:
    few_checks.append(("broken", _broken))
    result = runner.invoke(app, ["doctor", "--device", "cpu", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    broken = report["checks"][-1]
    assert broken["status"] == "fail" and broken["detail"] == "RuntimeError: a kernel returned garbage"
    assert [check["status"] for check in report["checks"][:2]] == ["pass", "pass"]  # the others still ran


def test_the_table_says_pass_skip_and_the_verdict(few_checks: list) -> None:
    result = runner.invoke(app, ["doctor", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "ddp-1-process" in result.output and "nvJPEG needs a CUDA device" in result.output
    assert "all checks passed" in result.output


def test_the_ema_check_fails_when_the_ema_does_not_average(monkeypatch: pytest.MonkeyPatch) -> None:
    from sln_cli.training.ema import WeightEMA

    monkeypatch.setattr(WeightEMA, "update", lambda self: None)  # sabotage: the momentum model stands still
    check = doctor._run("ema", doctor._ema, torch.device("cpu"), Path("unused"))
    assert check.status == "fail" and "is not 0.9 * ema + 0.1 * model" in check.detail
