"""Races and kills: one process per run at a time, and a run killed at random moments (during checkpoint writes
and during resume included) ends with exactly the metrics and weights of a run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny, untimed_metrics
from tests.hostile import ROOT, assert_one_line_error, assert_untouched, sln, snapshot

TINY = [*tiny(batch_size=25), "--set", "sln.correction=3"]  # LC from epoch 4: targets resume
TINY_NO_LC = [*TINY, "--set", "sln.correction=null"]  # one epoch: a correction after epoch 3 is refused

HOLD = """
import sys, time
from pathlib import Path
from sln_cli.rundir.locks import lock_directory
with lock_directory(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(run: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_run_in_use_is_refused_naming_its_holder(tmp_path):
    run = tmp_path / "run"
    assert sln("train", *TINY_NO_LC, "--epochs", "1", "--out", run).exit_code == 0
    holder = _hold(run)
    try:
        before = snapshot(tmp_path)
        for args in (["train", "--resume", run, "--epochs", "2", "--quiet"],
                     ["train", *TINY_NO_LC, "--epochs", "1", "--out", run, "--overwrite"]):
            assert_one_line_error(sln(*args), mentions=f"in use by process {holder.pid} on host {socket.gethostname()}")
            assert_untouched(before, snapshot(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    outcome = sln("train", "--resume", run, "--epochs", "2", "--quiet")  # the killed holder's lock is stale
    assert outcome.exit_code == 0, outcome.stderr


def _start(*args: str, kill_in_checkpoint: int | None = None) -> subprocess.Popen:
    """`sln ARGS` in a child process; with `kill_in_checkpoint=E` it SIGKILLs itself inside epoch E's checkpoint
    write (tests/kill_in_checkpoint.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    program = ["-m", "sln_cli"] if kill_in_checkpoint is None else \
        [str(ROOT / "tests" / "kill_in_checkpoint.py"), str(kill_in_checkpoint)]
    return subprocess.Popen([sys.executable, *program, *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_resumes_of_one_run_never_interleave(tmp_path):
    """A second `--resume` while the first holds the run is refused, whatever the timing: the first trains for
    far longer than the second needs to reach the lock, and is stopped with Ctrl-C only after the second ended."""
    run = tmp_path / "run"
    assert sln("train", *TINY_NO_LC, "--epochs", "1", "--out", run).exit_code == 0
    first = _start("train", "--resume", run, "--epochs", "100000", "--quiet")
    while not (run / ".sln.lock").exists() and first.poll() is None:
        time.sleep(0.01)
    second = sln("train", "--resume", run, "--epochs", "3", "--quiet")  # without a lock this would train, and end
    assert first.poll() is None, first.stderr.read()  # still training: the second met its lock
    first.send_signal(signal.SIGINT)  # Ctrl-C: the first stops at its last checkpoint
    assert first.wait(timeout=300) == 130, first.stderr.read()
    assert_one_line_error(second, mentions="in use by process")
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 1


def _final(run: Path) -> tuple[list[dict], dict]:
    return untimed_metrics(run), torch.load(run / "final.pt", weights_only=True)


def _kill_when(process: subprocess.Popen, ready, delay: float) -> str:
    """SIGKILL `process` `delay` s after `ready()` first holds (or at once if it ends first); says what it hit."""
    while not ready() and process.poll() is None:
        time.sleep(0.002)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.002)
    if process.poll() is not None:  # ended by itself, or by its own SIGKILL (tests/kill_in_checkpoint.py)
        return "killed" if process.returncode == -signal.SIGKILL else "finished"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return "killed"


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_a_run_killed_at_random_moments_ends_as_if_never_interrupted(tmp_path):
    """SIGKILL inside checkpoint writes (of label-correction epochs too), during resume and at seeded random
    delays; then the final metrics (timings aside) and weights must equal those of an uninterrupted run."""
    epochs = ["--epochs", "6"]
    reference = tmp_path / "reference"
    assert sln("train", *TINY, *epochs, "--out", reference).exit_code == 0
    run, rng = tmp_path / "run", np.random.default_rng(0)
    metrics = run / "metrics.jsonl"  # one line per checkpointed epoch: the checkpoint is written first
    plans = [  # (what, which checkpoint must already be saved, the epoch whose checkpoint write it dies in, delay)
        ("inside the checkpoint write of epoch 2", 1, 2, 0.0),
        ("during resume", 0, None, 0.02),
        ("inside the checkpoint write of epoch 5 (label correction)", 4, 5, 0.0),
        ("at a random moment", 0, None, 0.5),
        ("inside the checkpoint write of epoch 6", 5, 6, 0.0),
    ]
    hits = []
    for number, (what, saved, inside, delay) in enumerate(plans):
        args = ["train", *TINY, *epochs, "--out", run] if number == 0 else ["train", "--resume", run, "--quiet"]
        left = set(run.glob(".checkpoint.pt.*.tmp"))

        def writing(left=left) -> bool:  # a checkpoint write of this process has begun and not yet ended
            return bool(set(run.glob(".checkpoint.pt.*.tmp")) - left)

        def ready(saved=saved, inside=inside) -> bool:  # a process killing itself in a write is left to it
            return inside is None and (run / ".sln.lock").exists() and _lines(metrics) >= saved

        outcome = _kill_when(_start(*args, kill_in_checkpoint=inside), ready, rng.uniform(0, delay))
        hits.append((what, outcome, _lines(metrics), writing()))
    finished = sln("train", "--resume", run, "--quiet")
    assert finished.exit_code == 0, finished.stderr
    rows, weights = _final(run)
    expected_rows, expected_weights = _final(reference)
    assert rows == expected_rows, hits
    for network in ("model", "ema"):
        for name, tensor in expected_weights[network].items():
            assert torch.equal(weights[network][name], tensor), (network, name, hits)
    assert [p.name for p in run.rglob("*.tmp")] == []  # what the kills left was cleared on resume
    killed = [hit for hit in hits if hit[1] == "killed"]
    assert len(killed) >= 3, hits
    assert any(inside_write for *_, inside_write in killed), f"no kill landed inside a checkpoint write: {hits}"
    assert any(lines >= 4 for _, _, lines, _ in killed), f"no resume from a label-correction checkpoint: {hits}"
