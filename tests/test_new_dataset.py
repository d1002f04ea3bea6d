"""docs/ARCHITECTURE.md's recipe, followed: a dataset added in one file (tests/toy_dataset.py, named in
$SLN_DATASETS) trains through `sln train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sln_cli.data import registry

TESTS = Path(__file__).parent


def _sln(tmp_path: Path, *args: str, plugins: str = "toy_dataset") -> subprocess.CompletedProcess:
    env = {**os.environ, "SLN_DATASETS": plugins, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    return subprocess.run([sys.executable, "-m", "sln_cli", *args], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_a_dataset_in_one_file_trains(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _sln(tmp_path, "train", "--preset", "quickstart", "--set", "data.dataset=stripes", "--set",
                  "optim.epochs=8", "--set", "noise.rate=0.2", "--sigma", "0", "--quiet", "--out", str(run))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_acc"] > 0.9  # the bar's row: chance is 0.25
    assert rows[-1]["train_samples"] == 400


def test_an_unregistered_dataset_is_one_line(tmp_path: Path) -> None:
    result = _sln(tmp_path, "train", "--preset", "quickstart", "--set", "data.dataset=stripes", "--out",
                  str(tmp_path / "run"), plugins="")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "data.dataset must be one of cifar10, cifar100, digits" in result.stderr


def test_a_plugin_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    result = _sln(tmp_path, "presets", plugins="no_such_module")
    assert result.returncode == 1 and result.stderr.startswith("error: $SLN_DATASETS names module 'no_such_module'")


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.DatasetSpec("CIFAR-10", "sln_cli.data.cifar:read_cifar10"))
