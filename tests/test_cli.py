"""The app itself: instant help, `python -m sln_cli`, presets listing, and one-line errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sln_cli import presets
from sln_cli.cli import app

runner = CliRunner()


def test_help_does_not_import_torch():
    """`sln --help` must be instant: the CLI module imports no torch (nor numpy) at module level."""
    code = "import sys, sln_cli.cli; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_runs_the_same_app():
    result = subprocess.run([sys.executable, "-m", "sln_cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("corrupt", "train", "evaluate", "analyze", "presets", "bench"):
        assert command in result.stdout


def test_presets_lists_every_preset_with_its_description():
    result = runner.invoke(app, ["presets", "--json"])
    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    assert set(listed) == set(presets.available())
    assert {"quickstart", "cifar10-sym", "cifar10-sym-lc", "clothing1m-lc", "cifar10n-worst"} <= set(listed)
    assert all(listed.values())


def test_sln_debug_keeps_the_traceback(monkeypatch):
    monkeypatch.setenv("SLN_DEBUG", "1")
    result = runner.invoke(app, ["train", "--preset", "no-such-preset"])
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "SlnError"


def test_a_user_error_is_one_line_without_traceback():
    result = runner.invoke(app, ["train", "--preset", "no-such-preset"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown preset 'no-such-preset'")
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, says", [
    (["train", "--sigma", "abc"], "Invalid value for '--sigma'"),
    (["trian"], "No such command 'trian'"),
    (["train", "--epochs"], "requires an argument"),
    (["evaluate"], "Missing argument"),
])
def test_usage_errors_of_the_console_script_are_one_line_and_exit_1(argv, says):
    """Typer's own parse errors follow the same rule as sln's: one `error:` line, exit code 1, no box."""
    result = subprocess.run([sys.executable, "-m", "sln_cli", *argv], capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr


@pytest.mark.parametrize("argv, says", [
    (["bench", "--pipeline", "imagenet"], "Invalid value for '--pipeline'"),  # a choice (an Enum option)
    (["report", "runs", "--format", "html"], "Invalid value for '--format'"),
    (["sweep", "quickstart-sweep", "--retries", "-1"], "Invalid value for '--retries'"),  # a range (min=0)
    (["sweep", "quickstart-sweep", "--time-min", "0"], "Invalid value for '--time-min'"),
])
def test_a_bad_choice_or_number_is_one_line_from_the_app_itself(argv, says):
    """The root group formats Typer's usage errors, so `CliRunner` (and any caller of `app`) sees what the console
    script prints: one `error:` line naming the option and its help, exit code 1, no usage box."""
    result = runner.invoke(app, argv)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert lines[0].endswith(f" {argv[0]} --help`)"), lines[0]  # where to read the option's help
    assert "╭" not in result.output and "Usage" not in result.output


def test_bare_group_prints_its_help_and_exits_0():
    result = runner.invoke(app, ["analyze"])
    assert result.exit_code == 0 and "confidence" in result.stdout and result.stderr == ""


def test_the_choice_enums_are_the_library_lists():
    """An Enum option lists what the library it calls accepts, no more and no less."""
    from sln_cli.bench.dispatch import PIPELINES
    from sln_cli.cli.bench import Pipeline
    from sln_cli.cli.report import Format
    from sln_cli.report.render import FORMATS

    assert [choice.value for choice in Format] == list(FORMATS)
    assert [choice.value for choice in Pipeline] == list(PIPELINES)
