"""Label correction branches, not restarts: an LC run starts from its twin's full state at epoch `correction`.

Up to that epoch an SLN-MO-LC run and its twin (the same config without `sln.correction`) compute exactly the
same thing, because every epoch's randomness is seeded by (seed, epoch, purpose). The twin keeps its resumable
state at that epoch (`run.keep_state_at`, `checkpoints/state-XXXX.pt`); the LC run directory is made from it
(config, labels, the metrics up to that epoch, checkpoint) and then resumed with `sln train --resume`.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from sln_cli.labels import noisy_val
from sln_cli.rundir import ownership, runs
from sln_cli.rundir.files import atomic_write_json, atomic_write_text
from sln_cli.rundir.keep import best_file, copy_file, state_file
from sln_cli.rundir.locks import lock_directory
from sln_cli.sweep.spec import Cell


def can_branch(cell: Cell, twin: Cell) -> bool:
    return cell.correction is not None and state_file(twin.run_dir, cell.correction).is_file()


def branch(cell: Cell, twin: Cell, *, runtime: dict[str, Any]) -> None:
    """Make `cell.run_dir` the LC run stopped after epoch `correction`, from `twin`'s kept state.

    `runtime` holds the run.* keys the sweep sets for this launch (cpu_threads). The config is written last:
    a kill midway leaves a directory without one, which the next sweep makes again.
    """
    assert cell.correction is not None, "only LC cells branch (can_branch)"
    epoch = cell.correction
    source = twin.run_dir
    overwrite = ownership.is_owned(cell.run_dir, "run") and not (cell.run_dir / runs.CONFIG).exists()
    ownership.claim_new_directory(cell.run_dir, "run", overwrite=overwrite)
    with lock_directory(cell.run_dir):
        for name in ("labels.csv", "labels.json"):
            copy_file(source / name, cell.run_dir / name)
        if (source / noisy_val.FILE).is_file():  # the resume that follows checks it against the LC run's config
            copy_file(source / noisy_val.FILE, cell.run_dir / noisy_val.FILE)
        copy_file(state_file(source, epoch), cell.run_dir / runs.CHECKPOINT)
        if best_file(source, epoch).is_file():
            copy_file(best_file(source, epoch), cell.run_dir / runs.BEST)
        rows = [r for r in runs.read_metrics(source) if r["epoch"] <= epoch]
        atomic_write_text(cell.run_dir / runs.METRICS, "".join(json.dumps(r) + "\n" for r in rows))
        meta = runs.read_meta(source)
        atomic_write_json(cell.run_dir / runs.META, {**meta, "branched_from": str(source), "branched_at": epoch})
        config = {**cell.config, "run": {**cell.config["run"], **runtime}}
        atomic_write_text(cell.run_dir / runs.CONFIG, yaml.safe_dump(config, sort_keys=False))

