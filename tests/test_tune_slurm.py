"""`sln tune --launcher slurm` without Slurm: submitit's AutoExecutor faked (fake srun/sbatch on the PATH), so the
jobs that would be submitted are checked (count, function, resources), the refusals write nothing, a rerun with no
slot waiting submits nothing, and a submitted job's function runs the worker loop on the study."""

import json
import os
import pickle
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from tests.conftest import require_extra

optuna = require_extra("optuna", "tune")

from sln_cli.tune import slurm as tune_slurm  # noqa: E402
from sln_cli.tune import workflow as tune_lib  # noqa: E402

runner = CliRunner()
TINY = ["--set", "data.train_limit=300", "--set", "data.test_limit=100", "--set", "model.name=mlp",
        "--set", "optim.batch_size=50", "--set", "optim.epochs=2", "--noisy-val", "60", "--param", "sln.sigma=0,0.5,2"]


class FakeJob:
    def __init__(self, job_id, function, args):
        self.job_id, self.function, self.args = job_id, function, args


class FakeExecutor:
    """submitit.AutoExecutor's surface that sln uses; records what would be submitted."""

    made: list["FakeExecutor"] = []

    def __init__(self, folder, cluster=None):
        self.folder, self.cluster, self.parameters, self.jobs = Path(folder), cluster, {}, []
        FakeExecutor.made.append(self)

    def update_parameters(self, **kwargs):
        self.parameters.update(kwargs)

    def submit(self, function, *args):
        self.jobs.append(FakeJob(str(1000 + len(self.jobs)), function, args))
        return self.jobs[-1]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A PATH with srun and sbatch, and submitit's AutoExecutor replaced by FakeExecutor."""
    submitit = require_extra("submitit", "slurm")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("srun", "sbatch"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    FakeExecutor.made = []
    return FakeExecutor


def _tune(tmp_path, *args):
    result = runner.invoke(app, ["tune", "quickstart", *TINY, "--out", str(tmp_path / "t"), "--launcher", "slurm",
                                 *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_workers_are_packed_into_jobs_with_the_resources_asked_for(tmp_path, slurm):
    data = _tune(tmp_path, "--jobs", "3", "--runs-per-job", "2", "--gpus-per-job", "2", "--partition", "gpu",
                 "--time-min", "90")
    (executor,) = slurm.made
    assert [j.args[4] for j in executor.jobs] == [2, 1]  # 3 workers: a job of 2, a job of 1
    assert data["waiting"] == 3 and [s["workers"] for s in data["submitted"]] == [2, 1]
    assert [s["job_id"] for s in data["submitted"]] == ["1000", "1001"]
    tune_dir = (tmp_path / "t").resolve()
    for job in executor.jobs:
        assert job.function is tune_slurm.run_job
        spec, folder, url, name, _, gpus = job.args
        assert (Path(folder).resolve(), url, name, gpus) == (tune_dir, f"sqlite:///{tune_dir / 'study.db'}", "t", 2)
        assert spec.trials == 3
        function, args = pickle.loads(pickle.dumps((job.function, job.args)))  # submitit pickles what it submits
        assert function is tune_slurm.run_job and args[0] == spec
    assert executor.folder == tmp_path / "t" / "slurm" / "%j" and executor.cluster == "slurm"
    assert executor.parameters == {"timeout_min": 90, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 2,
                                   "name": "sln-tune-t", "slurm_signal_delay_s": 120, "slurm_partition": "gpu"}
    assert [t["state"] for t in data["trials"]] == ["waiting"] * 3  # the study exists; no trial ran here


def test_no_more_workers_than_waiting_slots_and_cpu_jobs_ask_for_cpus(tmp_path, slurm):
    data = _tune(tmp_path, "--jobs", "8", "--gpus-per-job", "0", "--runs-per-job", "2", "--storage",
                 f"sqlite:///{tmp_path / 'shared.db'}", "--study", "s")
    (executor,) = slurm.made
    assert [j.args[4] for j in executor.jobs] == [2, 1]  # 3 slots: 3 workers, not 8
    assert all(j.args[2] == f"sqlite:///{tmp_path / 'shared.db'}" and j.args[3] == "s" for j in executor.jobs)
    assert executor.parameters["gpus_per_node"] == 0 and executor.parameters["cpus_per_task"] == 2
    assert data["storage"] == f"sqlite:///{tmp_path / 'shared.db'}"


def test_the_jobs_function_runs_the_worker_loop_and_a_rerun_then_submits_nothing(tmp_path, slurm):
    _tune(tmp_path, "--jobs", "1", "--gpus-per-job", "0")
    (job,) = slurm.made[0].jobs
    assert job.function(*job.args) == 0  # as inside the job: every slot run, none left waiting
    again = _tune(tmp_path, "--jobs", "4", "--gpus-per-job", "0")
    assert again["waiting"] == 0 and again["submitted"] == [] and slurm.made[1].jobs == []
    assert [t["state"] for t in again["trials"]] == ["complete"] * 3 and again["best"] is not None
    text = runner.invoke(app, ["tune", "quickstart", *TINY, "--out", str(tmp_path / "t"), "--launcher", "slurm"])
    assert text.exit_code == 0 and "no slot waits: nothing submitted" in text.stdout, text.output


def test_a_rerun_resubmits_only_for_the_slots_still_waiting(tmp_path, slurm):
    spec = tune_lib.build_spec("quickstart", ["sln.sigma=0,0.5,2"], method=None, trials=None, objective=None,
                               paper=False, noisy_val=60, overrides=[t for t in TINY[:10] if t != "--set"],
                               prune=False, seed=0)
    from sln_cli.slurm import SlurmOptions

    tune_dir = tmp_path / "t"
    fake = FakeExecutor(tmp_path / "x")
    first = tune_slurm.submit(spec, tune_dir, storage=None, study_name=None, workers=1,
                              options=SlurmOptions(executor=fake, gpus_per_job=0))
    assert first.waiting == 3 and len(first.jobs) == 1
    from sln_cli.tune import study as study_lib

    store = study_lib.open_storage(first.result.storage)  # one trial run, as if by a job that then timed out
    study = optuna.load_study(study_name="t", storage=store)
    trial = study_lib._pop(study, store)
    study.tell(trial, 0.5)
    again = tune_slurm.submit(spec, tune_dir, storage=None, study_name=None, workers=5,
                              options=SlurmOptions(executor=fake, gpus_per_job=0))
    assert again.waiting == 2 and [j["workers"] for j in again.jobs] == [1, 1]


def test_without_submitit_the_error_says_how_to_install_it_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    result = runner.invoke(app, ["tune", "quickstart", *TINY, "--out", str(tmp_path / "t"), "--launcher", "slurm"])
    assert result.exit_code == 1 and "pip install 'sln-cli[slurm]'" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "t").exists()


def test_without_srun_and_sbatch_it_is_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    require_extra("submitit", "slurm")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    result = runner.invoke(app, ["tune", "quickstart", *TINY, "--out", str(tmp_path / "t"), "--launcher", "slurm"])
    assert result.exit_code == 1 and "needs Slurm's srun and sbatch" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "t").exists()


@pytest.mark.parametrize(("args", "message"), [(["--launcher", "pbs"], "Invalid value for '--launcher'"),
                                               (["--launcher", "slurm", "--runs-per-job", "0"], "--runs-per-job"),
                                               (["--launcher", "slurm", "--jobs", "0"], "--jobs must be at least 1")])
def test_bad_slurm_values_are_one_line_errors_and_write_nothing(tmp_path, slurm, args, message):
    result = runner.invoke(app, ["tune", "quickstart", *TINY, "--out", str(tmp_path / "t"), *args])
    assert result.exit_code == 1 and message in result.stderr, result.output
    assert not (tmp_path / "t").exists() and slurm.made == []


@pytest.mark.parametrize(("state", "waiting"), [("TIMEOUT", 3), ("CANCELLED by 0", 3), ("RUNNING", 2),
                                                 ("PENDING", 2)])
def test_a_slot_held_by_a_slurm_job_that_ended_waits_again(tmp_path, slurm, monkeypatch, state, waiting):
    submitit = require_extra("submitit", "slurm")
    asked = []

    class FakeSlurmJob:
        def __init__(self, folder, job_id):
            asked.append((Path(folder), job_id))

        def get_info(self, mode="standard"):
            return {"State": state}

    monkeypatch.setattr(submitit, "SlurmJob", FakeSlurmJob)
    _tune(tmp_path, "--jobs", "1")
    from sln_cli.tune import study as study_lib

    store = study_lib.open_storage(f"sqlite:///{(tmp_path / 't' / 'study.db').resolve()}")
    study = optuna.load_study(study_name="t", storage=store)
    trial = study_lib._pop(study, store)  # as a worker on a compute node, in job 4242
    trial.set_user_attr("owner", {"pid": 1, "host": "node-elsewhere", "slurm_job": "4242"})
    again = _tune(tmp_path, "--jobs", "5")
    assert asked == [(tmp_path / "t" / "slurm" / "%j", "4242")]
    assert again["waiting"] == waiting and sum(s["workers"] for s in again["submitted"]) == waiting
    states = sorted(t["state"] for t in again["trials"])
    assert states == (["fail", "waiting", "waiting", "waiting"] if waiting == 3 else ["running", "waiting", "waiting"])


def test_a_worker_inside_a_slurm_job_names_the_job(monkeypatch):
    from sln_cli.tune import study as study_lib

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert study_lib.owner_record()["slurm_job"] == "77"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert "slurm_job" not in study_lib.owner_record()


@pytest.mark.slow  # two submitit jobs, each a fresh Python process training trials
def test_submitit_local_executor_runs_the_workers_to_the_end(tmp_path, monkeypatch):
    submitit = require_extra("submitit", "slurm")
    from sln_cli.slurm import SlurmOptions

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH", "")]))
    spec = tune_lib.build_spec("quickstart", ["sln.sigma=0,0.5,2"], method=None, trials=None, objective=None,
                               paper=False, noisy_val=60, overrides=[t for t in TINY[:10] if t != "--set"],
                               prune=False, seed=0)
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=10)
    options = SlurmOptions(executor=executor, gpus_per_job=0)
    first = tune_slurm.submit(spec, tmp_path / "t", storage=None, study_name=None, workers=2, options=options)
    assert len(first.jobs) == 2 and first.waiting == 3
    assert [j["job"].result() for j in first.jobs] == [0, 0]  # each worker ran until no slot waited
    again = tune_slurm.submit(spec, tmp_path / "t", storage=None, study_name=None, workers=2, options=options)
    assert again.jobs == [] and again.waiting == 0
    assert sorted(t["slot"] for t in again.result.trials if t["state"] == "complete") == [0, 1, 2]
    assert len(again.result.trials) == 3 and again.result.best_preset is not None
