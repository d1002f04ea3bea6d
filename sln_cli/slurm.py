"""Slurm through submitit (the optional extra `slurm`), shared by `sln sweep` and `sln tune` `--launcher slurm`:
the options, the executor (refused in one line, before anything is written, without submitit or without
srun/sbatch), and one submission whose failure is a one-line error."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sln_cli.errors import SlnError

INSTALL = "--launcher slurm needs submitit: pip install 'sln-cli[slurm]'"


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_minutes: int = 24 * 60
    gpus_per_job: int = 1
    runs_per_job: int = 1
    cpus_per_job: int | None = None
    executor: Any = None  # tests: a submitit executor (LocalExecutor, or a fake) instead of Slurm's


def executor(folder: Path, name: str, options: SlurmOptions) -> Any:
    """submitit's Slurm executor with the options' resources; `options.executor` when given (tests)."""
    if options.runs_per_job < 1:
        raise SlnError(f"--runs-per-job must be at least 1, got {options.runs_per_job}")
    if options.gpus_per_job < 0:
        raise SlnError(f"--gpus-per-job must not be negative, got {options.gpus_per_job}")
    if options.executor is not None:
        return options.executor
    try:
        import submitit
    except ImportError:
        raise SlnError(INSTALL) from None
    if shutil.which("srun") is None or shutil.which("sbatch") is None:  # submitit's own check raises RuntimeError
        raise SlnError("--launcher slurm needs Slurm's srun and sbatch on the PATH; run it on a Slurm login node, "
                       "or use --launcher local")
    try:
        slurm = submitit.AutoExecutor(folder=folder / "slurm" / "%j", cluster="slurm")
    except RuntimeError as exc:
        raise SlnError(f"--launcher slurm: submitit cannot use Slurm here ({str(exc)[:160]}); run it on a Slurm "
                       "login node, or use --launcher local") from None
    slurm.update_parameters(**parameters(name, options))
    return slurm


def parameters(name: str, options: SlurmOptions) -> dict[str, Any]:
    """submitit's parameters for one job: a node, a task, the GPUs, CPUs for CPU jobs, a signal before the limit."""
    result: dict[str, Any] = {"timeout_min": options.time_minutes, "nodes": 1, "tasks_per_node": 1,
                              "gpus_per_node": options.gpus_per_job, "name": name, "slurm_signal_delay_s": 120}
    if options.partition:
        result["slurm_partition"] = options.partition
    if options.cpus_per_job:
        result["cpus_per_task"] = options.cpus_per_job
    elif options.gpus_per_job == 0:
        result["cpus_per_task"] = max(1, options.runs_per_job)
    return result


def submit_one(slurm: Any, function: Any, *args: Any) -> Any:
    """executor.submit(function, *args); sbatch's failure (submitit raises its own types) is one line."""
    try:
        return slurm.submit(function, *args)
    except Exception as exc:  # noqa: BLE001
        raise SlnError(f"submitting to Slurm failed ({exc.__class__.__name__}: {str(exc)[:200]}); "
                       "is this a Slurm login node?") from exc
