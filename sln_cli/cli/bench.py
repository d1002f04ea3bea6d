"""`sln bench` (how fast this hardware trains, against the official loop and the ceiling) and `sln doctor` (a few
real steps of every training path on this machine)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sln_cli.cli.app import DeviceOption, JsonOption, app, console, emit, flag, value


class Pipeline(str, Enum):  # sln_cli.bench.dispatch.PIPELINES
    clothing1m = "clothing1m"


@app.command()
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
        Pipeline | None,
        typer.Option(help="clothing1m: measure the Clothing1M input pipelines (images/s per core) instead."),
    ] = None,
    images: Annotated[int, typer.Option(help="--pipeline: how many synthetic ~500×600 JPEGs to time.")] = 64,
    methods: Annotated[
        bool, flag("--methods", help="Images/s of every training method against CE (quick start, WRN-28-2).")
    ] = False,
    compare_determinism: Annotated[bool | None, flag(
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
    from sln_cli.bench import dispatch

    request = dispatch.BenchRequest(device=device, data_dir=data_dir, steps=steps, rounds=rounds, threads=threads,
                                    pipeline=value(pipeline), images=images, methods=methods,
                                    compare_determinism=compare_determinism)
    kind, result = dispatch.run(request, console=console(stderr=True))
    if json_output:
        emit(result)
    else:
        dispatch.render(kind, result, console())


@app.command()
def doctor(
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
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
        emit(result)
    else:
        doctor_lib.render(result, console())
    if not result["ok"]:
        raise typer.Exit(1)
