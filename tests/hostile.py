"""Helpers of the hostile-input suite (`tests/test_hostile_*.py`): run a command, snapshot every file around it,
and check the one promise every case shares: exit code, one `error:` line, no traceback, nothing touched."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from sln_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    crashed: BaseException | None = None  # an exception that escaped the CLI (CliRunner only)


def sln(*args: str) -> Outcome:
    """The CLI in this process (fast)."""
    result = runner.invoke(app, [str(a) for a in args])
    escaped = None if result.exception is None or isinstance(result.exception, SystemExit) else result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr, escaped)


def sln_process(*args: str, cwd: Path | None = None, preexec=None, env: dict | None = None,
                timeout: float = 300) -> Outcome:
    """The CLI in a fresh process (for resource limits, other users, signals)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    environment.pop("SLN_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "sln_cli", *map(str, args)], cwd=cwd, env=environment,
                          preexec_fn=preexec, capture_output=True, text=True, timeout=timeout)
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(outcome: Outcome, *, exit_code: int = 1, mentions: str | None = None) -> str:
    """Exit code, exactly one `error: ...` line on stderr, no traceback anywhere; returns the line."""
    assert outcome.crashed is None, f"an exception escaped: {outcome.crashed!r}"
    assert outcome.exit_code == exit_code, (outcome.exit_code, outcome.stderr[-2000:])
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr[-2000:]
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert "weights_only=False" not in lines[0] and "`weights_only` set to `False`" not in lines[0]
    if mentions is not None:
        assert mentions in lines[0], lines[0]
    return lines[0]


def snapshot(*roots: Path) -> dict[str, bytes | str]:
    """Every file (bytes), link (target) and folder under `roots`, to compare before and after a command."""
    files: dict[str, bytes | str] = {}
    for root in roots:
        for path in sorted([root, *root.rglob("*")]) if root.exists() else []:
            if path.is_symlink():
                files[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                files[str(path)] = path.read_bytes()
            elif path.is_dir():
                files[str(path)] = "<dir>"
    return files


class RunsCode:
    """Unpickled without restriction, this writes `marker` (through os.system): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def write_hostile_pt(path: Path, marker: Path, *, shape: str = "checkpoint") -> None:
    """A .pt file that looks like what sln expects (`checkpoint`: model/ema dicts; `cifar_n`: label arrays) but
    whose unpickling would run code."""
    import torch

    evil = RunsCode(marker) if shape != "exec" else RunsExec(marker)
    if shape == "cifar_n":
        content = {"clean_label": evil, "worse_label": [0, 1]}
    elif shape == "pickle":  # not even torch's zip format: a bare pickle stream
        path.write_bytes(pickle.dumps({"model": evil}))
        return
    else:
        content = {"model": {"weight": evil}, "ema": {"weight": torch.zeros(1)}, "epoch": 1}
    torch.save(content, path)


def assert_untouched(before: dict[str, bytes | str], after: dict[str, bytes | str]) -> None:
    """Every file that was there is byte-identical, none vanished, and nothing new but folders and markers."""
    changed = [path for path, content in before.items() if after.get(path) != content]
    assert not changed, f"changed or removed: {changed}"
    new = [path for path, content in after.items() if path not in before and content != "<dir>"
           and not path.endswith("/.sln-owned")]
    assert not new, f"left behind: {new}"


def write_run(path: Path, overrides: tuple[str, ...] = (), *, acc: float = 0.8, epochs: int = 2) -> Path:
    """A finished run directory written by hand (no training): config.yaml, metrics.jsonl, summary.json, meta.json,
    as `sln train` writes them, for the report and the sweep to read back."""
    import json

    import yaml

    from sln_cli import config as config_lib
    from sln_cli import presets

    tree = config_lib.to_dict(config_lib.resolve(presets.load("quickstart"), [f"optim.epochs={epochs}", *overrides]))
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    rows = [{"epoch": e, "test_acc": acc, "test_acc_ema": acc + 0.05, "test_loss": 1.0, "test_loss_ema": 0.9,
             "memorized": 0.1 * e} for e in range(1, epochs + 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(json.dumps({"epochs": epochs, "best": None, "last": rows[-1]}))
    (path / "meta.json").write_text(json.dumps({"working_directory": str(path.parent), "seed": 0}))
    return path


@contextmanager
def within(seconds: int = 20) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the block takes longer than `seconds`, e.g. blocked on a FIFO."""
    def expire(*_):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
