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

from sln_cli.errors import SlnError, describe_os_error

app = typer.Typer(
    name="sln",
    help="Stochastic label noise (Chen et al., ICLR 2021): build noisy-label benchmarks, train, evaluate.\n\n"
         "Start with `sln train --preset quickstart` (CPU, about half a minute) and `sln evaluate RUN`.",
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _flag(*declarations: str, help: str) -> Any:
    """An on/off option: shown in --help without a `<bool>` type column (it takes no value)."""
    return typer.Option(*declarations, help=help, metavar="")


# Options several commands share: one declaration, one help text.
JsonOption = Annotated[
    bool, _flag("--json", help="Print JSON instead of tables (its keys: docs/reference/json.md).")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
CheckpointOption = Annotated[
    str | None, typer.Option(help="Checkpoint of a run directory: final (default), best, best-noisy-val (the epoch of "
                                  "best noisy-validation accuracy, data.noisy_val), last or epoch-N.")
]


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
    if context.invoked_subcommand is None:
        print(context.get_help())
        raise typer.Exit()


def _reports_errors(command: F) -> F:
    """Turn an `SlnError` into `error: ...` on stderr and exit code 1 (`SLN_DEBUG=1` keeps the traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SlnError as exc:
            _report(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a path the user gave cannot be read or written: say which and why
            _report(describe_os_error(exc))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _report(message: str) -> None:
    if os.environ.get("SLN_DEBUG") == "1":
        raise  # re-raises the exception being handled, with its traceback
    if _is_main_process():  # under torchrun every rank raises the same error: say it once
        one_line = message.replace("\r", " ").replace("\n", " ")  # whatever a path or a library put in it
        print(f"error: {one_line}", file=sys.stderr)


def _is_main_process() -> bool:
    """Rank 0 under torchrun (read from its environment, so this module needs no torch import)."""
    return os.environ.get("RANK", "0") == "0"


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def _print_json(obj: Any) -> None:
    from sln_cli.rundir.files import json_text

    print(json_text(obj), end="")


# --------------------------------------------------------------------------------------------------
# sln corrupt
# --------------------------------------------------------------------------------------------------


@app.command()
@_reports_errors
def corrupt(
    dataset: Annotated[
        str | None,
        typer.Option(help="cifar10, cifar100, digits, imagefolder, clothing1m, animal10n or webvision-mini."),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset lives (see README).")] = None,
    download: Annotated[bool, _flag(help="Fetch the official archive (checksummed) if it is missing.")] = False,
    mode: Annotated[
        str | None,
        typer.Option(help="sym, uniform, asym, asym-superclass, transition, dependent, idn or openset."),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Requested noise rate r in [0, 1].")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the numpy Generator; the same seed gives the same file.")] = 0,
    exact: Annotated[
        bool, _flag(help="sym/uniform: flip exactly round(r*N) samples instead of each with probability r.")
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
    plot: Annotated[
        Path | None,
        typer.Option(help="With --inspect: draw the transition matrix to this PNG (and, with --dataset, flipped "
                          "examples per class to PNG-examples.png)."),
    ] = None,
    fetch_official: Annotated[
        str | None,
        typer.Option(help="Download the papers' pinned label files (NAME, e.g. cifar10/sym0.4, or all) into "
                          "$SLN_CACHE/labels, verified by sha256, for later offline use as --labels official:NAME."),
    ] = None,
    json_output: JsonOption = False,
    overwrite: Annotated[
        bool, _flag(help="Replace the label file in --out (only one sln wrote, with its manifest), or with "
                         "--inspect the --plot PNGs.")
    ] = False,
) -> None:
    """Build a noisy-label file, or summarise an existing one (--inspect), reporting the realised noise.

    --inspect also takes official:NAME, one of the papers' own label files (see --fetch-official).

    Examples:

      $ sln corrupt --dataset digits --mode sym --rate 0.4 --out labels.csv
      $ sln corrupt --inspect labels.csv --dataset digits --plot noise.png
    """
    from sln_cli.labels import corrupt as corrupt_lib

    generation_flags = {"--mode": mode, "--rate": rate, "--out": out, "--matrix": matrix, "--probs": probs}
    generation_flags |= {"--source-dataset": source_dataset, "--exact": exact or None, "--overwrite": overwrite or None}
    if fetch_official is not None:
        _fetch_official(fetch_official, generation_flags | {"--inspect": inspect, "--dataset": dataset, "--plot": plot},
                        json_output)
        return
    if inspect is not None:
        replaces_plot = plot is not None and overwrite  # --overwrite replaces the --plot PNGs of an earlier inspect
        if given := [flag for flag, value in generation_flags.items()
                     if value is not None and not (flag == "--overwrite" and replaces_plot)]:
            raise SlnError(f"--inspect summarises an existing file; drop {', '.join(given)}")
        summary = corrupt_lib.inspect(inspect, label_set=label_set, dataset=dataset, data_dir=data_dir, plot=plot,
                                      overwrite=overwrite)
    else:
        if label_set is not None:
            raise SlnError("--label-set picks the labels of a CIFAR-N file given to --inspect; drop it")
        if plot is not None:
            raise SlnError("--plot draws the file given to --inspect; write the file first, then inspect it")
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
            overwrite=overwrite,
        )
    if json_output:
        _print_json(summary)
    else:
        corrupt_lib.render(summary, _console())


def _fetch_official(which: str, other_flags: dict[str, Any], json_output: bool) -> None:
    from sln_cli.labels import official

    if given := [flag for flag, value in other_flags.items() if value is not None]:
        raise SlnError(f"--fetch-official only fills the label cache; drop {', '.join(given)}")
    fetched = [{**row, "path": str(row["path"])} for row in official.fetch_many(which)]
    if json_output:
        _print_json(fetched)
        return
    for row in fetched:
        print(f"{row['status']:>10}  official:{row['name']}  {row['path']}  sha256 {row['sha256'][:12]}…")


# --------------------------------------------------------------------------------------------------
# sln presets / sln train
# --------------------------------------------------------------------------------------------------


@app.command()
@_reports_errors
def presets(
    json_output: JsonOption = False,
    sweeps: Annotated[bool, _flag("--sweeps", help="With --json: the sweeps instead of the presets.")] = False,
):
    """List the presets and sweeps with a one-line description each (`sln train --preset NAME`, `sln sweep NAME`).

    Examples:

      $ sln presets
      $ sln presets --json --sweeps
    """
    from rich.table import Table

    from sln_cli import presets as presets_lib
    from sln_cli.sweep import spec as sweep_spec

    if json_output:
        _print_json(sweep_spec.describe() if sweeps else presets_lib.describe())
        return
    for kind, described in (("preset", presets_lib.describe()), ("sweep", sweep_spec.describe())):
        table = Table(kind, "description", title=f"{kind}s (sln {'train --preset' if kind == 'preset' else 'sweep'} "
                                                 "NAME)")
        for name, description in described.items():
            table.add_row(name, description)
        _console().print(table)


@app.command()
@_reports_errors
def methods(
    dataset: Annotated[str, typer.Option(help="Whose defaults to show (cifar10, cifar100, ...).")] = "cifar10",
    json_output: Annotated[bool, _flag("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the training methods (`sln train --method NAME`): paper, what each changes, its default settings.

    Examples:

      $ sln methods
      $ sln methods --dataset cifar100 --json
    """
    from rich.table import Table

    from sln_cli.methods.catalog import describe

    rows = describe(dataset)
    if json_output:
        _print_json(rows)
        return
    table = Table("method", "paper", "SLN noise", f"defaults on {dataset}", title="methods (--method NAME)",
                  caption="SAM (--sam) combines with any method but dividemix")
    sources: dict[str, str] = {}
    for row in rows:
        settings = row["hyperparameters"]
        sources |= {f"{row['name']}: {key}": entry["source"] for key, entry in settings.items()}
        if reference := row.get("reference"):
            sources[f"{row['name']}: checked against"] = (f"{reference['repository']} {reference['file']} "
                                                          f"@ {reference['commit'][:12]}")
        if row.get("combinations"):
            sources[f"{row['name']}: combinations"] = row["combinations"]
        table.add_row(row["name"], row["paper"], "yes" if row["sln_noise"] else "no",
                      ", ".join(f"{key}={entry['value']}" for key, entry in settings.items()))
    console = _console()
    console.print(table)
    for key, source in sources.items():
        console.print(f"  {key}: {source}", highlight=False)
    for row in rows:  # the official code each method's defaults and formulas were checked against
        if (ref := row.get("reference")) is not None:
            console.print(f"  {row['name']}: checked against {ref['repository']} {ref['file']} @ {ref['commit'][:7]}",
                          highlight=False)
        if row.get("combinations"):
            console.print(f"  {row['name']} with SLN and other switches: {row['combinations']}", highlight=False)


@app.command()
@_reports_errors
def train(
    preset: Annotated[str | None, typer.Option(help="Preset name (see `sln presets`) or a YAML file.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs (optim.epochs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (run.seed); label noise has noise.seed.")] = None,
    sigma: Annotated[float | None, typer.Option(help="SLN noise std (sln.sigma); 0 = plain cross-entropy.")] = None,
    method: Annotated[
        str | None, typer.Option(help="Training method (method.name): sln, ce, gce, ... (see `sln methods`).")
    ] = None,
    sam: Annotated[
        bool | None, _flag("--sam", help="Sharpness-aware minimisation on top of the method (method.sam).")
    ] = None,
    noise_rate: Annotated[float | None, typer.Option(help="Requested label-noise rate (noise.rate).")] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Noisy-label file (CSV or CIFAR-N .pt) to train on; official:NAME for a paper's own file, "
                          "official for the one of the preset's setting."),
    ] = None,
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
    noisy_val: Annotated[
        float | None, typer.Option(help="Hold out N noisy training samples (or a fraction < 1) to select the epoch "
                                        "on; the paper uses 5000 on CIFAR (data.noisy_val).")
    ] = None,
    record_probs: Annotated[
        bool | None, _flag("--record-probs", help="Save the epoch-averaged softmax (probs.npy).")
    ] = None,
    tensorboard: Annotated[
        bool | None, _flag("--tensorboard", help="Also log to TensorBoard in RUN/tensorboard (run.tensorboard).")
    ] = None,
    print_config: Annotated[bool, _flag(help="Print the resolved config and exit.")] = False,
    quiet: Annotated[bool, _flag(help="No progress output; only errors and the final table.")] = False,
    overwrite: Annotated[
        bool, _flag(help="Replace the run in --out: only a directory sln marked as a run, only its files.")
    ] = False,
) -> None:
    """Train SLN / SLN-MO / SLN-MO-LC; writes a run directory (config, metrics, checkpoints, summary).

    Examples:

      $ sln train --preset quickstart --out runs/qs
      $ sln train --preset cifar10-sym --data-dir data/CIFAR10 --noise-rate 0.6 --epochs 300
      $ sln train --preset quickstart --labels cleaned.csv --out runs/qs-clean
    """
    from sln_cli import config as config_lib
    from sln_cli import presets as presets_lib

    flags = {
        "optim.epochs": epochs, "run.seed": seed, "sln.sigma": sigma, "method.name": method, "method.sam": sam,
        "noise.rate": noise_rate,
        "noise.labels": _str(labels), "data.data_dir": _str(data_dir), "run.device": device,
        "run.precision": precision, "run.out": _str(out), "data.train_limit": train_limit,
        "data.test_limit": test_limit, "data.noisy_val": noisy_val, "run.record_probs": record_probs,
        "run.tensorboard": tensorboard,
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

    from sln_cli.render.progress import summary_table
    from sln_cli.training.train import train as train_lib

    summary = train_lib(config, preset=preset, resume=resume, quiet=quiet, overwrite=overwrite)
    if _is_main_process():
        _console().print(summary_table(summary))


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _resume_base(run_dir: Path, preset: str | None) -> tuple[str, dict[str, Any]]:
    from sln_cli import config as config_lib
    from sln_cli.rundir import runs

    if preset is not None:
        raise SlnError("--resume continues a run with its own config; drop --preset")
    runs.check_run_dir(run_dir)
    from sln_cli.rundir.experiments import with_past_defaults

    tree = runs.relocate(config_lib.load_yaml(run_dir / runs.CONFIG), run_dir)
    return str(run_dir / runs.CONFIG), with_past_defaults(tree)


def _check_resume_changes(saved: dict[str, Any], config: Any) -> None:
    """A resumed run may only train longer or move to another device; anything else would be another run."""
    from sln_cli import config as config_lib

    # where and how fast it runs may change, and logging may be switched on; anything else would be another run
    allowed = {"optim.epochs", "run.device", "run.out", "run.deterministic", "run.tensorboard", "run.memory_check"}
    now = config_lib.to_dict(config)
    # keys newer than the saved run (its config.yaml lacks them) count as their defaults
    # at the epochs asked for now (allowed to change): a saved correction past its old last epoch may now run
    sections = {"optim": {**(saved.get("optim") or {}), "epochs": config.optim.epochs}}
    before = config_lib.to_dict(config_lib.resolve({**saved, **sections}))
    changed = [
        f"{section}.{key}" for section, values in now.items() if isinstance(values, dict)
        for key, value in values.items()
        if f"{section}.{key}" not in allowed and before.get(section, {}).get(key) != value
    ]
    if changed:
        raise SlnError(f"cannot change {', '.join(changed)} when resuming; start a new run instead")


# --------------------------------------------------------------------------------------------------
# sln sweep / sln report
# --------------------------------------------------------------------------------------------------


# the Slurm options `sln sweep` and `sln tune` share (sln_cli/slurm.py)
LauncherOption = Annotated[str, typer.Option(help="local (child processes here) or slurm (submitit).")]
PartitionOption = Annotated[str | None, typer.Option(help="slurm: the partition.")]
TimeMinOption = Annotated[int, typer.Option(help="slurm: time limit of a job, in minutes.")]
GpusPerJobOption = Annotated[int, typer.Option(help="slurm: GPUs per job (0: CPU jobs).")]
RunsPerJobOption = Annotated[int, typer.Option(help="slurm: runs (tune: trials) per job at once, sharing its GPUs.")]


@app.command()
@_reports_errors
def sweep(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="A sweep name (see `sln presets`) or a YAML file.")],
    out: Annotated[Path | None, typer.Option(help="Sweep directory (default sweeps/<name>).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds instead of the spec's: 0,1,2 or 0-4.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key in every run: section.key=value (repeatable).")
    ] = None,
    jobs: Annotated[int | None, typer.Option(help="Runs at once (default: one per device slot; CPU: 1).")] = None,
    devices: Annotated[str, typer.Option(help="cpu, or GPUs such as cuda:0,cuda:1.")] = "cpu",
    per_device: Annotated[int, typer.Option(help="Runs sharing one GPU.")] = 1,
    cpu_threads: Annotated[
        int | None, typer.Option(help="Threads per CPU run (default: the cores divided between the jobs).")
    ] = None,
    retries: Annotated[int, typer.Option(help="Restarts of a failing run in this invocation.")] = 1,
    dry_run: Annotated[bool, _flag(help="Show every run and its state; run nothing.")] = False,
    json_output: Annotated[bool, _flag("--json", help="With --dry-run: print the runs as a JSON list.")] = False,
    launcher: LauncherOption = "local",
    partition: PartitionOption = None,
    time_min: TimeMinOption = 24 * 60,
    gpus_per_job: GpusPerJobOption = 1,
    runs_per_job: RunsPerJobOption = 1,
) -> None:
    """Run a grid of runs (presets × methods × overrides × seeds); rerun to continue: finished runs are skipped,
    partial ones resumed, failed ones restarted. Label-correction runs start from their twin's state.

    Examples:

      $ sln sweep quickstart-sweep --jobs 2 --out runs/sweep
      $ sln sweep quickstart-sweep --out runs/sweep --dry-run
    """
    from sln_cli.sweep import commands

    if json_output and not dry_run:
        raise SlnError("--json prints the plan of --dry-run; add --dry-run")
    if retries < 0:
        raise SlnError(f"--retries must not be negative, got {retries}")
    plan, sweep_dir = commands.load(spec, out=out, seeds=seeds, overrides=set_ or [])
    if dry_run:
        result = commands.dry_run(plan, sweep_dir)
        if json_output:
            _print_json(result["rows"])
        else:
            commands.render_dry_run(result, _console())
        return
    if launcher == "slurm":
        from sln_cli.sweep.slurm import submit

        slurm = commands.SlurmOptions(partition=partition, time_minutes=time_min, gpus_per_job=gpus_per_job,
                                      runs_per_job=runs_per_job)
        jobs_submitted = submit(plan, sweep_dir, slurm, retries=retries)
        _console().print(f"submitted {len(jobs_submitted)} jobs ({', '.join(j['job_id'] for j in jobs_submitted)}); "
                         f"rerun the same command after they end to resubmit anything unfinished", markup=False)
        return
    if launcher != "local":
        raise SlnError(f"--launcher takes local or slurm, got {launcher!r}")
    from sln_cli.sweep.runner import Options, run_sweep

    options = Options(jobs=jobs, devices=commands.parse_devices(devices), per_device=per_device, retries=retries,
                      cpu_threads=cpu_threads)
    outcome = run_sweep(plan, sweep_dir, options, console=_console())
    commands.render_outcome(outcome, _console())
    if any(result != "done" for result in outcome["runs"].values()):
        raise typer.Exit(1)


@app.command()
@_reports_errors
def report(
    targets: Annotated[
        list[str], typer.Argument(metavar="RUN_OR_SWEEP", help="Sweep directories, run directories or globs.")
    ],
    metric: Annotated[str, typer.Option(help="acc (test accuracy) or nll (test cross-entropy).")] = "acc",
    select: Annotated[
        str, typer.Option(help="last (final epoch) or best-val (the epoch of best EMA validation accuracy).")
    ] = "last",
    fmt: Annotated[str, typer.Option("--format", help="table, markdown, csv, latex or json.")] = "table",
    json_output: Annotated[bool, _flag("--json", help="Same as --format json.")] = False,
    all_weights: Annotated[
        bool, _flag(help="Both weights of every run (CE-MO, SLN-LC too), not only the paper's rows.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Folder for the PNGs (default: SWEEP/report).")] = None,
    figures: Annotated[bool, _flag(help="Write accuracy.png and memorisation.png.")] = True,
    overwrite: Annotated[bool, _flag(help="Replace PNGs in --out that sln did not write.")] = False,
) -> None:
    """The paper's table from runs: one row per method, one column per setting, mean ± std over seeds, the
    paper's number beside; unfinished runs are shown, never averaged. Also the curves as PNGs.

    Examples:

      $ sln report runs/sweep
      $ sln report runs/sweep --format markdown --out figures
    """
    from sln_cli.report import collect, render, selection

    fmt = "json" if json_output else fmt
    if fmt not in render.FORMATS:
        raise SlnError(f"--format takes {', '.join(render.FORMATS)}, got {fmt!r}")
    damaged: list[collect.Damaged] = []
    found = collect.find_runs(targets, damaged=damaged)
    if not found and damaged:
        raise SlnError(f"no readable run: {damaged[0].reason}")
    cells = selection.add_selections(collect.cells(found, metric=metric, select=select, every=all_weights), found)
    written: list[Path] = []
    if figures:
        from sln_cli.report.figures import default_folder, write_figures

        written = write_figures(found, out or default_folder(targets, found), overwrite=overwrite)
    from sln_cli.report.cost import grid_total

    render.render(cells, fmt, _console(), total=grid_total(found))
    for run in damaged:  # beside the table (on stderr when stdout is a machine-readable format)
        _console(stderr=fmt != "table").print(f"damaged, left out: {run.run_dir}: {run.reason}", markup=False,
                                              highlight=False, soft_wrap=True)
    if selection.has_noisy_val(cells):  # last / noisy-val selected / best test epoch (oracle), side by side
        selection.render(cells, fmt, _console())
    if written:
        _console(stderr=fmt != "table").print(f"figures: {', '.join(map(str, written))}", markup=False,
                                              highlight=False)


@app.command()
@_reports_errors
def tune(
    preset: Annotated[str, typer.Argument(metavar="PRESET", help="Preset name or YAML file every trial starts from.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="section.key=a,b,c (a grid) or section.key=lo:hi[:log] (a "
                                                       "range, sampled); repeatable.")
    ] = None,
    method: Annotated[str | None, typer.Option(help="Training method to tune (method.name).")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials in all (default: the grid's size, or 20 with a range).")]
    = None,
    objective: Annotated[
        str | None, typer.Option(help="ema-best (default), ema-last, raw-best or raw-last: noisy-validation accuracy.")
    ] = None,
    paper: Annotated[bool, _flag("--paper", help="The paper's protocol: SLN alone, sigma 0.1,0.2,0.5,1.0, a "
                                                        "tenth held out as noisy validation, raw-last.")] = False,
    noisy_val: Annotated[float | None, typer.Option(help="Noisy validation samples (data.noisy_val).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key in every trial (repeatable).")]
    = None,
    out: Annotated[Path | None, typer.Option(help="Tune directory (default tunes/<preset>).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL shared by processes or machines "
                                                     "(default: TUNE/study.db).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name in the storage (default: the tune folder's).")] = None,
    jobs: Annotated[int, typer.Option(help="Trials at once, one process each (slurm: workers in all).")] = 1,
    prune: Annotated[bool, _flag("--prune", help="Stop trials below the median early (Optuna).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the sampler of ranges.")] = 0,
    launcher: LauncherOption = "local",
    partition: PartitionOption = None,
    time_min: TimeMinOption = 24 * 60,
    gpus_per_job: GpusPerJobOption = 1,
    runs_per_job: RunsPerJobOption = 1,
    json_output: JsonOption = False,
) -> None:
    """Choose hyperparameters on noisy validation accuracy with Optuna (the `tune` extra); rerun to continue.
    With --launcher slurm, worker jobs on one study are submitted, not awaited; rerun to see the study.

    Examples:

      $ sln tune quickstart --param sln.sigma=0.1,0.5,1.0 --noisy-val 120 --jobs 2
      $ sln tune quickstart --paper --launcher slurm --jobs 4 --partition gpu --out tunes/qs
    """
    from sln_cli.tune import commands as tune_lib

    if launcher not in ("local", "slurm"):
        raise SlnError(f"--launcher takes local or slurm, got {launcher!r}")
    spec = tune_lib.build_spec(preset, param or [], method=method, trials=trials, objective=objective, paper=paper,
                               noisy_val=noisy_val, overrides=set_ or [], prune=prune, seed=seed)
    if launcher == "slurm":
        from sln_cli.slurm import SlurmOptions
        from sln_cli.tune import slurm as tune_slurm

        options = SlurmOptions(partition=partition, time_minutes=time_min, gpus_per_job=gpus_per_job,
                               runs_per_job=runs_per_job)
        submission = tune_slurm.submit(spec, out or tune_lib.default_dir(preset), storage=storage, study_name=study,
                                       workers=jobs, options=options)
        if json_output:
            _print_json({**tune_lib.as_json(submission.result), "waiting": submission.waiting,
                         "submitted": [{"job_id": j["job_id"], "workers": j["workers"]} for j in submission.jobs]})
        else:
            tune_slurm.render(submission, _console())
        return
    log = (lambda line: None) if json_output else (lambda line: _console().print(line, markup=False, highlight=False))
    result = tune_lib.tune(spec, out or tune_lib.default_dir(preset), storage=storage, study_name=study, jobs=jobs,
                           log=log)
    if json_output:
        _print_json(tune_lib.as_json(result))
    else:
        tune_lib.render(result, _console())


# --------------------------------------------------------------------------------------------------
# Later subcommands
# --------------------------------------------------------------------------------------------------


@app.command()
@_reports_errors
def evaluate(
    targets: Annotated[
        list[str], typer.Argument(metavar="RUN_OR_CHECKPOINT", help="Run directories or .pt files in one; globs ok.")
    ],
    checkpoint: CheckpointOption = None,
    weights: Annotated[str, typer.Option(help="raw (SLN), ema (SLN-MO) or both.")] = "both",
    split: Annotated[
        str, typer.Option(help="test, val, train (needs true labels; adds clean/mislabelled accuracy), ilsvrc12 "
                               "(webvision-mini's second test set), or noisy-val (the samples the run held out, "
                               "data.noisy_val: accuracy on their noisy labels, and true ones when known).")
    ] = "test",
    out: Annotated[
        Path | None, typer.Option(help="Folder for the reliability diagram (default: RUN/analysis of the first run).")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None,
    save_predictions: Annotated[
        Path | None,
        typer.Option(help="FILE.npz of probs (N×K), labels, indices; with several runs or weights each file gets "
                          "-<run>-<weights> before .npz."),
    ] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Evaluation batch size (default: the run's).")] = None,
    per_class: Annotated[
        bool, _flag(help="Also per-class accuracy, the confusion matrix (JSON \"per_class\") and its PNG per run.")
    ] = False,
    json_output: JsonOption = False,
    overwrite: Annotated[
        bool, _flag(help="Replace existing --csv / --save-predictions files and diagrams in a folder sln "
                                "did not make.")
    ] = False,
) -> None:
    """Accuracy and calibration of runs side by side (mean ± std over runs that differ only in their seed).

    Top-1 (top-5 when K >= 20), NLL, Brier, ECE (15 equal-width bins), adaptive ECE (15 equal-mass bins), MCE.

    Examples:

      $ sln evaluate runs/qs-ce runs/qs-sln
      $ sln evaluate runs/qs --split train --per-class --out eval
    """
    from sln_cli import evaluate as evaluate_lib

    evaluation = evaluate_lib.evaluate(
        targets, checkpoint=checkpoint, weights=weights, split=split, out=out, csv_path=csv,
        save_predictions=save_predictions, device=device, batch_size=batch_size, overwrite=overwrite,
        per_class=per_class,
    )
    if json_output:
        _print_json(evaluation.rows)
    else:
        evaluate_lib.render(evaluation, _console())


analyze_app = typer.Typer(
    name="analyze", help="Confidence, label issues and loss-landscape / sharpness statistics of trained runs.",
    no_args_is_help=True,
)
app.add_typer(analyze_app)

WeightsOption = Annotated[str, typer.Option(help="raw (SLN) or ema (SLN-MO) weights.")]
LandscapeWeightsOption = Annotated[
    str, typer.Option(help="raw (SLN), ema (SLN-MO) or both (each cut along the same directions).")
]
OutOption = Annotated[Path | None, typer.Option(help="Folder for the PNGs (default: RUN/analysis).")]
OverwriteOption = Annotated[
    bool, _flag(help="Replace files of the same names in an output folder sln did not make.")
]


@analyze_app.command()
@_reports_errors
def confidence(
    target: Annotated[str, typer.Argument(metavar="RUN_OR_CHECKPOINT", help="A run directory or a .pt file in one.")],
    checkpoint: CheckpointOption = None,
    weights: WeightsOption = "raw",
    noise_rate: Annotated[
        float | None, typer.Option(help="Flag the r·N highest losses (default r: the realised noise rate).")
    ] = None,
    out: OutOption = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Evaluation batch size (default: the run's).")] = None,
    json_output: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Confidence of clean vs mislabelled training samples, and how well the loss spots the mislabelled ones.

    Max-probability, entropy, margin; loss AUROC and precision/recall of the r·N highest losses; memorisation curve.

    Examples:

      $ sln analyze confidence runs/qs
      $ sln analyze confidence runs/qs --weights ema --out conf
    """
    from sln_cli.analyze import commands

    result = commands.analyze_confidence(
        target, checkpoint=checkpoint, weights=weights, noise_rate=noise_rate, out=out, device=device,
        batch_size=batch_size, overwrite=overwrite,
    )
    if json_output:
        _print_json(result)
    else:
        commands.render_confidence(result, _console())


@analyze_app.command()
@_reports_errors
def issues(
    target: Annotated[str, typer.Argument(metavar="RUN_OR_CHECKPOINT", help="A run directory or a .pt file in one.")],
    checkpoint: CheckpointOption = None,
    weights: Annotated[str, typer.Option(help="ema (SLN-MO, default) or raw (SLN) weights.")] = "ema",
    score: Annotated[
        str, typer.Option(help="loss (-log p of the given label; default), probability (p of the given label) or "
                               "clean-probability (a DivideMix run's clean posterior).")
    ] = "loss",
    average_checkpoints: Annotated[
        bool, _flag(help="Average the softmax over the run's kept epoch checkpoints (run.keep_checkpoints).")
    ] = False,
    top: Annotated[int | None, typer.Option(
        help="Rows printed and images on the contact sheet; precision at k = top (default 20). With --write-labels: "
             "change these N most suspect samples.")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Flag loss >= T (or probability <= T); default: flag where argmax differs from the label."),
    ] = None,
    noise_rate: Annotated[
        float | None,
        typer.Option(help="With true labels: precision/recall of the r·N most suspect (default: the realised r)."),
    ] = None,
    compare: Annotated[
        str | None, typer.Option(help="cleanlab: also run cleanlab's find_label_issues on the same probabilities.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for issues.csv and contact-sheet.png (default: RUN/analysis/issues-*).")
    ] = None,
    write_labels: Annotated[str | None, typer.Option(
        help="relabel or drop: write OUT/labels-ACTION.csv (+ manifest), the run's labels with the flagged samples "
             "(or the --top N) relabelled to the suggested class or left out, for `sln train --labels`.")] = None,
    overwrite: Annotated[
        bool, _flag(help="Replace issues.csv, contact-sheet.png and labels-*.csv in an --out sln did not make.")
    ] = False,
    device: DeviceOption = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Evaluation batch size (default: the run's).")] = None,
    json_output: Annotated[bool, _flag("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """The training samples whose given label is probably wrong, ranked, with a suggested label (works without truth).

    Writes issues.csv (every sample, most suspect first) and a contact sheet of the top images; with true labels
    known, precision/recall at r·N, precision at k and AUROC; --compare cleanlab runs cleanlab beside it.

    Examples:

      $ sln analyze issues runs/qs --top 30
      $ sln analyze issues runs/qs --write-labels relabel --out cleaned
      $ sln analyze issues runs/qs --write-labels drop --top 50
    """
    from sln_cli.analyze import issues as issues_lib

    result = issues_lib.analyze_issues(
        target, checkpoint=checkpoint, out=out, device=device, overwrite=overwrite, weights=weights, score=score,
        average_checkpoints=average_checkpoints, top=20 if top is None else top, threshold=threshold,
        noise_rate=noise_rate, compare=compare, batch_size=batch_size, write_labels=write_labels,
        write_top=top if write_labels is not None else None,
    )
    if json_output:
        _print_json(result)
    else:
        from sln_cli.analyze.issues_view import render_issues

        render_issues(result, _console())


@analyze_app.command()
@_reports_errors
def noise(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run directory trained with --record-probs.")],
    out: OutOption = None,
    json_output: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """The noise rate and transition matrix of a run's labels, estimated from its probs.npy without the truth:
    anchor points (as forward correction) and cleanlab's confident joint; errors and heat maps beside the truth.

    Examples:

      $ sln analyze noise runs/qs
      $ sln analyze noise runs/qs --json --out noise
    """
    from sln_cli.analyze import noise_rate

    result = noise_rate.analyze_noise(run, out=out, overwrite=overwrite)
    if json_output:
        _print_json(result)
    else:
        noise_rate.render(result, _console())


@analyze_app.command()
@_reports_errors
def landscape(
    targets: Annotated[
        list[str], typer.Argument(metavar="RUN_OR_CHECKPOINT", help="Runs cut along the same directions.")
    ],
    checkpoint: CheckpointOption = None,
    weights: LandscapeWeightsOption = "raw",
    points: Annotated[int, typer.Option(help="Points per axis over [-span, span] (and of the interpolation).")] = 21,
    span: Annotated[float, typer.Option(help="Half-width of the cut, in filter-normalised units.")] = 1.0,
    grid: Annotated[bool, _flag(help="Also the 2D points×points grid (slow; resumes if interrupted).")] = False,
    samples: Annotated[int, typer.Option(help="Seeded subset of training samples the loss is measured on.")] = 2000,
    labels: Annotated[str, typer.Option(help="Loss against the noisy labels trained on, or the true ones.")] = "noisy",
    seed: Annotated[int, typer.Option(help="Seed of the directions, the subset and the estimators.")] = 0,
    rho: Annotated[float, typer.Option(help="L2 radius for average- and worst-case sharpness.")] = 0.05,
    top_k: Annotated[int, typer.Option(help="Number of top Hessian eigenvalues (Lanczos).")] = 3,
    lanczos_iterations: Annotated[int, typer.Option(help="Most Lanczos steps (Hessian-vector products).")] = 30,
    tolerance: Annotated[float, typer.Option(help="Relative residual at which Lanczos stops.")] = 1e-3,
    hutchinson_samples: Annotated[int, typer.Option(help="Rademacher vectors for the Hessian trace.")] = 30,
    sharpness_samples: Annotated[int, typer.Option(help="Random directions for average-case sharpness.")] = 10,
    ascent_steps: Annotated[int, typer.Option(help="Gradient-ascent steps for worst-case sharpness.")] = 5,
    interpolate: Annotated[
        str | None, typer.Option(help="Also the loss on the line from each run to this run or checkpoint.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for PNGs and the resumable grid (default: RUN/analysis of the first).")
    ] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(help="Batch size of the loss and Hessian passes.")] = 256,
    json_output: JsonOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Loss landscape and sharpness: Hessian eigenvalues and trace, sharpness within rho, 1D/2D cuts.

    Seeded filter-normalised directions (Li et al. 2018), the same for every run given; PNG plots and JSON.

    Examples:

      $ sln analyze landscape runs/qs-ce runs/qs-sln
      $ sln analyze landscape runs/qs --grid --points 11
    """
    from sln_cli.analyze import commands

    results = commands.analyze_landscape(
        targets, checkpoint=checkpoint, interpolate=interpolate, out=out, device=device, progress=not json_output,
        overwrite=overwrite,
        weights=weights, points=points, span=span, grid=grid, samples=samples, labels=labels, seed=seed, rho=rho,
        top_k=top_k, lanczos_iterations=lanczos_iterations, tolerance=tolerance,
        hutchinson_samples=hutchinson_samples, sharpness_samples=sharpness_samples, ascent_steps=ascent_steps,
        batch_size=batch_size,
    )
    if json_output:
        _print_json(results[0] if len(results) == 1 else results)
    else:
        commands.render_landscape(results, _console())


@app.command()
@_reports_errors
def bench(
    data_dir: Annotated[
        Path | None, typer.Option(help="Real CIFAR-10 layout to benchmark on; synthetic data otherwise.")
    ] = None,
    device: DeviceOption = "auto",
    steps: Annotated[
        int | None,
        typer.Option(help="Training steps measured per contender and round (default 2 on a CPU, 50 on a GPU)."),
    ] = None,
    rounds: Annotated[int, typer.Option(help="Alternating rounds; each contender reports its median.")] = 5,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: torch's choice); 1 gives per-core figures.")
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option(help="clothing1m: measure the Clothing1M input pipelines (images/s per core) instead."),
    ] = None,
    images: Annotated[int, typer.Option(help="--pipeline: how many synthetic ~500×600 JPEGs to time.")] = 64,
    methods: Annotated[
        bool, _flag("--methods", help="Images/s of every training method against CE (quick start, WRN-28-2).")
    ] = False,
    # Internal knobs (tests run a tiny CNN at a small batch); the published figures use the defaults.
    model: Annotated[str, typer.Option(hidden=True)] = "wrn-28-2",
    eval_images: Annotated[int | None, typer.Option(hidden=True)] = None,
    batch_size: Annotated[int, typer.Option(hidden=True)] = 128,
    compare_determinism: Annotated[bool | None, _flag(
        "--compare-determinism/--no-compare-determinism",
        help="Also measure sln_fast with run.deterministic=false (default: on CUDA, where it changes the kernels).",
    )] = None,
    json_output: JsonOption = False,
) -> None:
    """How fast this hardware trains: sln beside a re-creation of the official loop and the hardware ceiling.

    Contenders (WRN-28-2, batch 128, one device, the same images) alternate in rounds; each reports its median.
    --pipeline clothing1m times the Clothing1M input pipelines instead (official, ours, ours on `sln cache`).

    Examples:

      $ sln bench --threads 1
      $ sln bench --data-dir data/CIFAR10 --json
    """
    from sln_cli.bench import report

    if threads is not None:
        if threads < 1:
            raise SlnError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    if methods:
        from sln_cli.bench.methods import benchmark_methods, render

        result = benchmark_methods(device=device, steps=2 if steps is None else steps, rounds=rounds,
                                   wrn=model == "wrn-28-2", console=_console(stderr=True))
        _print_json(result) if json_output else render(result, _console())
        return
    if pipeline is not None:
        if pipeline != "clothing1m":
            raise SlnError(f"--pipeline knows only clothing1m, got {pipeline!r}")
        if images < 1:
            raise SlnError(f"--images must be at least 1, got {images}")
        from sln_cli.bench.pipeline import benchmark_pipeline

        result = benchmark_pipeline(images=images, device=device)
        if json_output:
            _print_json(result)
        else:
            report.render_pipeline(result, _console())
        return
    from sln_cli.bench.training import BenchSettings, benchmark_training

    settings = BenchSettings(device=device, data_dir=data_dir, steps=steps, rounds=rounds, model=model,
                             eval_images=eval_images, batch_size=batch_size, nondeterministic=compare_determinism)
    result = benchmark_training(settings, console=_console(stderr=True))
    if json_output:
        _print_json(result)
    else:
        report.render_training(result, _console())


@app.command()
@_reports_errors
def cache(
    data_dir: Annotated[Path, typer.Option(help="The dataset folder to cache (Clothing1M or an image folder).")],
    out: Annotated[Path, typer.Option(help="The cache folder; train with --data-dir pointing here.")],
    size: Annotated[int, typer.Option(help="Shorter side of the cached images, in pixels.")] = 256,
    quality: Annotated[int, typer.Option(help="JPEG quality of re-encoded JPEGs (other formats stay lossless).")] = 95,
    workers: Annotated[int | None, typer.Option(help="Processes (default: one per core; 0 = this one).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Resize every image of a file-backed dataset once to a shorter side of 256, into a mirror of its folder.

    Other files (annotation lists) are copied: train with --data-dir pointing at the cache. Run again to resume.

    Examples:

      $ sln cache --data-dir data/Clothing1M --out data/Clothing1M-256
    """
    from sln_cli.data.cache import build_cache

    if workers is None:
        workers = os.cpu_count() or 1
    summary = build_cache(data_dir, out, shorter_side=size, quality=quality, workers=workers, quiet=json_output,
                          console=_console(stderr=True))
    if json_output:
        _print_json(summary)
    else:
        _console().print(f"{summary['resized']} images resized, {summary['copied']} files copied, "
                         f"{summary['skipped']} already cached, in {summary['seconds']:.1f} s: {summary['out']}")


@app.command()
@_reports_errors
def doctor(
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    json_output: Annotated[bool, _flag("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Check this machine: versions, device, capability and memory, then a few real training steps of every path.

    fp32, bf16, fp16 with the grad scaler, channels-last, torch.compile (CUDA graphs on a GPU), the EMA, label
    correction, a checkpoint and its exact resume, nvJPEG (on CUDA) and a one-process DDP group; each passes,
    fails or is skipped, with its images/s. Exit code 1 when any check fails.

    Examples:

      $ sln doctor
      $ sln doctor --device cuda --json
    """
    from sln_cli.bench import doctor as doctor_lib

    result = doctor_lib.diagnose(device)
    if json_output:
        _print_json(result)
    else:
        doctor_lib.render(result, _console())
    if not result["ok"]:
        raise typer.Exit(1)


def main() -> None:
    """The console script. Typer's own usage errors (an unknown option or command, a value of the wrong type or
    out of range) also end in one `error:` line and exit code 1, like every other user mistake."""
    try:
        code = app(standalone_mode=False)
    except _usage_errors() as exc:
        context = getattr(exc, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        _report(exc.format_message() + hint)
        sys.exit(1)
    except typer.Abort:  # end of input at a prompt
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Typer's usage-error base: `typer.TyperException` (Typer >= 0.20 vendors Click), else Click's own."""
    if hasattr(typer, "TyperException"):
        return (typer.TyperException,)
    import click  # older Typer is built on Click

    return (click.ClickException,)
