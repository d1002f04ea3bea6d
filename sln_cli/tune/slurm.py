"""`sln tune --launcher slurm`: worker jobs submitted through submitit, each popping the study's slots (as --jobs'
processes do here) from its storage (TUNE/study.db on a shared filesystem, or --storage). Jobs are not awaited;
a rerun reports the study and submits workers again only while slots wait."""

from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sln_cli import slurm as slurm_lib
from sln_cli.rundir import locks
from sln_cli.tune import study as study_lib
from sln_cli.tune import workflow
from sln_cli.tune.spec import TuneSpec


@dataclass(frozen=True)
class Submission:
    result: workflow.TuneResult  # the study as it stands now
    waiting: int  # slots no worker holds yet
    jobs: list[dict[str, Any]]  # {"job_id", "workers", "job"}: nothing when no slot waits


def submit(spec: TuneSpec, tune_dir: Path, *, storage: str | None, study_name: str | None, workers: int,
           options: slurm_lib.SlurmOptions) -> Submission:
    """Create or continue the study, then ceil(min(workers, waiting slots) / runs_per_job) jobs of runs_per_job
    worker processes each."""
    url, name, store = workflow.locate(tune_dir, storage=storage, study_name=study_name, workers=workers)
    executor = slurm_lib.executor(tune_dir, f"sln-tune-{name}", options)  # no submitit, no Slurm: nothing written
    store = workflow.establish(spec, tune_dir, url, name, store)
    recover_ended_jobs(tune_dir, store, name)
    waiting = waiting_slots(store, name)
    todo = min(workers, waiting)
    jobs = []
    for index in range(math.ceil(todo / options.runs_per_job)):
        count = min(options.runs_per_job, todo - index * options.runs_per_job)
        job = slurm_lib.submit_one(executor, run_job, spec, tune_dir, url, name, count, options.gpus_per_job)
        jobs.append({"job_id": str(job.job_id), "workers": count, "job": job})
    return Submission(workflow.results(spec, tune_dir, store, name, url), waiting, jobs)


def waiting_slots(store: Any, name: str) -> int:
    """Slots no worker has popped yet (a slot whose worker died is enqueued again by the next worker to start)."""
    optuna = study_lib.require_optuna()
    study = optuna.load_study(study_name=name, storage=store)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


# sacct's states of a job that has ended (submitit reports them as sacct prints them: "CANCELLED by 0", say)
ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "TIMEOUT")


def recover_ended_jobs(tune_dir: Path, store: Any, name: str) -> None:
    """Slots held by a Slurm job that has ended (timed out, preempted, cancelled) wait again: resumed, not lost."""
    optuna = study_lib.require_optuna()
    study = optuna.load_study(study_name=name, storage=store)
    study_lib.recover_interrupted(study, store, gone=lambda owner: job_ended(tune_dir, owner))


def job_ended(tune_dir: Path, owner: dict[str, Any]) -> bool:
    """Whether the trial's owner has ended: its Slurm job's state from sacct (via submitit), or, for a process
    outside Slurm, whether it still runs on this host. Unknown (no sacct, say) counts as still running."""
    job = owner.get("slurm_job")
    if not isinstance(job, str) or not job.replace("_", "").isdigit():
        return locks.is_gone(owner)
    import submitit

    try:
        state = submitit.SlurmJob(tune_dir / "slurm" / "%j", job).get_info(mode="force").get("State") or "UNKNOWN"
    except Exception:  # noqa: BLE001  sacct missing or failing: respect the trial, as locks do for other hosts
        return False
    return str(state).split()[0] in ENDED


def run_job(spec: TuneSpec, tune_dir: Path, url: str, name: str, workers: int, gpus: int) -> int:
    """Inside the job: `workers` worker loops on the study, each on its own GPU of the job's (round robin) or on
    the CPUs; returns the slots still waiting when they end."""
    if workers == 1:
        _worker(spec, tune_dir, url, name, None)
    else:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_worker, args=(spec, tune_dir, url, name, i % gpus if gpus else None))
                     for i in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    return waiting_slots(study_lib.open_storage(url), name)


def _worker(spec: TuneSpec, tune_dir: Path, url: str, name: str, gpu: int | None) -> None:
    if gpu is not None:  # before torch starts in this process: the trial's cuda:0 is the job's GPU `gpu`
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        parts = visible.split(",") if visible else [str(i) for i in range(gpu + 1)]
        os.environ["CUDA_VISIBLE_DEVICES"] = parts[gpu % len(parts)]
    workflow.work(spec, tune_dir, url, name, print)
