"""The states a run keeps for label-correction branches (`run.keep_state_at`): their file names, and keeping them.

Training writes them (`keep_state`); a sweep's LC run starts from them (`sweep.branch`). Both live below training
and sweeps so that neither imports the other."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sln_cli.rundir import runs
from sln_cli.rundir.files import atomic_write


def state_file(run_dir: Path, epoch: int) -> Path:
    """The full resumable state a run keeps after `epoch` (run.keep_state_at)."""
    return run_dir / "checkpoints" / f"state-{epoch:04d}.pt"


def best_file(run_dir: Path, epoch: int) -> Path:
    """best.pt as it was after `epoch` (only with a validation split)."""
    return run_dir / "checkpoints" / f"state-{epoch:04d}-best.pt"


def copy_file(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically (a kill never leaves half a file)."""
    with open(source, "rb") as src, atomic_write(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def keep_state(epoch: int, run_dir: Path, epochs: tuple[int, ...], checkpoint: Callable[[], dict[str, Any]]) -> None:
    """Called by training after each epoch's files: at an epoch of `run.keep_state_at`, keep the full resumable
    state (`checkpoint()`, built only then) and best.pt as it stands, for the LC runs that branch here."""
    if epoch not in epochs:
        return
    runs.save_torch(state_file(run_dir, epoch), checkpoint())
    if (run_dir / runs.BEST).is_file():
        copy_file(run_dir / runs.BEST, best_file(run_dir, epoch))
