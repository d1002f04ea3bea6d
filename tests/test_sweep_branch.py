"""The sweep with the real trainer: a branched LC run equals one trained from scratch, bit for bit; a SIGKILLed
sweep, rerun, gives the metrics of an uninterrupted one; submitit's local executor runs a sweep's jobs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.sweep import branch as branch_lib
from sln_cli.sweep import spec as spec_lib
from sln_cli.sweep import status as status_lib
from tests.conftest import require_extra, untimed_metrics

cli = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
TINY = ("set: {optim.epochs: EPOCHS, data.train_limit: 200, data.test_limit: 100, model.name: mlp, "
        "optim.batch_size: 50, run.cpu_threads: 1}\n")


def _sweep(tmp_path, *, epochs=4, correction=2, seeds="[0]"):
    text = (f"presets: [quickstart]\nmethods: {{SLN: {{}}, LC: {{sln.correction: {correction}}}}}\nseeds: {seeds}\n"
            + TINY.replace("EPOCHS", str(epochs)))
    (tmp_path / "grid.yaml").write_text(text)
    return spec_lib.load(str(tmp_path / "grid.yaml"), out=tmp_path / "s"), tmp_path / "s"


def _train(cell, out, *extra):
    sets = [a for o in cell.overrides for a in ("--set", o)]
    result = cli.invoke(app, ["train", "--preset", cell.preset, *sets, "--out", str(out), "--device", "cpu",
                              "--quiet", *extra])
    assert result.exit_code == 0, result.output


def _same_weights(a, b):
    left, right = (torch.load(d / "final.pt", weights_only=True) for d in (a, b))
    return all(torch.equal(left[part][k], right[part][k]) for part in ("model", "ema") for k in left[part])


@pytest.mark.slow
def test_a_branched_lc_run_equals_one_trained_from_scratch(tmp_path):
    sweep, _ = _sweep(tmp_path)
    twin, lc = sweep.cell("quickstart-SLN-seed0"), sweep.cell("quickstart-LC-seed0")
    assert lc.twin == twin.name
    _train(twin, twin.run_dir)
    assert branch_lib.can_branch(lc, twin)  # the twin kept its state after epoch 2
    branch_lib.branch(lc, twin, runtime={})
    assert untimed_metrics(lc.run_dir) == untimed_metrics(twin.run_dir)[:2]
    result = cli.invoke(app, ["train", "--resume", str(lc.run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    _train(lc, tmp_path / "scratch")
    assert untimed_metrics(lc.run_dir) == untimed_metrics(tmp_path / "scratch")
    assert "corrected_acc" in untimed_metrics(lc.run_dir)[2]  # label correction really ran after the branch
    assert untimed_metrics(lc.run_dir)[2:] != untimed_metrics(twin.run_dir)[2:]
    assert _same_weights(lc.run_dir, tmp_path / "scratch")
    meta = json.loads((lc.run_dir / "meta.json").read_text())
    assert meta["branched_from"] == str(twin.run_dir) and meta["branched_at"] == 2
    row = next(r for r in status_lib.table(sweep, tmp_path / "s") if r["name"] == lc.name)
    assert row["status"] == "done" and row["branch_from"] == str(twin.run_dir) and row["epochs_saved"] == 2


def _wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_a_sigkilled_sweep_rerun_gives_the_metrics_of_an_uninterrupted_one(tmp_path):
    sweep, sweep_dir = _sweep(tmp_path, epochs=3, correction=1)
    command = [sys.executable, "-m", "sln_cli", "sweep", str(tmp_path / "grid.yaml"), "--out", str(sweep_dir),
               "--jobs", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    twin = sweep.cell("quickstart-SLN-seed0")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = twin.run_dir / "metrics.jsonl"
    assert _wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 1, 300)
    process.send_signal(signal.SIGKILL)  # mid-run: the twin is training epoch 2 (or saving epoch 1)
    process.wait()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr  # no orphan holds a run: children died with it
    assert {r["status"] for r in status_lib.table(sweep, sweep_dir)} == {"done"}
    for cell in sweep.cells:  # the reference: each run trained alone, uninterrupted, from scratch
        _train(cell, tmp_path / "ref" / cell.name)
        assert untimed_metrics(cell.run_dir) == untimed_metrics(tmp_path / "ref" / cell.name), cell.name
        assert _same_weights(cell.run_dir, tmp_path / "ref" / cell.name), cell.name


@pytest.mark.slow
def test_submitit_local_executor_runs_the_jobs(tmp_path, monkeypatch):
    submitit = require_extra("submitit", "slurm")
    from sln_cli.slurm import SlurmOptions
    from sln_cli.sweep.slurm import submit

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    sweep, sweep_dir = _sweep(tmp_path, epochs=2, correction=1)
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=20)
    jobs = submit(sweep, sweep_dir, SlurmOptions(executor=executor, gpus_per_job=0, runs_per_job=2))
    assert [j["runs"] for j in jobs] == [["quickstart-SLN-seed0", "quickstart-LC-seed0"]]  # LC rides with its twin
    outcome = jobs[0]["job"].result()
    assert outcome["counts"] == {"done": 2}, outcome
    rows = {r["name"]: r for r in status_lib.table(sweep, sweep_dir)}
    assert {r["status"] for r in rows.values()} == {"done"}
    assert rows["quickstart-LC-seed0"]["branch_from"] == str(sweep.cell("quickstart-SLN-seed0").run_dir)
    assert json.loads((sweep.cell("quickstart-LC-seed0").run_dir / "meta.json").read_text())["branched_at"] == 1
    assert submit(sweep, sweep_dir, SlurmOptions(executor=executor)) == []  # nothing left to submit


def test_slurm_without_submitit_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    result = cli.invoke(app, ["sweep", "quickstart-sweep", "--launcher", "slurm", "--out", str(tmp_path / "s")])
    assert result.exit_code == 1 and "pip install 'sln-cli[slurm]'" in result.stderr, result.stderr
    assert not (tmp_path / "s").exists()
