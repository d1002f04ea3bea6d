"""The `sln` command line: the only module that knows Typer.

Nothing heavy is imported at module level, so `sln --help` is instant; each command imports the
library function it calls and makes one keyword call into it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sln_cli.errors import SlnError

app = typer.Typer(
    name="sln",
    help="Stochastic label noise (Chen et al., ICLR 2021): build noisy-label benchmarks, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(command: F) -> F:
    """Turn an `SlnError` into `error: ...` on stderr and exit code 1 (`SLN_DEBUG=1` keeps the traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SlnError as exc:
            if os.environ.get("SLN_DEBUG") == "1":
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def _print_json(obj: Any) -> None:
    import json

    print(json.dumps(obj, indent=2))


# --------------------------------------------------------------------------------------------------
# sln corrupt
# --------------------------------------------------------------------------------------------------


@app.command()
@_reports_errors
def corrupt(
    dataset: Annotated[str | None, typer.Option(help="cifar10, cifar100, digits, imagefolder or clothing1m.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset lives (see README).")] = None,
    download: Annotated[bool, typer.Option(help="Fetch the official archive (checksummed) if it is missing.")] = False,
    mode: Annotated[
        str | None,
        typer.Option(help="sym, uniform, asym, asym-superclass, transition, dependent, idn or openset."),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Requested noise rate r in [0, 1].")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the numpy Generator; the same seed gives the same file.")] = 0,
    exact: Annotated[
        bool, typer.Option(help="sym/uniform: flip exactly round(r*N) samples instead of each with probability r.")
    ] = False,
    matrix: Annotated[
        Path | None, typer.Option(help="K×K row-stochastic transition matrix (.npy/.csv, rows = true class).")
    ] = None,
    probs: Annotated[
        Path | None,
        typer.Option(help="dependent: N×K averaged softmax (.npy) or a run directory trained with --record-probs."),
    ] = None,
    source_dataset: Annotated[
        str | None, typer.Option(help="openset: dataset whose images replace ours (cifar100 in the paper).")
    ] = None,
    source_data_dir: Annotated[Path | None, typer.Option(help="openset: where the source dataset lives.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output CSV; its JSON manifest is written beside it.")] = None,
    inspect: Annotated[
        Path | None, typer.Option(help="Summarise an existing label file (.csv or CIFAR-N .pt) instead.")
    ] = None,
    label_set: Annotated[
        str | None, typer.Option(help="CIFAR-N .pt: which label set, e.g. worse_label, aggre_label, noisy_label.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Build a noisy-label file, or summarise an existing one (--inspect), reporting the realised noise."""
    from sln_cli import corrupt as corrupt_lib

    generation_flags = {"--mode": mode, "--rate": rate, "--out": out, "--matrix": matrix, "--probs": probs}
    generation_flags |= {"--source-dataset": source_dataset, "--exact": exact or None}
    if inspect is not None:
        if given := [flag for flag, value in generation_flags.items() if value is not None]:
            raise SlnError(f"--inspect summarises an existing file; drop {', '.join(given)}")
        summary = corrupt_lib.inspect(inspect, label_set=label_set, dataset=dataset, data_dir=data_dir)
    else:
        if label_set is not None:
            raise SlnError("--label-set picks the labels of a CIFAR-N file given to --inspect; drop it")
        summary = corrupt_lib.generate(
            dataset=dataset,
            data_dir=data_dir,
            download=download,
            mode=mode,
            rate=rate,
            seed=seed,
            exact=exact,
            matrix=matrix,
            probs=probs,
            source_dataset=source_dataset,
            source_data_dir=source_data_dir,
            out=out,
        )
    if json_output:
        _print_json(summary)
    else:
        corrupt_lib.render(summary, _console())


# --------------------------------------------------------------------------------------------------
# sln presets / sln train
# --------------------------------------------------------------------------------------------------


@app.command()
@_reports_errors
def presets(json_output: Annotated[bool, typer.Option("--json", help="Print name -> description as JSON.")] = False):
    """List the presets with a one-line description each (use one with `sln train --preset NAME`)."""
    from rich.table import Table

    from sln_cli import presets as presets_lib

    described = presets_lib.describe()
    if json_output:
        _print_json(described)
        return
    table = Table("preset", "description", title="presets")
    for name, description in described.items():
        table.add_row(name, description)
    _console().print(table)


@app.command()
@_reports_errors
def train(
    preset: Annotated[str | None, typer.Option(help="Preset name (see `sln presets`) or a YAML file.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs (optim.epochs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (run.seed); label noise has noise.seed.")] = None,
    sigma: Annotated[float | None, typer.Option(help="SLN noise std (sln.sigma); 0 = plain cross-entropy.")] = None,
    noise_rate: Annotated[float | None, typer.Option(help="Requested label-noise rate (noise.rate).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Noisy-label file (CSV or CIFAR-N .pt) to train on.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset lives (data.data_dir).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps (run.device).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (run.precision).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<preset>-<timestamp>).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override any key: --set section.key=value (repeatable).")
    ] = None,
    train_limit: Annotated[int | None, typer.Option(help="Train on a seeded subset of N samples.")] = None,
    test_limit: Annotated[int | None, typer.Option(help="Test on a seeded subset of N samples.")] = None,
    record_probs: Annotated[
        bool | None, typer.Option("--record-probs", help="Save the epoch-averaged softmax (probs.npy).")
    ] = None,
    print_config: Annotated[bool, typer.Option(help="Print the resolved config and exit.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output; only errors and the final table.")] = False,
) -> None:
    """Train SLN / SLN-MO / SLN-MO-LC; writes a run directory (config, metrics, checkpoints, summary)."""
    from sln_cli import config as config_lib
    from sln_cli import presets as presets_lib

    flags = {
        "optim.epochs": epochs, "run.seed": seed, "sln.sigma": sigma, "noise.rate": noise_rate,
        "noise.labels": _str(labels), "data.data_dir": _str(data_dir), "run.device": device,
        "run.precision": precision, "run.out": _str(out), "data.train_limit": train_limit,
        "data.test_limit": test_limit, "run.record_probs": record_probs,
    }
    if resume is not None:
        preset, base = _resume_base(resume, preset)
    else:
        base = presets_lib.load(preset) if preset is not None else {}
    config = config_lib.resolve(base, set_ or [], flags)
    if print_config:
        print(config_lib.dump(config), end="")
        return
    if resume is not None:
        _check_resume_changes(base, config)

    from sln_cli.progress import summary_table
    from sln_cli.train import train as train_lib

    summary = train_lib(config, preset=preset, resume=resume, quiet=quiet)
    _console().print(summary_table(summary))


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _resume_base(run_dir: Path, preset: str | None) -> tuple[str, dict[str, Any]]:
    from sln_cli import config as config_lib
    from sln_cli import runs

    if preset is not None:
        raise SlnError("--resume continues a run with its own config; drop --preset")
    runs.check_run_dir(run_dir)
    return str(run_dir / runs.CONFIG), config_lib.load_yaml(run_dir / runs.CONFIG)


def _check_resume_changes(saved: dict[str, Any], config: Any) -> None:
    """A resumed run may only train longer or move to another device; anything else would be another run."""
    from sln_cli import config as config_lib

    allowed = {"optim.epochs", "run.device", "run.out"}
    now = config_lib.to_dict(config)
    changed = [
        f"{section}.{key}" for section, values in now.items() if isinstance(values, dict)
        for key, value in values.items()
        if f"{section}.{key}" not in allowed and saved.get(section, {}).get(key) != value
    ]
    if changed:
        raise SlnError(f"cannot change {', '.join(changed)} when resuming; start a new run instead")


# --------------------------------------------------------------------------------------------------
# Later subcommands
# --------------------------------------------------------------------------------------------------


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_reports_errors
def evaluate() -> None:
    """Measure checkpoints: accuracy and calibration (not yet available)."""
    raise SlnError("`sln evaluate` is not yet available in this version")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_reports_errors
def analyze() -> None:
    """Confidence and loss-landscape / sharpness statistics (not yet available)."""
    raise SlnError("`sln analyze` is not yet available in this version")


@app.command()
@_reports_errors
def bench(
    data_dir: Annotated[
        Path | None, typer.Option(help="Real CIFAR-10 layout to benchmark on; synthetic data otherwise.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    steps: Annotated[int, typer.Option(help="Training steps measured per contender and round.")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Training throughput of sln against a re-creation of the official loop and the hardware ceiling."""
    raise SlnError("`sln bench` is not yet available in this version")


def main() -> None:
    app()
