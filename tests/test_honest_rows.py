"""Every row says what ran, and what it cost: a label correction that never started is no -LC row (and is refused
at train time), `sln evaluate` and `sln report` pool the same runs, and the report's cost keys and grid total."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from sln_cli import config as config_lib
from sln_cli import evaluate, methods, presets
from sln_cli.cli import app
from sln_cli.errors import SlnError
from sln_cli.report import collect, cost, render
from sln_cli.rundir import experiments

runner = CliRunner()


def _run(path, overrides=(), *, acc=0.8, epochs=2, timed=True, devices=1, meta=None, edit=None):
    tree = config_lib.to_dict(config_lib.resolve(presets.load("quickstart"), [f"optim.epochs={epochs}", *overrides]))
    if edit:
        edit(tree)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    rows = [{"epoch": e, "test_acc": acc, "test_acc_ema": acc + 0.05, "test_loss": 1.0, "test_loss_ema": 0.9,
             "images_per_second": 100.0 * e,
             **({"wall_seconds": 10.0, "devices": devices} if timed else {})} for e in range(1, epochs + 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(json.dumps({"epochs": epochs, "best": None}))
    if meta is not None:
        (path / "meta.json").write_text(json.dumps(meta))
    return path


def _never_corrected(tree):
    tree["sln"]["correction"] = tree["optim"]["epochs"]  # as runs made before the rule could hold


def test_a_correction_at_or_past_the_last_epoch_is_refused_at_train_time():
    with pytest.raises(SlnError, match=r"sln.correction \(40\) must be below optim.epochs \(10\)"):
        config_lib.resolve(presets.load("quickstart"), ["optim.epochs=10", "sln.correction=40"])
    with pytest.raises(SlnError, match=r"sln.correction \(10\) must be below optim.epochs \(10\)"):
        config_lib.resolve(presets.load("quickstart"), ["optim.epochs=10", "sln.correction=10"])
    assert config_lib.resolve(presets.load("quickstart"), ["optim.epochs=10", "sln.correction=9"]).sln.correction == 9
    result = runner.invoke(app, ["train", "--preset", "quickstart", "--epochs", "10", "--set", "sln.correction=40"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "would never correct" in result.output


def test_a_run_on_disk_that_never_corrected_is_reported_as_what_it_was(tmp_path):
    _run(tmp_path / "lc-never", ["run.seed=0"], acc=0.7, edit=_never_corrected)
    _run(tmp_path / "sln", ["run.seed=1"], acc=0.9)
    cells = {c["method"]: c for c in collect.cells(collect.find_runs([str(tmp_path / "*")]))}
    assert set(cells) == {"SLN", "SLN-MO"}  # never SLN-MO-LC; pooled with the SLN run of the other seed
    assert cells["SLN"]["n_runs"] == 2 and cells["SLN"]["mean"] == pytest.approx(0.8)
    tree = yaml.safe_load((tmp_path / "lc-never" / "config.yaml").read_text())
    config = config_lib.resolve(experiments.as_it_ran(tree))
    assert methods.display_name(config, "ema") == "SLN-MO" and config.sln.correction is None


def test_evaluate_and_report_pool_the_same_runs():
    base = presets.load("quickstart")
    a = config_lib.resolve(base, ["run.seed=0", "run.device=cpu", "run.cpu_threads=1", "data.workers=2"])
    b = config_lib.resolve(base, ["run.seed=1", "run.eval_batch_size=64"])
    c = config_lib.resolve(base, ["run.seed=2", "sln.sigma=0.7"])
    keys = {name: experiments.experiment_key(config_lib.to_dict(cfg)) for name, cfg in zip("abc", (a, b, c),
                                                                                             strict=True)}
    assert keys["a"] == keys["b"] != keys["c"]
    assert evaluate.SEED_KEYS is collect.SEED_KEYS is experiments.SEED_KEYS
    rows = [{"name": n, "run": n, "checkpoint": "final.pt", "weights": "raw", "seed": s, "method": "SLN",
             "split": "test", "num_samples": 10, "accuracy": acc}
            for n, s, acc in (("a", 0, 0.5), ("b", 1, 0.7), ("c", 2, 0.9))]
    (aggregate,) = evaluate.seed_aggregates(rows, {"a": a, "b": b, "c": c})
    assert aggregate["runs"] == ["a", "b"] and aggregate["num_runs"] == 2 and aggregate["std_ddof"] == 1
    assert aggregate["accuracy"] == pytest.approx(0.6)


def test_cells_carry_the_same_count_and_spread_keys_as_evaluate(tmp_path):
    _run(tmp_path / "a", ["run.seed=0"], acc=0.8)
    _run(tmp_path / "b", ["run.seed=1"], acc=0.6)
    cell = collect.cells(collect.find_runs([str(tmp_path / "*")]))[0]
    assert cell["num_runs"] == cell["n_runs"] == 2 and cell["std_ddof"] == 1


def test_cost_per_cell_and_the_grid_total_count_each_epoch_once(tmp_path):
    twin = _run(tmp_path / "sln", ["run.seed=0"], epochs=4)  # 4 epochs × 10 s on one device
    _run(tmp_path / "lc", ["run.seed=0", "sln.correction=2"], epochs=4, devices=2,
         meta={"branched_from": str(twin), "branched_at": 2})  # epochs 1-2 copied from the twin
    found = collect.find_runs([str(tmp_path / "*")])
    cells = {c["method"]: c for c in collect.cells(found)}
    assert cells["SLN"]["wall_seconds"] == 40 and cells["SLN"]["device_hours"] == pytest.approx(40 / 3600)
    assert cells["SLN-MO-LC"]["wall_seconds"] == 40 and cells["SLN-MO-LC"]["device_hours"] == pytest.approx(80 / 3600)
    assert cells["SLN"]["images_per_second"] == pytest.approx(250)  # mean of 100, 200, 300, 400
    total = cost.grid_total(found)
    assert total == {"runs": 2, "wall_seconds": 60, "device_hours": pytest.approx((40 + 40) / 3600),
                     "runs_without_times": 0}  # the LC run's own epochs 3-4 only: 2 × 10 s × 2 devices
    markdown = render.to_markdown(collect.cells(found), total=total)
    assert "| SLN | 0:00:40, 0.0111 device-h, 250 img/s |" in markdown
    assert "grid total: 2 runs, 0:01:00 wall, 0.0222 device-hours" in markdown


def test_runs_made_before_times_were_recorded_show_n_a(tmp_path):
    _run(tmp_path / "old", timed=False)
    found = collect.find_runs([str(tmp_path / "old")])
    cell = collect.cells(found)[0]
    assert cell["wall_seconds"] is None and cell["device_hours"] is None and cell["images_per_second"] == 150
    assert cost.cost_text(cell) == "cost n/a, n/a device-h, 150 img/s"
    assert cost.grid_total(found)["runs_without_times"] == 1


def test_a_gce_run_made_before_truncation_stays_plain_lq(tmp_path):
    def old_gce(tree):
        tree["method"] = {"name": "gce", "gce_q": 0.7, "sam": False}  # no gce_k: made before truncated GCE
        tree["sln"]["sigma"] = 0.0

    _run(tmp_path / "old", ["run.seed=0"], edit=old_gce)
    tree = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())
    assert config_lib.resolve(experiments.as_it_ran(tree)).method.gce_k == 0.0  # evaluate, resume: plain Lq
    _run(tmp_path / "new", ["run.seed=1", "sln.sigma=0"],
         edit=lambda t: t.update(method={"name": "gce", "gce_q": 0.7, "gce_k": 0.5, "sam": False}))
    labels = {c["method"] for c in collect.cells(collect.find_runs([str(tmp_path / "*")]))}
    assert labels == {"GCE (gce_k=0.0)", "GCE (gce_k=0.5)", "GCE-MO (gce_k=0.0)", "GCE-MO (gce_k=0.5)"}
