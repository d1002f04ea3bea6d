"""Run directories: the resolved config, provenance, per-epoch metrics, atomic checkpoints, summary.

Layout of `runs/<preset>-<timestamp>/` (marked `.sln-owned`; `.sln.lock` while a process trains it):
    config.yaml      resolved config; `sln train --preset runs/X/config.yaml` repeats the run
    meta.json        versions, device, git SHA, command line, seed
    labels.csv/.json the exact noisy labels trained on (and their manifest)
    metrics.jsonl    one JSON object per epoch
    checkpoint.pt    latest resumable state (written atomically)
    final.pt         final weights of the network and of the EMA network
    best.pt          weights of the best validation epoch (a validation split, or data.noisy_val's noisy one)
    noisy_val.csv    data.noisy_val: positions of the held-out samples in the training split
    checkpoints/     every Nth epoch's weights (run.keep_checkpoints)
    probs.npy        per-sample softmax averaged over epochs (run.record_probs)
    summary.json     last and best epochs
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sln_cli import __version__
from sln_cli.errors import SlnError
from sln_cli.rundir import readers, torchfile
from sln_cli.rundir.files import atomic_write, atomic_write_json, atomic_write_text
from sln_cli.rundir.locks import lock_directory
from sln_cli.rundir.ownership import claim_new_directory, remove_stale_temporaries

CONFIG, META, METRICS, SUMMARY, PROBS = "config.yaml", "meta.json", "metrics.jsonl", "summary.json", "probs.npy"
CHECKPOINT, FINAL, BEST = "checkpoint.pt", "final.pt", "best.pt"


def run_dir_path(out: str | None, preset: str | None, root: Path = Path("runs")) -> Path:
    """Where a new run goes: `out`, or a fresh `runs/<preset>-<timestamp>` (claimed later by `holding_run`)."""
    if out is not None:
        return Path(out)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(preset).stem if preset else "default"
    path, n = root / f"{name}-{stamp}", 1
    while path.exists():
        path, n = root / f"{name}-{stamp}-{n}", n + 1
    return path


@contextlib.contextmanager
def holding_run(run_dir: Path, *, new: bool, overwrite: bool = False) -> Iterator[None]:
    """Hold the run's lock for the block. A `new` run first claims its directory under that lock: a fresh or
    empty one, or with `overwrite` one sln marked as a run, of which only sln's files are removed."""
    if new:
        if os.path.lexists(run_dir) and not run_dir.is_dir():
            raise SlnError(f"{run_dir} exists and is not a directory; choose another --out")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SlnError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from exc
    elif not run_dir.is_dir():
        raise SlnError(f"{run_dir} is not a directory; give a run directory made by `sln train`")
    with lock_directory(run_dir, what="run"):
        if new:
            claim_new_directory(run_dir, "run", overwrite=overwrite)
        else:  # what killed atomic writes left: ours, and no write is in flight while we hold the lock
            remove_stale_temporaries(run_dir, "run")
        yield


def check_run_dir(path: Path) -> None:
    """A directory `--resume` or `sln evaluate` can use: it must hold a config and a checkpoint."""
    if not path.is_dir():
        raise SlnError(f"{path} is not a directory; give a run directory made by `sln train`")
    if not (path / CONFIG).is_file():
        raise SlnError(f"{path} is not a run directory (no {CONFIG}); give a directory made by `sln train`")


def write_meta(run_dir: Path, *, device: str, seed: int, extra: dict[str, Any] | None = None) -> None:
    import numpy
    import torchvision

    meta = {
        "sln_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": device,
        "device_name": _device_name(device),
        "git_sha": _git_sha(),
        "command_line": sys.argv,
        "working_directory": os.getcwd(),  # relative paths in config.yaml are relative to it
        "seed": seed,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        **(extra or {}),
    }
    atomic_write_json(run_dir / META, meta)


_PATH_KEYS = (("data", "data_dir"), ("noise", "labels"), ("noise", "probs"), ("noise", "matrix"),
              ("noise", "source_data_dir"))


def relocate(tree: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A run's config tree with each relative path that is missing from here but present from the
    run's working directory (meta.json) made absolute, so a run can be used from any directory."""
    try:
        ran_in = Path(read_meta(run_dir)["working_directory"])
    except (SlnError, KeyError, TypeError):
        return tree
    tree = {key: dict(value) if isinstance(value, dict) else value for key, value in tree.items()}
    for section, key in _PATH_KEYS:
        value = tree.get(section, {}).get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists() \
                and (ran_in / value).exists():
            tree[section][key] = str(ran_in / value)
    return tree


def read_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json: a JSON object of at most 1 MiB (it is ~1 KiB), read by `readers.read_json`."""
    return readers.mapping(readers.read_json(run_dir / META, what="run's meta.json"), f"{run_dir / META}")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json, checked: None when the run has not finished (no file); an SlnError when it is damaged."""
    path = run_dir / SUMMARY
    if not os.path.lexists(path):
        return None
    summary = readers.mapping(readers.read_json(path, what="run's summary.json"), str(path))
    readers.integer(summary.get("epochs"), f"{path}: epochs", low=0, high=10**9)
    if summary.get("best") is not None:
        readers.mapping(summary["best"], f"{path}: best")
        for key, value in summary["best"].items():
            readers.number(value, f"{path}: best.{key}", allow_none=True)
    return summary


def method_section(tree: dict[str, Any]) -> dict[str, Any]:
    """A run config's `method` section with its unset (null or false) keys dropped; {"name": "sln"} for runs made
    before methods existed (an old run directory stays readable), so that runs made before and after compare equal."""
    method = tree.get("method")
    section = method if isinstance(method, dict) else {"name": "sln"}
    return {key: value for key, value in section.items() if value is not None and value is not False}


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """One line, in one write: a kill leaves the line whole or cut off at the end (read_metrics drops it)."""
    data = (json.dumps(row) + "\n").encode("utf-8")
    fd = os.open(run_dir / METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write (disk full?)", str(run_dir / METRICS))
    finally:
        os.close(fd)


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Replace metrics.jsonl atomically (on resume: the rows the checkpoint agrees with)."""
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl, streamed and checked (readers.read_jsonl: regular file, size and line caps);
    a last line cut off by a kill is dropped (the epoch it logged is trained again on resume)."""
    path = run_dir / METRICS
    if not os.path.lexists(path):
        return []
    return [check_metrics_row(row, f"{path} line {number}")
            for number, row in readers.read_jsonl(path, what="metrics file")]


def check_metrics_row(row: Any, where: str) -> dict[str, Any]:
    """A metrics row as sln writes it: an object with an integer `epoch` >= 1 and numbers (or null) elsewhere."""
    if not isinstance(row, dict) or isinstance(row.get("epoch"), bool) or not isinstance(row.get("epoch"), int):
        raise SlnError(f"{where} is not a metrics row (an object with an epoch): the file was edited or damaged")
    readers.integer(row["epoch"], f"{where}: epoch", low=1, high=10**9)
    for key, value in row.items():
        readers.number(value, f"{where}: {key}", allow_none=True)
    return row


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """On resume, drop the lines of epochs after the checkpoint (they will be trained again)."""
    write_metrics(run_dir, [row for row in read_metrics(run_dir) if row["epoch"] <= last_epoch])


def save_torch(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    if not path.is_file():
        raise SlnError(f"{path} does not exist; give a run directory or checkpoint written by `sln train`")
    return torchfile.load(path, what="sln checkpoint", map_location=map_location)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()
