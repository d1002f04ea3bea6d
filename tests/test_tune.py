"""`sln tune` (Optuna, extra sln-cli[tune]): the choice is the argmax, a killed tune resumes without re-running
finished trials, two processes on one study run each slot once, bad specs are one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app

optuna = pytest.importorskip("optuna")

from sln_cli.tune import trial as trial_lib  # noqa: E402
from sln_cli.tune import workflow as tune_lib  # noqa: E402

runner = CliRunner()
TINY = ["--set", "data.train_limit=300", "--set", "data.test_limit=100", "--set", "model.name=mlp",
        "--set", "optim.batch_size=50", "--set", "optim.epochs=3", "--noisy-val", "60"]
GRID = ["--param", "sln.sigma=0,0.5,2"]


def _tune(tmp_path, *args, name="t"):
    result = runner.invoke(app, ["tune", "quickstart", *TINY, *args, "--out", str(tmp_path / name), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _spec(params=("sln.sigma=0,0.5,2",)):
    return tune_lib.build_spec("quickstart", list(params), method=None, trials=None, objective=None, paper=False,
                               noisy_val=60, overrides=[t for t in TINY[:-2] if t != "--set"], prune=False, seed=0)


def test_the_choice_is_the_argmax_of_the_trials_objectives_and_best_yaml_repeats_it(tmp_path):
    data = _tune(tmp_path, *GRID)
    values = {t["number"]: t["value"] for t in data["trials"]}
    assert len(values) == 3 and all(t["state"] == "complete" for t in data["trials"])
    assert data["best"]["number"] == max(values, key=lambda n: (values[n], -n))
    for t in data["trials"]:  # each objective is the EMA's best noisy-validation accuracy of its own run
        rows = [json.loads(line) for line in (Path(t["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert t["value"] == max(row["noisy_val_acc_ema"] for row in rows)
    result = runner.invoke(app, ["train", "--preset", data["best_preset"], "--print-config"])
    assert f"sigma: {float(data['best']['params']['sln.sigma'])}" in result.output
    assert all(Path(f).stat().st_size > 1000 for f in data["figures"])


def test_a_rerun_does_not_rerun_finished_trials(tmp_path):
    first = _tune(tmp_path, *GRID)
    again = _tune(tmp_path, *GRID)
    assert [t["number"] for t in again["trials"]] == [t["number"] for t in first["trials"]]
    assert again["epochs_trained"] == first["epochs_trained"] == 9


def test_a_killed_tune_resumes_the_interrupted_trial_from_its_checkpoint(tmp_path, monkeypatch):
    spec, tune_dir = _spec(), tmp_path / "t"
    real = trial_lib.run

    def killed_in_slot_1(trial, spec, tune_dir):
        if trial.user_attrs["slot"] == 1:
            import sln_cli.training.train as train_module

            original = train_module.train

            def train(*args, on_epoch=None, **kwargs):
                def hook(row):
                    on_epoch(row)
                    if row["epoch"] == 2:
                        raise KeyboardInterrupt  # as a kill after epoch 2's checkpoint

                return original(*args, on_epoch=hook, **kwargs)

            monkeypatch.setattr(train_module, "train", train)
        return real(trial, spec, tune_dir)

    monkeypatch.setattr(tune_lib, "run_trial", killed_in_slot_1)
    with pytest.raises(Exception, match="interrupted"):
        tune_lib.tune(spec, tune_dir, storage=None, study_name=None, jobs=1, log=lambda line: None)
    monkeypatch.undo()
    result = tune_lib.tune(spec, tune_dir, storage=None, study_name=None, jobs=1, log=lambda line: None)
    by_state = {}
    for t in result.trials:
        by_state.setdefault(t["state"], []).append(t)
    assert sorted(t["slot"] for t in by_state["complete"]) == [0, 1, 2]  # each slot once
    assert [t["slot"] for t in by_state["fail"]] == [1] and "interrupted" in by_state["fail"][0]["error"]
    resumed = next(t for t in by_state["complete"] if t["slot"] == 1)
    assert resumed["epochs_trained"] == 1  # epochs 1 and 2 were kept; only epoch 3 ran again
    assert result.epochs_trained == 3 + 2 + 1 + 3


def test_two_processes_on_one_sqlite_study_run_each_slot_once(tmp_path):
    command = [sys.executable, "-m", "sln_cli", "tune", "quickstart", *TINY, "--param", "sln.sigma=0,0.2,0.5,1,2",
               "--out", str(tmp_path / "t"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), [o[1][-2000:] for o in outputs]
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't' / 'study.db'}")
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert sorted(t.user_attrs["slot"] for t in study.trials) == [0, 1, 2, 3, 4]
    assert len({t.params["sln.sigma"] for t in study.trials}) == 5
    assert {t.user_attrs["owner"]["pid"] for t in study.trials} <= {p.pid for p in processes}


def test_a_failing_trial_is_marked_failed_with_its_reason_and_the_tune_goes_on(tmp_path):
    data = _tune(tmp_path, "--param", "optim.lr=0.05,100")
    states = {t["params"]["optim.lr"]: t for t in data["trials"]}
    assert states[0.05]["state"] == "complete"
    assert states[100]["state"] == "fail" and "non-finite" in states[100]["error"]


@pytest.mark.parametrize(("args", "message"), [
    (["--param", "sln.sigmaa=0.1,0.2"], "unknown config key"),
    (["--param", "sln.sigma=0.1,,0.2"], "an empty value"),
    (["--param", "sln.sigma="], "--param takes"),
    (["--param", "model.name=1:2"], "a range needs a numeric key"),
    (["--param", "sln.sigma=0.5:0.1"], "need lo < hi"),
    (["--param", "sln.sigma=a:b"], "must be numbers"),
    (["--param", "sln.sigma=0.1,0.2", "--trials", "5"], "a grid alone has 2 points"),
    (["--param", "sln.sigma=0.1", "--objective", "test"], "--objective takes"),
    (["--param", "optim.lr=-1,0.1"], "optim.lr must not be negative"),
    (["--param", "sln.sigma=0.1", "--storage", "nosuchdb://x"], "cannot open the study storage"),
    (["--param", "sln.sigma=0:1", "--trials", "1", "--seed", "4294967296"], "--seed must be an integer from 0"),
    (["--param", "sln.sigma=0:1", "--trials", "1", "--seed", "-1"], "--seed must be an integer from 0"),
])
def test_bad_specs_are_one_line_errors_and_write_nothing(tmp_path, args, message):
    result = runner.invoke(app, ["tune", "quickstart", *TINY, *args, "--out", str(tmp_path / "t")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "t").exists()


def test_another_spec_on_the_same_study_is_refused(tmp_path):
    _tune(tmp_path, "--param", "sln.sigma=0.5")
    before = (tmp_path / "t" / "tune.json").read_text()
    result = runner.invoke(app, ["tune", "quickstart", *TINY, "--param", "sln.sigma=1", "--out", str(tmp_path / "t")])
    assert result.exit_code == 1 and "another spec" in result.output
    assert (tmp_path / "t" / "tune.json").read_text() == before


def test_a_tune_without_a_noisy_validation_split_is_refused(tmp_path):
    result = runner.invoke(app, ["tune", "quickstart", "--param", "sln.sigma=0.5", "--out", str(tmp_path / "t")])
    assert result.exit_code == 1 and "noisy validation split" in result.output


def test_without_optuna_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = runner.invoke(app, ["tune", "quickstart", *TINY, *GRID, "--out", str(tmp_path / "t")])
    assert result.exit_code == 1 and "pip install 'sln-cli[tune]'" in result.output
    assert not (tmp_path / "t").exists()


class _FakeTrial:
    """Stands in for an Optuna trial: records reports; the pruner says stop once epoch `prune_at` is reported."""

    def __init__(self, slot, prune_at):
        self.user_attrs, self.reports, self.prune_at = {"slot": slot}, [], prune_at

    def suggest_categorical(self, key, values):
        return values[0]

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.reports[-1][0] >= self.prune_at


def test_a_pruned_trial_stops_after_the_epoch_the_pruner_names_and_resumes_from_there(tmp_path):
    spec = _spec(("sln.sigma=0.5",))
    trial = _FakeTrial(0, prune_at=2)
    with pytest.raises(optuna.TrialPruned):
        trial_lib.run(trial, spec, tmp_path)
    run_dir = trial_lib.run_dir_of(tmp_path, 0)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and trial.user_attrs["epochs_trained"] == 2
    assert [step for step, _ in trial.reports] == [1, 2]
    assert trial.reports[-1][1] == max(r["noisy_val_acc_ema"] for r in rows)  # ema-best: the best so far
    resumed = _FakeTrial(0, prune_at=99)
    value = trial_lib.run(resumed, spec, tmp_path)
    assert resumed.user_attrs["epochs_trained"] == 1 and [s for s, _ in resumed.reports] == [1, 2, 3]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert value == max(r["noisy_val_acc_ema"] for r in rows)
