"""docs/ARCHITECTURE.md's recipes, followed: a dataset added in one file trains through `sln train`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.data import registry


@pytest.fixture
def stripes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    spec = registry.DatasetSpec("stripes", "toy_dataset:read_stripes", needs_files=False)
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)


def test_a_dataset_in_one_file_trains(stripes: None, tmp_path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--preset", "quickstart", "--set", "data.dataset=stripes",
                                      "--set", "optim.epochs=8", "--set", "noise.rate=0.2", "--sigma", "0",
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_acc"] > 0.9  # chance is 0.25
    assert rows[-1]["train_samples"] == 400


def test_an_unregistered_dataset_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "--preset", "quickstart", "--set", "data.dataset=stripes",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "data.dataset must be one of cifar10, cifar100, digits" in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_a_name_is_registered_once(stripes: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.DatasetSpec("stripes", "toy_dataset:read_stripes"))
