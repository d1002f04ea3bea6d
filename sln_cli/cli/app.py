"""The root `sln` app: every user mistake as one `error:` line (exit code 1), the options commands share declared
once, and the helpers every command module uses (console, JSON output). No torch here: `sln --help` is instant."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sln_cli.errors import SlnError, describe_os_error


class OneLineErrors(TyperGroup):
    """The root group: an `SlnError`, an unreadable path, and Typer's own usage errors (an unknown option or command,
    a value of the wrong type, out of range or not a choice) all end in one `error:` line on stderr and exit code 1,
    with no usage box; the same under `CliRunner` as from the console script. `SLN_DEBUG=1` keeps the traceback."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except SlnError as exc:
            report(str(exc))
            code = exc.exit_code
        except OSError as exc:  # a path the user gave cannot be read or written: say which and why
            report(describe_os_error(exc))
            code = 1
        except usage_errors() as exc:
            context = getattr(exc, "ctx", None)
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            report(message + (f" (see `{context.command_path} --help`)" if context is not None else ""))
            code = 1
        except typer.Abort:  # end of input at a prompt
            report("aborted")
            code = 1
        code = code if isinstance(code, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def usage_errors() -> tuple[type[Exception], ...]:
    """Typer's usage-error base: `typer.TyperException` (Typer >= 0.20 vendors Click), else Click's own."""
    if hasattr(typer, "TyperException"):
        return (typer.TyperException,)
    import click  # older Typer is built on Click

    return (click.ClickException,)


def report(message: str) -> None:
    """`error: message` on stderr, once under torchrun; called inside an `except` (SLN_DEBUG=1 re-raises it)."""
    if os.environ.get("SLN_DEBUG") == "1":
        raise  # re-raises the exception being handled, with its traceback
    if is_main_process():  # under torchrun every rank raises the same error: say it once
        one_line = message.replace("\r", " ").replace("\n", " ")  # whatever a path or a library put in it
        print(f"error: {one_line}", file=sys.stderr)


def is_main_process() -> bool:
    """Rank 0 under torchrun (read from its environment, so this module needs no torch import)."""
    return os.environ.get("RANK", "0") == "0"


app = typer.Typer(
    name="sln",
    help="Stochastic label noise (Chen et al., ICLR 2021): build noisy-label benchmarks, train, evaluate.\n\n"
         "Start with `sln train --preset quickstart` (CPU, about half a minute) and `sln evaluate RUN`.",
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)


def _print_version(value: bool) -> None:
    if value:
        from sln_cli import __version__

        print(f"sln {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    context: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print sln's version and exit.", metavar="",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    """Bare `sln` prints this help and exits 0 (Typer's no_args_is_help ends in an empty usage error)."""
    help_without_command(context)


def help_without_command(context: typer.Context) -> None:
    """A group called without a command prints its help and exits 0."""
    if context.invoked_subcommand is None:
        print(context.get_help())
        raise typer.Exit()


def flag(*declarations: str, help: str) -> Any:
    """An on/off option: shown in --help without a `<bool>` type column (it takes no value)."""
    return typer.Option(*declarations, help=help, metavar="")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


def emit(result: Any) -> None:
    """Every `--json` goes through the one emitter (`sln_cli/render/json.py`)."""
    from sln_cli.render.json import emit as emit_json

    emit_json(result)


def value(choice: Enum | None) -> Any:
    """An Enum option's plain value (what the library takes); None stays None."""
    return None if choice is None else choice.value


# Options several commands share: one declaration, one help text.
JsonOption = Annotated[
    bool, flag("--json", help="Print JSON instead of tables (its keys: docs/reference/json.md).")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
CheckpointOption = Annotated[
    str | None, typer.Option(help="Checkpoint of a run directory: final (default), best, best-noisy-val (the epoch of "
                                  "best noisy-validation accuracy, data.noisy_val), last or epoch-N.")
]
BatchSizeOption = Annotated[int | None, typer.Option(help="Evaluation batch size (default: the run's).")]
OverwriteOption = Annotated[bool, flag(help="Replace files of the same names in an output folder sln did not make.")]


class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"


# the Slurm options `sln sweep` and `sln tune` share (sln_cli/slurm.py)
LauncherOption = Annotated[Launcher, typer.Option(help="local (child processes here) or slurm (submitit).")]
PartitionOption = Annotated[str | None, typer.Option(help="slurm: the partition.")]
TimeMinOption = Annotated[int, typer.Option(help="slurm: time limit of a job, in minutes.", min=1)]
GpusPerJobOption = Annotated[int, typer.Option(help="slurm: GPUs per job (0: CPU jobs).")]
RunsPerJobOption = Annotated[int, typer.Option(help="slurm: runs (tune: trials) per job at once, sharing its GPUs.")]


def slurm_options(partition: str | None, time_min: int, gpus_per_job: int, runs_per_job: int) -> Any:
    from sln_cli.slurm import SlurmOptions

    return SlurmOptions(partition=partition, time_minutes=time_min, gpus_per_job=gpus_per_job,
                        runs_per_job=runs_per_job)


def path_text(path: Path | None) -> str | None:
    return None if path is None else str(path)
