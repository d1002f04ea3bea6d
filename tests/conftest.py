"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app

TINY_RUN = ["--preset", "quickstart", "--train-limit", "200", "--test-limit", "100", "--set", "model.name=mlp",
            "--set", "optim.batch_size=50", "--epochs", "2", "--quiet"]


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
