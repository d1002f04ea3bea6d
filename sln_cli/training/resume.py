"""`--resume`: a run continues with its own saved config, and only where and how fast it runs may change (the
policy every caller gets, `sln train` and library code alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sln_cli.errors import SlnError

# where and how fast it runs may change, and logging may be switched on; anything else would be another run
RESUMABLE_KEYS = frozenset({"optim.epochs", "run.device", "run.out", "run.deterministic", "run.tensorboard",
                            "run.memory_check"})


def saved_config(run_dir: Path, preset: str | None = None) -> tuple[str, dict[str, Any]]:
    """The run's config.yaml (its path, as the preset it came from, and its tree with past defaults filled in)."""
    from sln_cli import config as config_lib
    from sln_cli.rundir import runs
    from sln_cli.rundir.experiments import with_past_defaults

    if preset is not None:
        raise SlnError("--resume continues a run with its own config; drop --preset")
    runs.check_run_dir(run_dir)
    tree = runs.relocate(config_lib.load_yaml(run_dir / runs.CONFIG), run_dir)
    return str(run_dir / runs.CONFIG), with_past_defaults(tree)


def check_changes(saved: dict[str, Any], config: Any) -> None:
    """A resumed run may only train longer or move to another device (`RESUMABLE_KEYS`); anything else would be
    another run."""
    from sln_cli import config as config_lib

    now = config_lib.to_dict(config)
    # keys newer than the saved run (its config.yaml lacks them) count as their defaults
    # at the epochs asked for now (allowed to change): a saved correction past its old last epoch may now run
    sections = {"optim": {**(saved.get("optim") or {}), "epochs": config.optim.epochs}}
    before = config_lib.to_dict(config_lib.resolve({**saved, **sections}))
    changed = [
        f"{section}.{key}" for section, values in now.items() if isinstance(values, dict)
        for key, value in values.items()
        if f"{section}.{key}" not in RESUMABLE_KEYS and before.get(section, {}).get(key) != value
    ]
    if changed:
        raise SlnError(f"cannot change {', '.join(changed)} when resuming; start a new run instead")
