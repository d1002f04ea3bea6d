"""Fixtures shared by several test modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app


def tiny(*, train_limit: int = 200, test_limit: int = 100, model: str = "mlp", batch_size: int = 50) -> list[str]:
    """`sln train` arguments for a run of seconds on the CPU: the quick start (digits) cut to a few hundred images."""
    return ["--preset", "quickstart", "--train-limit", str(train_limit), "--test-limit", str(test_limit),
            "--set", f"model.name={model}", "--set", f"optim.batch_size={batch_size}", "--quiet"]


TINY = tiny()  # the tiny run most tests train (add what a test needs after it)
TINY_RUN = [*TINY, "--epochs", "2"]


def untimed_metrics(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl rows less what the clock decides (every `*_seconds` key and `images_per_second`):
    what two runs of the same config must agree on exactly."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if not (key.endswith("_seconds") or key == "images_per_second")}
            for row in rows]


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sln-0 and sln-1 differ only in their seed (and keep every epoch's weights); ce-0 has sigma 0, no checkpoints."""
    root = tmp_path_factory.mktemp("runs")
    specs = {"sln-0": ["--seed", "0", "--set", "run.keep_checkpoints=1"],
             "sln-1": ["--seed", "1", "--set", "run.keep_checkpoints=1"],
             "ce-0": ["--seed", "0", "--sigma", "0"]}
    for name, args in specs.items():
        result = CliRunner().invoke(app, ["train", *TINY_RUN, *args, "--out", str(root / name)])
        assert result.exit_code == 0, result.output
    return {name: root / name for name in specs}


def require_extra(module: str, extra: str) -> object:
    """Skip the calling test, naming the install, when the optional extra that provides `module` is absent."""
    return pytest.importorskip(module, reason=f"optional extra absent: pip install 'sln-cli[{extra}]'")
