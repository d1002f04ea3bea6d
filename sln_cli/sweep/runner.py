"""Running a sweep on this machine: each cell is a child `sln train` process with its own log, N at a time.

The scheduler waits on its children (it sleeps between looks, reading each running run's metrics file once
a second for the live table), so it costs its runs nothing. Finished runs are skipped, partial ones resumed
exactly, failed ones restarted up to `retries` times; an LC run starts from its twin's kept state as soon as
the twin has passed the LC epoch. Ctrl-C (or SIGTERM) stops the children at their last checkpoint; children
die with the sweep process if it is killed (Linux), so a rerun finds no orphan holding a run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sln_cli.errors import Interrupted, SlnError
from sln_cli.rundir import ownership
from sln_cli.rundir.files import atomic_write_text
from sln_cli.rundir.locks import lock_directory
from sln_cli.sweep import branch as branch_lib
from sln_cli.sweep import status as status_lib
from sln_cli.sweep.live import SweepDisplay
from sln_cli.sweep.spec import Cell, Sweep

LOOK_SECONDS = 0.5  # how long the scheduler sleeps between looks at its children
STOP_SECONDS = 30.0  # after Ctrl-C, how long children get to stop before they are killed
LOCKED = "is in use by"  # the words of sln_cli.rundir.locks' message when another process holds a run

ownership.register_kind("sweep", (status_lib.SWEEP_FILE, status_lib.FAILURES, "logs/*.log", ".*.tmp", "logs/.*.tmp"))


@dataclass(frozen=True)
class Options:
    jobs: int | None = None  # runs at once (default: one per device slot; on the CPU, 1)
    devices: tuple[str, ...] = ("cpu",)
    per_device: int = 1  # runs sharing one GPU
    retries: int = 1  # restarts of a run that fails, per sweep invocation
    cpu_threads: int | None = None  # per CPU run (default: the cores divided between the jobs)
    trainer: tuple[str, ...] = (sys.executable, "-m", "sln_cli", "train")  # the command a run's flags follow


@dataclass
class Child:
    cell: Cell
    process: subprocess.Popen
    device: str
    log: Any  # the open log file
    started: float
    mode: str  # fresh, resume or branch


def slots(options: Options) -> list[str]:
    """The devices of the runs that may go at once: one entry per run."""
    if options.jobs is not None and options.jobs < 1:
        raise SlnError(f"--jobs must be at least 1, got {options.jobs}")
    if options.per_device < 1:
        raise SlnError(f"--per-device must be at least 1, got {options.per_device}")
    per = [d for d in options.devices for _ in range(options.per_device)]
    if options.devices == ("cpu",):
        return ["cpu"] * (options.jobs or 1)
    return per[: options.jobs] if options.jobs else per


def threads_per_run(options: Options) -> int:
    if options.cpu_threads is not None:
        return options.cpu_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpu_runs = sum(d == "cpu" for d in slots(options))
    return max(1, cores // max(cpu_runs, 1))


def run_sweep(sweep: Sweep, sweep_dir: Path, options: Options, *, console: Any = None) -> dict[str, Any]:
    """Run every unfinished cell of `sweep` in `sweep_dir` (holding the sweep's lock); return the outcome."""
    slots(options)  # bad options fail before anything is written
    status_lib.table(sweep, sweep_dir)  # so does a run directory holding another config: nothing is written then
    if not ownership.is_owned(sweep_dir, "sweep"):
        ownership.claim_new_directory(sweep_dir, "sweep", overwrite=False)
    with lock_directory(sweep_dir, what="sweep"):
        atomic_write_text(sweep_dir / status_lib.SWEEP_FILE,
                          yaml.safe_dump({"name": sweep.name, **sweep.spec}, sort_keys=False))
        return Scheduler(sweep, sweep_dir, options, SweepDisplay(console)).run()


class Scheduler:
    """Launches ready cells into free slots, reaps finished children, retries failures."""

    def __init__(self, sweep: Sweep, sweep_dir: Path, options: Options, display: SweepDisplay,
                 names: list[str] | None = None) -> None:
        self.sweep, self.sweep_dir, self.options, self.display = sweep, sweep_dir, options, display
        self.cells = [c for c in sweep.cells if names is None or c.name in names]
        self.free = slots(options)
        self.threads = threads_per_run(options)
        self.running: dict[str, Child] = {}
        self.failures: Counter[str] = Counter()
        self.outcome: dict[str, str] = {}

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        failures = status_lib.read_failures(self.sweep_dir)
        todo = [c for c in self.cells if status_lib.state_of(c, self.sweep, failures).status != "done"]
        twins = {c.twin for c in self.cells if c.twin is not None}
        # twins first (their LC runs branch from them), then LC runs (started as soon as they can branch)
        todo.sort(key=lambda c: 0 if c.name in twins else 1 if c.twin is not None else 2)
        self.outcome = {c.name: "done" for c in self.cells if c not in todo}
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with self.display.live(self.cells, self.sweep_dir):
                while todo or self.running:
                    self._launch(todo)
                    if not self.running:
                        break  # nothing runs and nothing can start
                    time.sleep(LOOK_SECONDS)
                    self._reap(todo)
                    self.display.refresh(self.running)
        except KeyboardInterrupt:
            stopped = self._stop_all()
            raise Interrupted(f"interrupted: {stopped} runs stopped at their last checkpoint; run the same "
                              "`sln sweep` command again to continue") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        for cell in todo:
            self.outcome.setdefault(cell.name, "not started")
        return {"sweep_dir": str(self.sweep_dir), "seconds": time.perf_counter() - started,
                "runs": dict(self.outcome), "counts": dict(Counter(self.outcome.values()))}

    # ----------------------------------------------------------------------------------------------

    def _launch(self, todo: list[Cell]) -> None:
        for cell in list(todo):
            if not self.free:
                return
            mode = self._mode(cell, todo)
            if mode is None:
                continue
            todo.remove(cell)
            device = self.free.pop(0)
            if mode == "branch":
                assert cell.twin is not None, "only an LC cell with a twin branches (_mode)"
                branch_lib.branch(cell, self.sweep.cell(cell.twin), runtime=self._runtime(cell, device))
            self._start(cell, mode, device)

    def _mode(self, cell: Cell, todo: list[Cell]) -> str | None:
        """fresh, resume or branch; None while an LC run waits for its twin to pass the LC epoch."""
        if (cell.run_dir / "config.yaml").is_file():
            return "resume"
        if cell.twin is None:
            return "fresh"
        twin = self.sweep.cell(cell.twin)
        if branch_lib.can_branch(cell, twin):
            return "branch"
        twin_coming = cell.twin in self.running or any(c.name == cell.twin for c in todo)
        return None if twin_coming else "fresh"

    def _runtime(self, cell: Cell, device: str) -> dict[str, Any]:
        explicit = any(o.startswith("run.cpu_threads=") for o in cell.overrides)
        return {"cpu_threads": self.threads} if device == "cpu" and not explicit else {}

    def _start(self, cell: Cell, mode: str, device: str) -> None:
        command = list(self.options.trainer)
        if mode == "fresh":
            sets = [*cell.overrides, *(f"run.{k}={v}" for k, v in self._runtime(cell, device).items())]
            command += ["--preset", cell.preset, *[a for s in sets for a in ("--set", s)], "--out", str(cell.run_dir)]
        else:
            command += ["--resume", str(cell.run_dir), "--epochs", str(cell.epochs)]
        command += ["--device", device]
        log_path = status_lib.log_path(self.sweep_dir, cell)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 -- closed when the child is reaped
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {mode} on {device}: {' '.join(command)}\n")
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if device == "cpu":
            env["OMP_NUM_THREADS"] = str(self._runtime(cell, device).get("cpu_threads", self.threads))
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
        self.running[cell.name] = Child(cell, process, device, log, time.perf_counter(), mode)
        self.display.started(cell, device, mode)

    def _reap(self, todo: list[Cell]) -> None:
        for name, child in list(self.running.items()):
            code = child.process.poll()
            if code is None:
                continue
            child.log.close()
            del self.running[name]
            self.free.append(child.device)
            seconds = time.perf_counter() - child.started
            failures = status_lib.read_failures(self.sweep_dir)
            if code == 0 and status_lib.state_of(child.cell, self.sweep, failures).status == "done":
                status_lib.clear_failure(self.sweep_dir, name)
                self.outcome[name] = "done"
                self.display.finished(child.cell, "done", seconds, "")
                continue
            message = _last_error(status_lib.log_path(self.sweep_dir, child.cell))
            if LOCKED in message:  # another sweep or `sln train --resume` holds this run: not a failure
                self.outcome[name] = "locked"
                self.display.finished(child.cell, "locked", seconds, message)
                continue
            status_lib.record_failure(self.sweep_dir, name, code, status_lib.log_path(self.sweep_dir, child.cell),
                                      message)
            self.failures[name] += 1
            retry = self.failures[name] <= self.options.retries
            self.outcome[name] = "failed"
            self.display.finished(child.cell, "failed", seconds, f"exit {code}: {message}" +
                                  (" (retrying)" if retry else ""))
            if retry:
                todo.append(child.cell)

    def _stop_all(self) -> int:
        """SIGINT to every child (it stops at its last checkpoint), then SIGKILL to any still running."""
        for child in self.running.values():
            _signal_group(child.process, signal.SIGINT)
        deadline = time.monotonic() + STOP_SECONDS
        for child in self.running.values():
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()
            child.log.close()
            self.outcome[child.cell.name] = "interrupted"
        self.display.close()
        return len(self.running)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the child leads its own session: its own workers go too
    except ProcessLookupError:
        pass


def _die_with_parent(parent: int) -> Any:
    """A pre-exec hook: SIGINT back to its default (a sweep started in the background, e.g. under nohup, has it
    ignored, and children inherit that), so that the child stops at its checkpoint when told; and on Linux the
    child gets SIGKILL when the sweep process dies, even by SIGKILL."""

    def hook() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its KeyboardInterrupt handler
        if not sys.platform.startswith("linux"):
            return
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the sweep died before prctl took hold
            os._exit(1)

    return hook


def _last_error(log: Path) -> str:
    """The last `error: ...` line of a run's log (or its last line), for the failure record."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error: ")]
    return (errors[-1] if errors else (lines[-1] if lines else ""))[:300]
