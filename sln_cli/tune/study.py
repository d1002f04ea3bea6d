"""The Optuna study behind `sln tune`: one trial slot per budgeted trial, enqueued once; workers (processes or
machines on one storage) pop the slots atomically, so N slots run N trials with no duplicates; a trial whose
process died is failed and its slot enqueued again, to resume the same run directory."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sln_cli.errors import Interrupted, SlnError
from sln_cli.rundir import locks
from sln_cli.tune.spec import TuneSpec

try:
    import fcntl
except ImportError:  # Windows: processes must not start one tune's study at the same moment there
    fcntl = None  # type: ignore[assignment]

SPEC_ATTR = "sln_tune_spec"  # the study's spec, so that two tunes with different specs never share one
STUDY_FILE, SETUP_LOCK = "study.db", ".tune-setup.lock"


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SlnError("sln tune needs Optuna: pip install 'sln-cli[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(tune_dir: Path, storage: str | None) -> str:
    return storage if storage is not None else f"sqlite:///{(tune_dir / STUDY_FILE).resolve()}"


def open_storage(url: str) -> Any:
    optuna = require_optuna()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # processes wait on SQLite's lock
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as exc:  # sqlalchemy's errors vary by backend: any failure to open is the user's URL
            raced = ("already exists", "UNIQUE constraint failed", "duplicate key")
            if any(text in str(exc) for text in raced) and attempt < 2:  # processes starting together raced to
                time.sleep(0.2)  # make the tables (Optuna checks, then creates): they exist now
                continue
            raise SlnError(f"cannot open the study storage {url}: {str(exc).splitlines()[0][:200]}") from None
    raise AssertionError("unreachable")


def load(spec: TuneSpec, storage: Any, name: str, epochs: int) -> Any:
    """The study with its sampler and (with --prune) median pruner."""
    optuna = require_optuna()
    sampler = optuna.samplers.TPESampler(seed=spec.seed)
    # the first two trials run whole; then a trial below the median of the others at the same epoch stops, once a
    # quarter of its epochs is done (early epochs of noisy-label training rank sigmas poorly)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, epochs // 4)) if spec.prune \
        else optuna.pruners.NopPruner()
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


@contextlib.contextmanager
def setup_lock(tune_dir: Path) -> Iterator[None]:
    """Processes that start one tune together create and fill its study one at a time."""
    fd = os.open(tune_dir / SETUP_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create(spec: TuneSpec, storage: Any, name: str, tune_dir: Path) -> None:
    """Create the study and enqueue its slots, or check that an existing one was made with this spec."""
    optuna = require_optuna()
    with setup_lock(tune_dir):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
        saved = study.user_attrs.get(SPEC_ATTR)
        if saved is not None:
            if saved != spec.fingerprint():
                differ = _differences(json.loads(saved), spec.as_dict())
                raise SlnError(f"the study {name!r} was made by a tune with another spec (it differs in "
                               f"{', '.join(differ)}); give another --out or --study, or the same flags")
            return
        if study.trials:
            raise SlnError(f"the study {name!r} already holds trials that sln tune did not make; give another --study")
        for slot in range(spec.trials):
            study.enqueue_trial(spec.point(slot), user_attrs={"slot": slot})
        study.set_user_attr(SPEC_ATTR, spec.fingerprint())


def _trial_id(study: Any, storage: Any, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def work(study: Any, storage: Any, run_trial: Callable[[Any], float], log: Callable[[str], None]) -> None:
    """Run slots until none waits: pop one atomically, run it, tell the study its value or why it stopped."""
    optuna = require_optuna()
    while True:
        recover_interrupted(study, storage)
        trial = _pop(study, storage)
        if trial is None:
            return
        trial.set_user_attr("owner", owner_record())
        try:
            value = run_trial(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log(f"trial {trial.number} (slot {trial.user_attrs['slot']}): pruned")
            continue
        except Interrupted:  # Ctrl-C stops the tune; the trial stays RUNNING until a rerun finds its process gone
            raise
        except SlnError as exc:  # a non-finite loss, say: the trial fails with its reason, the tune goes on
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log(f"trial {trial.number} (slot {trial.user_attrs['slot']}): failed: {exc}")
            continue
        study.tell(trial, value)
        log(f"trial {trial.number} (slot {trial.user_attrs['slot']}): {value:.4f}")


def owner_record() -> dict[str, Any]:
    """The process running a trial; inside a Slurm job also the job's id, so that `sln tune --launcher slurm` can
    ask Slurm (from another host) whether the job has ended."""
    job = os.environ.get("SLURM_JOB_ID")
    return {**locks.process_record(), **({"slurm_job": job} if job else {})}


def recover_interrupted(study: Any, storage: Any, gone: Callable[[dict[str, Any]], bool] = locks.is_gone) -> None:
    """A RUNNING trial whose process is gone (killed) fails, and its slot is enqueued again with the same values:
    the trial that pops it resumes the slot's run directory. Only one process wins the state change."""
    optuna = require_optuna()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get("owner")
        if not isinstance(owner, dict) or not gone(owner):
            continue
        trial_id = _trial_id(study, storage, trial.number)
        try:  # the reason first (a finished trial takes no more attributes), then the state, which one process wins
            storage.set_trial_user_attr(trial_id, "error", "interrupted: its process ended; the slot resumes")
            if not storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process recovered it first
        study.enqueue_trial(dict(trial.params), user_attrs={"slot": trial.user_attrs["slot"],
                                                             "resumes": trial.number})


def _pop(study: Any, storage: Any) -> Any | None:
    """The next waiting slot as a trial, or None: unlike `Study.ask`, never a new trial beyond the budget."""
    optuna = require_optuna()
    for waiting in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        trial_id = _trial_id(study, storage, waiting.number)
        try:  # the storage sets RUNNING only if the trial still waits: one process wins each slot (as Study.ask)
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.RUNNING):
                return optuna.Trial(study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return sorted(key for key in set(saved) | set(now) if saved.get(key) != now.get(key)) or ["its details"]
