"""`sln train`: resolve the config (preset < --set < flags, or a run's own config on --resume), then train."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sln_cli.cli.app import app, console, flag, is_main_process, path_text


@app.command()
def train(
    preset: Annotated[str | None, typer.Option(help="Preset name (see `sln presets`) or a YAML file.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs (optim.epochs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (run.seed); label noise has noise.seed.")] = None,
    sigma: Annotated[float | None, typer.Option(help="SLN noise std (sln.sigma); 0 = plain cross-entropy.")] = None,
    method: Annotated[
        str | None, typer.Option(help="Training method (method.name): sln, ce, gce, ... (see `sln methods`).")
    ] = None,
    sam: Annotated[
        bool | None, flag("--sam", help="Sharpness-aware minimisation on top of the method (method.sam).")
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
        bool | None, flag("--record-probs", help="Save the epoch-averaged softmax (probs.npy).")
    ] = None,
    tensorboard: Annotated[
        bool | None, flag("--tensorboard", help="Also log to TensorBoard in RUN/tensorboard (run.tensorboard).")
    ] = None,
    print_config: Annotated[bool, flag(help="Print the resolved config and exit.")] = False,
    quiet: Annotated[bool, flag(help="No progress output; only errors and the final table.")] = False,
    overwrite: Annotated[
        bool, flag(help="Replace the run in --out: only a directory sln marked as a run, only its files.")
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
    from sln_cli.training import resume as resume_lib

    flags = {
        "optim.epochs": epochs, "run.seed": seed, "sln.sigma": sigma, "method.name": method, "method.sam": sam,
        "noise.rate": noise_rate, "noise.labels": path_text(labels), "data.data_dir": path_text(data_dir),
        "run.device": device, "run.precision": precision, "run.out": path_text(out), "data.train_limit": train_limit,
        "data.test_limit": test_limit, "data.noisy_val": noisy_val, "run.record_probs": record_probs,
        "run.tensorboard": tensorboard,
    }
    if resume is not None:
        preset, base = resume_lib.saved_config(resume, preset)
    else:
        base = presets_lib.load(preset) if preset is not None else {}
    config = config_lib.resolve(base, set_ or [], flags)
    if print_config:
        print(config_lib.dump(config), end="")
        return
    if resume is not None:
        resume_lib.check_changes(base, config)

    from sln_cli.render.progress import summary_table
    from sln_cli.training.train import train as train_lib

    summary = train_lib(config, preset=preset, resume=resume, quiet=quiet, overwrite=overwrite)
    if is_main_process():
        console().print(summary_table(summary))
