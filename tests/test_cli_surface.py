"""The command line as a new user meets it: `sln --version`, bare `sln`, examples in every command's help that use
only real options, no `<bool>` type noise on flags, and error texts that suggest only options that exist."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sln_cli import __version__
from sln_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
# Flags of other programs that sln's messages name on purpose.
FOREIGN = {"--nproc_per_node",  # torchrun
           # the official code's own flags, quoted where sln names the source of a default
           "--noise_rate", "--start_prune", "--p_threshold", "--alpha"}


def commands() -> dict[str, object]:
    """Every leaf command by its path (`train`, `analyze issues`)."""
    found: dict[str, object] = {}

    def walk(command: object, path: str) -> None:
        children = getattr(command, "commands", {})
        if not children:
            found[path] = command
        for name, child in children.items():
            walk(child, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def options(command: object) -> set[str]:
    return {flag for param in command.params for flag in [*param.opts, *param.secondary_opts]  # type: ignore[attr-defined]
            if flag.startswith("--")} | {"--help"}


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"sln {__version__}"


def test_bare_sln_prints_the_help_and_exits_0_without_an_error_line() -> None:
    done = subprocess.run([sys.executable, "-m", "sln_cli"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and "train" in done.stdout
    assert "error" not in done.stderr


@pytest.mark.parametrize("path", sorted(commands()))
def test_every_command_help_has_examples_with_real_options_and_no_bool_noise(path: str) -> None:
    result = runner.invoke(app, [*path.split(), "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    examples = [line.strip()[2:] for line in result.stdout.splitlines() if line.strip().startswith("$ sln ")]
    assert examples, f"sln {path} --help has no example"
    known = options(commands()[path])
    for example in examples:
        assert example.startswith(f"sln {path}"), example
        assert set(FLAG.findall(example)) <= known, example
    noisy = [line for line in result.stdout.splitlines() if "<bool>" in line and "--help" not in line]
    assert not noisy, noisy  # Typer's own --help keeps its column; sln's flags have none


def test_every_flag_suggested_in_sln_texts_is_a_real_option() -> None:
    real = set().union(*(options(command) for command in commands().values())) | {"--version"}
    suggested: dict[str, set[str]] = {}
    for path in (ROOT / "sln_cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in FLAG.findall(node.value):
                    suggested.setdefault(flag, set()).add(path.name)
    unknown = {flag: files for flag, files in suggested.items() if flag not in real | FOREIGN}
    assert not unknown, f"texts suggest options no command has: {unknown}"


def test_tables_keep_every_column_and_whole_numbers_at_80_columns(tiny_runs) -> None:
    runs = [str(tiny_runs[name]) for name in ("sln-0", "sln-1", "ce-0")]
    result = runner.invoke(app, ["evaluate", *runs, "--split", "train"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80, text
    for header in ("run", "weights", "method", "epoch", "N", "acc", "NLL", "Brier", "ECE", "aECE", "MCE"):
        assert re.search(rf"(?<![\w-]){re.escape(header)}(?![\w-])", text), header
    rows = json.loads(runner.invoke(app, ["evaluate", *runs, "--split", "train", "--json"]).stdout)
    for row in rows:
        if not row.get("aggregate"):
            assert row["name"] in text and str(row["num_samples"]) in text
            assert f"{row['accuracy'] * 100:.1f}%" in text and f"{row['nll']:.3f}" in text


def test_landscape_takes_both_weights_and_repeats_the_single_runs(tiny_runs) -> None:
    quick = ["--samples", "40", "--points", "3", "--top-k", "1", "--lanczos-iterations", "3", "--hutchinson-samples",
             "2", "--sharpness-samples", "2", "--ascent-steps", "1", "--json"]
    run = str(tiny_runs["ce-0"])

    def landscape(weights: str) -> list[dict]:  # always a list: one entry per run and weights
        result = runner.invoke(app, ["analyze", "landscape", run, "--weights", weights, *quick])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    both = landscape("both")
    assert [row["weights"] for row in both] == ["raw", "ema"]
    for row, (single,) in zip(both, (landscape("raw"), landscape("ema")), strict=True):
        assert row["loss"] == single["loss"] and row["curve"] == single["curve"]
