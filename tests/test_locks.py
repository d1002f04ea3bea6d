"""`sln_cli.rundir.locks`: one holder per directory across processes; stale locks taken over, other hosts respected."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sln_cli.errors import SlnError
from sln_cli.rundir.locks import LOCK, lock_directory

ROOT = Path(__file__).resolve().parents[1]


def holder(directory: Path) -> dict | None:
    """The record the lock file names (pid, host, start); None when there is no file or it is empty (released)."""
    path = Path(directory) / LOCK
    text = path.read_text() if path.exists() else ""
    return json.loads(text) if text.strip() else None

# A child that takes the lock when `go` appears, says whether it got it, and holds it until `release` appears.
HOLDER = """
import sys, time
from pathlib import Path
from sln_cli.errors import SlnError
from sln_cli.rundir.locks import lock_directory
directory, go, release, report = map(Path, sys.argv[1:5])
while not go.exists():
    time.sleep(0.01)
try:
    with lock_directory(directory):
        report.write_text("got")
        while not release.exists():
            time.sleep(0.01)
except SlnError as exc:
    report.write_text("refused: " + str(exc))
"""


def _child(tmp_path: Path, name: str, go: Path, release: Path) -> tuple[subprocess.Popen, Path]:
    report = tmp_path / f"report-{name}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run"), str(go), str(release),
                                str(report)], env=env)
    return process, report


def _wait_for(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def test_the_holder_is_named_and_the_lock_is_cleared_on_release(tmp_path):
    with lock_directory(tmp_path):
        record = holder(tmp_path)
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert holder(tmp_path) is None and not (tmp_path / LOCK).exists()  # nothing left behind


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with lock_directory(tmp_path), pytest.raises(SlnError, match=f"process {os.getpid()} on host"):
        with lock_directory(tmp_path):
            pass


def test_of_several_processes_racing_exactly_one_gets_the_lock(tmp_path):
    (tmp_path / "run").mkdir()
    go, release = tmp_path / "go", tmp_path / "release"
    children = [_child(tmp_path, str(i), go, release) for i in range(3)]
    go.touch()
    reports = [_wait_for(report) for _, report in children]
    release.touch()
    for process, _ in children:
        assert process.wait(timeout=60) == 0
    assert sorted(r.split(":")[0] for r in reports) == ["got", "refused", "refused"]
    winner = next(process.pid for (process, _), r in zip(children, reports, strict=True) if r == "got")
    for r in reports:
        if r != "got":  # the refusal names the holder's pid and host, in one line
            assert f"process {winner} on host {socket.gethostname()}" in r and "\n" not in r


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path):
    (tmp_path / "run").mkdir()
    go, release = tmp_path / "go", tmp_path / "release"
    go.touch()
    process, report = _child(tmp_path, "killed", go, release)
    assert _wait_for(report) == "got"
    with pytest.raises(SlnError, match=f"in use by process {process.pid}"):
        with lock_directory(tmp_path / "run"):
            pass
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert holder(tmp_path / "run")["pid"] == process.pid  # SIGKILL left its record behind
    with lock_directory(tmp_path / "run"):
        assert holder(tmp_path / "run")["pid"] == os.getpid()


def _write_record(directory: Path, **record) -> None:
    (directory / LOCK).write_text(json.dumps(record))


def test_a_record_of_a_dead_process_on_this_host_is_stale(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_record(tmp_path, pid=dead.pid, host=socket.gethostname(), started="earlier")
    with lock_directory(tmp_path):  # no kernel lock behind it: a filesystem where flock does not reach
        assert holder(tmp_path)["pid"] == os.getpid()


def test_a_record_of_a_live_process_on_this_host_is_respected_without_a_kernel_lock(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_record(tmp_path, pid=alive.pid, host=socket.gethostname(), started="earlier")
        with pytest.raises(SlnError, match=f"process {alive.pid} on host"):
            with lock_directory(tmp_path):
                pass
    finally:
        alive.kill()
        alive.wait()


def test_a_lock_naming_another_host_is_respected(tmp_path):
    # pid 1 exists here too, but on another host nothing can tell whether it still runs: never take it over
    _write_record(tmp_path, pid=999999, host="node-17.cluster", started="2026-01-01T00:00:00")
    before = (tmp_path / LOCK).read_bytes()
    with pytest.raises(SlnError, match="process 999999 on host node-17.cluster"):
        with lock_directory(tmp_path, what="sweep cell"):
            pass
    assert (tmp_path / LOCK).read_bytes() == before


def test_a_garbage_lock_file_without_a_holder_is_taken(tmp_path):
    (tmp_path / LOCK).write_bytes(b"\xff\x00 not json" * 1000)
    with lock_directory(tmp_path):
        assert holder(tmp_path)["pid"] == os.getpid()


def test_a_missing_directory_is_one_line_naming_it(tmp_path):
    with pytest.raises(SlnError, match=f"cannot lock run directory {tmp_path / 'nope'}"):
        with lock_directory(tmp_path / "nope"):
            pass


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError), lock_directory(tmp_path):
        raise RuntimeError
    with lock_directory(tmp_path):
        pass
