"""`sln sweep --launcher slurm`: the same runs submitted as Slurm jobs through submitit (optional extra `slurm`).

Each job runs a few cells with the local scheduler on the job's own GPUs (or CPUs); a label-correction run
travels in the same job as its twin, so it can branch from the twin's kept state. Every run is resumable, so
a preempted or timed-out job is resubmitted by running the same `sln sweep` command again.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import yaml

from sln_cli import slurm as slurm_lib
from sln_cli.errors import SlnError
from sln_cli.rundir import ownership
from sln_cli.rundir.files import atomic_write_text
from sln_cli.rundir.locks import lock_directory
from sln_cli.sweep import status as status_lib
from sln_cli.sweep.live import SweepDisplay
from sln_cli.sweep.runner import Options, Scheduler
from sln_cli.sweep.spec import Sweep

INSTALL = slurm_lib.INSTALL


def submit(sweep: Sweep, sweep_dir: Path, options: Any, *, retries: int = 1) -> list[dict[str, Any]]:
    """Submit one job per group of unfinished runs; returns [{"job_id", "runs"}] (the jobs are not awaited).

    `options` is a `sln_cli.slurm.SlurmOptions`; its `executor` (tests: submitit's LocalExecutor) replaces the
    Slurm executor."""
    executor = slurm_lib.executor(sweep_dir, f"sln-{sweep.name}", options)
    status_lib.table(sweep, sweep_dir)  # a run directory holding another config: refused before anything is written
    if not ownership.is_owned(sweep_dir, "sweep"):
        ownership.claim_new_directory(sweep_dir, "sweep", overwrite=False)
    submitted = []
    with lock_directory(sweep_dir, what="sweep"):  # one submitter at a time; the jobs lock their own runs
        atomic_write_text(sweep_dir / status_lib.SWEEP_FILE,
                          yaml.safe_dump({"name": sweep.name, **sweep.spec}, sort_keys=False))
        todo = [row["name"] for row in status_lib.table(sweep, sweep_dir) if row["status"] != "done"]
        for names in groups(sweep, todo, options.runs_per_job):
            job = slurm_lib.submit_one(executor, run_job, sweep, sweep_dir, names, options.gpus_per_job, retries)
            submitted.append({"job_id": str(job.job_id), "runs": names, "job": job})
    return submitted


def groups(sweep: Sweep, names: list[str], runs_per_job: int) -> list[list[str]]:
    """Chains (a twin and the LC runs that branch from it) packed into jobs of about `runs_per_job` runs."""
    if runs_per_job < 1:
        raise SlnError(f"--runs-per-job must be at least 1, got {runs_per_job}")
    chains: dict[str, list[str]] = {}
    for name in names:
        twin = sweep.cell(name).twin
        head = twin if twin in names else name
        chains.setdefault(head, []).append(name)
    jobs: list[list[str]] = []
    for chain in chains.values():
        if jobs and len(jobs[-1]) + len(chain) <= runs_per_job:
            jobs[-1] += chain
        else:
            jobs.append(list(chain))
    return jobs


def run_job(sweep: Sweep, sweep_dir: Path, names: list[str], gpus: int, retries: int) -> dict[str, Any]:
    """Inside the job: the local scheduler over `names`, sharing the job's GPUs (cuda:0..) or its CPUs."""
    devices = tuple(f"cuda:{i}" for i in range(gpus)) or ("cpu",)
    options = Options(jobs=len(names), devices=devices, per_device=max(1, math.ceil(len(names) / len(devices))),
                      retries=retries)
    from rich.console import Console

    display = SweepDisplay(Console(file=sys.stdout, force_terminal=False))
    return Scheduler(sweep, sweep_dir, options, display, names=names).run()
