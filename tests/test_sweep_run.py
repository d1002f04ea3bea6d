"""The sweep scheduler with a stand-in trainer (tests/fake_train.py): skip, resume, retry, locked runs, Ctrl-C,
config mismatches. The real trainer's part (exact resume, LC branching, SIGKILL) is in test_sweep_branch.py."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.errors import Interrupted, SlnError
from sln_cli.sweep import runner as runner_lib
from sln_cli.sweep import spec as spec_lib
from sln_cli.sweep import status as status_lib
from sln_cli.sweep.runner import Options, run_sweep

cli = CliRunner()
FAKE = Path(__file__).resolve().parent / "fake_train.py"
SPEC = "presets: [quickstart]\nmethods: {CE: {sln.sigma: 0}, SLN: {}}\nseeds: [0, 1]\nset: {optim.epochs: 3}\n"


@pytest.fixture
def control(tmp_path, monkeypatch):
    folder = tmp_path / "control"
    folder.mkdir()
    monkeypatch.setenv("FAKE_TRAIN_CONTROL", str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE.parent.parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(runner_lib, "LOOK_SECONDS", 0.05)
    return folder


def _fake(**options):
    """Runner options whose runs are tests/fake_train.py (steered through the `control` folder)."""
    return Options(trainer=(sys.executable, str(FAKE)), **options)


def _sweep(tmp_path, text=SPEC):
    (tmp_path / "grid.yaml").write_text(text)
    return spec_lib.load(str(tmp_path / "grid.yaml"), out=tmp_path / "s"), tmp_path / "s"


def _calls(control):
    path = control / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def _status(sweep, sweep_dir):
    return {r["name"]: r["status"] for r in status_lib.table(sweep, sweep_dir)}


def test_a_sweep_runs_every_cell_then_a_rerun_skips_them(tmp_path, control):
    sweep, sweep_dir = _sweep(tmp_path)
    outcome = run_sweep(sweep, sweep_dir, _fake(jobs=2))
    assert outcome["counts"] == {"done": 4}
    assert sorted(_calls(control)) == sorted(f"{c.name} fresh" for c in sweep.cells)
    assert set(_status(sweep, sweep_dir).values()) == {"done"}
    assert (sweep_dir / "sweep.yaml").is_file() and (sweep_dir / "logs" / f"{sweep.cells[0].name}.log").is_file()
    assert run_sweep(sweep, sweep_dir, _fake(jobs=2))["counts"] == {"done": 4}
    assert len(_calls(control)) == 4  # nothing started again


def test_a_partial_run_is_resumed_and_a_failure_retried_with_its_log_kept(tmp_path, control):
    sweep, sweep_dir = _sweep(tmp_path)
    first, second = sweep.cells[0].name, sweep.cells[1].name
    (control / f"{first}.stop-after-1").touch()  # dies after epoch 1: partial
    (control / f"{second}.fail").touch()  # fails once, then works
    outcome = run_sweep(sweep, sweep_dir, _fake(jobs=1, retries=0))
    assert outcome["runs"][first] == outcome["runs"][second] == "failed"
    rows = {r["name"]: r for r in status_lib.table(sweep, sweep_dir)}
    assert rows[first]["status"] == "failed" and rows[first]["epochs_done"] == 1
    assert rows[second]["status"] == "failed" and rows[second]["epochs_done"] == 0
    failures = status_lib.read_failures(sweep_dir)
    assert failures[second]["message"] == "error: boom" and failures[second]["exit_code"] == 1
    outcome = run_sweep(sweep, sweep_dir, _fake(jobs=1))
    assert outcome["counts"] == {"done": 4}
    assert f"{first} resume" in _calls(control) and _calls(control).count(f"{second} fresh") == 2
    assert status_lib.read_failures(sweep_dir) == {}
    log = (sweep_dir / "logs" / f"{second}.log").read_text()
    assert log.count("=== ") == 2 and "error: boom" in log  # the failed attempt stays visible
    epochs = [json.loads(line)["epoch"] for line in (sweep_dir / first / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_retries_restart_a_failing_run_within_one_invocation(tmp_path, control):
    sweep, sweep_dir = _sweep(tmp_path)
    name = sweep.cells[0].name
    (control / f"{name}.fail").touch()
    outcome = run_sweep(sweep, sweep_dir, _fake(jobs=2, retries=1))
    assert outcome["counts"] == {"done": 4}
    assert _calls(control).count(f"{name} fresh") == 2


def test_a_run_locked_by_another_process_is_not_a_failure(tmp_path, control):
    sweep, sweep_dir = _sweep(tmp_path)
    name = sweep.cells[0].name
    (control / f"{name}.locked").touch()
    outcome = run_sweep(sweep, sweep_dir, _fake(jobs=2, retries=3))
    assert outcome["runs"][name] == "locked" and _calls(control).count(f"{name} fresh") == 1
    assert name not in status_lib.read_failures(sweep_dir)


def test_ctrl_c_stops_the_children_and_says_how_to_continue(tmp_path, control, monkeypatch, request):
    sweep, sweep_dir = _sweep(tmp_path)
    for cell in sweep.cells:
        (control / f"{cell.name}.sleep").touch()
    looks = iter(range(1000))
    real_sleep = runner_lib.time.sleep

    pressed = []

    def sleep(seconds):  # the scheduler's wait: the user presses Ctrl-C (once) when both children sleep
        if not pressed and next(looks) > 20 and len(_calls(control)) >= 2:
            pressed.append(True)
            raise KeyboardInterrupt
        real_sleep(min(seconds, 0.05))

    monkeypatch.setattr(runner_lib.time, "sleep", sleep)
    monkeypatch.setattr(runner_lib, "STOP_SECONDS", 20.0)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup: children inherit it ignored
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    with pytest.raises(Interrupted, match="run the same `sln sweep` command again"):
        run_sweep(sweep, sweep_dir, _fake(jobs=2))
    assert len(_calls(control)) == 2
    started = [c for c in sweep.cells if (sweep_dir / "logs" / f"{c.name}.log").is_file()]
    for cell in started:  # each child stopped on SIGINT, even with SIGINT ignored here (a background sweep)
        assert "error: interrupted" in (sweep_dir / "logs" / f"{cell.name}.log").read_text()


def test_a_run_directory_with_another_config_is_an_error_not_overwritten(tmp_path, control):
    sweep, sweep_dir = _sweep(tmp_path)
    run_sweep(sweep, sweep_dir, _fake(jobs=2))
    changed = SPEC.replace("optim.epochs: 3", "optim.epochs: 3, optim.lr: 0.5")
    sweep, sweep_dir = _sweep(tmp_path, changed)
    with pytest.raises(SlnError, match="optim.lr differ"):
        run_sweep(sweep, sweep_dir, _fake(jobs=2))
    result = cli.invoke(app, ["sweep", str(tmp_path / "grid.yaml"), "--out", str(sweep_dir), "--dry-run"])
    assert result.exit_code == 1 and "another config" in result.stderr


def test_more_epochs_in_the_spec_extend_finished_runs(tmp_path, control):
    sweep, sweep_dir = _sweep(tmp_path)
    run_sweep(sweep, sweep_dir, _fake(jobs=2))
    sweep, sweep_dir = _sweep(tmp_path, SPEC.replace("optim.epochs: 3", "optim.epochs: 4"))
    assert set(_status(sweep, sweep_dir).values()) == {"partial"}


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path, control):
    from sln_cli.rundir.locks import lock_directory

    sweep, sweep_dir = _sweep(tmp_path)
    run_sweep(sweep, sweep_dir, _fake(jobs=2))
    with lock_directory(sweep_dir, what="sweep"):  # as another sweep process would hold it
        with pytest.raises(SlnError, match="sweep directory .* is in use"):
            run_sweep(sweep, sweep_dir, _fake(jobs=2))


def test_a_sweep_directory_sln_did_not_make_is_refused(tmp_path, control):
    sweep, sweep_dir = _sweep(tmp_path)
    sweep_dir.mkdir()
    (sweep_dir / "notes.txt").write_text("mine")
    with pytest.raises(SlnError, match="not empty"):
        run_sweep(sweep, sweep_dir, _fake(jobs=2))
    assert (sweep_dir / "notes.txt").read_text() == "mine"


def test_cpu_jobs_share_the_cores():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert runner_lib.threads_per_run(Options(jobs=1)) == cores
    assert runner_lib.threads_per_run(Options(jobs=cores * 2)) == 1
    assert runner_lib.slots(Options(devices=("cuda:0", "cuda:1"), per_device=2)) == ["cuda:0"] * 2 + ["cuda:1"] * 2
    assert runner_lib.slots(Options(jobs=3, devices=("cuda:0", "cuda:1"), per_device=2)) == ["cuda:0"] * 2 + ["cuda:1"]
