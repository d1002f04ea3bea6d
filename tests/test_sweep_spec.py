"""Sweep specs: shipped sweeps load, names are stable, every mistake is one line, the dry run's JSON contract."""

import json

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.errors import SlnError
from sln_cli.sweep import spec as spec_lib
from sln_cli.sweep import status as status_lib

runner = CliRunner()


def _spec(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_shipped_sweep_loads_and_resolves():
    shipped = spec_lib.available()
    assert {"quickstart-sweep", "paper-cifar10", "paper-cifar100", "paper-clothing1m"} <= set(shipped)
    for name in shipped:
        assert spec_lib.load(name).cells


def test_the_quickstart_sweep_is_nine_runs_with_lc_twins():
    sweep = spec_lib.load("quickstart-sweep")
    names = [c.name for c in sweep.cells]
    assert len(names) == 9 and "quickstart-SLN-MO-LC-seed2" in names
    lc = sweep.cell("quickstart-SLN-MO-LC-seed1")
    assert lc.twin == "quickstart-SLN-seed1" and lc.correction == 40
    assert sweep.cell("quickstart-SLN-seed1").config["run"]["keep_state_at"] == [40]
    assert sweep.cell("quickstart-CE-seed1").config["run"]["keep_state_at"] == []
    assert sweep.cell("quickstart-CE-seed1").config["sln"]["sigma"] == 0.0


@pytest.mark.parametrize("name", ["sota-cifar10", "sota-cifar10n"])
def test_the_sota_sweeps_train_every_method_on_the_same_labels_with_its_authors_recipe(name):
    sweep = spec_lib.load(name)
    for preset in {c.config["description"] for c in sweep.cells}:
        cells = {c.name.split("-seed")[0].rsplit("-", 1)[-1]: c.config for c in sweep.cells
                 if c.config["description"] == preset and c.seed == 0}
        assert {config["noise"]["seed"] for config in cells.values()} == {cells["CE"]["noise"]["seed"]}
        assert {config["noise"]["labels"] for config in cells.values()} == {cells["CE"]["noise"]["labels"]}
        dividemix, sop = cells["DivideMix"], cells["SOP"]
        assert (dividemix["method"]["name"], dividemix["model"]["name"], dividemix["optim"]["batch_size"],
                dividemix["optim"]["lr"], list(dividemix["optim"]["lr_milestones"])) == (
            "dividemix", "preact-resnet18", 64, 0.02, [150])  # official Train_CIFAR.py
        assert (sop["method"]["name"], sop["model"]["name"], sop["optim"]["lr_schedule"]) == (
            "sop", "resnet34", "cosine")  # official config_cifar100.json
        assert cells["SOP+SLN"]["sln"]["sigma"] == 0.5 and cells["SOP"]["sln"]["sigma"] == 0.0
        assert cells["SOP+"]["method"]["name"] == "sop-plus" and cells["SOP+"]["model"]["name"] == "resnet34"


def test_the_paper_grid_saves_250_of_every_300_lc_epochs(tmp_path):
    sweep = spec_lib.load("paper-cifar10", out=tmp_path / "s")
    rows = status_lib.table(sweep, tmp_path / "s")
    assert len(rows) == 60
    assert status_lib.savings(rows) == {"runs": 60, "branched": 20, "epochs_total": 18000, "epochs_saved": 5000}


def test_names_are_stable_and_readable(tmp_path):
    text = ("presets: [quickstart]\nmethods: {CE: {sln.sigma: 0}}\ngrid: {noise.rate: [0.2, 0.4], noise.seed: [1]}\n"
            "seeds: [3]\n")
    first = spec_lib.load(_spec(tmp_path, text), out=tmp_path / "out")
    again = spec_lib.load(_spec(tmp_path, text), out=tmp_path / "out")
    assert [c.name for c in first.cells] == [c.name for c in again.cells] == [
        "quickstart-CE-rate0.2-seed1-seed3", "quickstart-CE-rate0.4-seed1-seed3"]
    assert first.cells[0].run_dir == tmp_path / "out" / "quickstart-CE-rate0.2-seed1-seed3"
    assert first.cells[1].config["noise"]["rate"] == 0.4 and first.cells[1].config["run"]["seed"] == 3


def test_command_line_seeds_and_sets_override_the_spec(tmp_path):
    sweep = spec_lib.load("quickstart-sweep", seeds="4-5,9", overrides=["optim.epochs=45"])
    assert sorted({c.seed for c in sweep.cells}) == [4, 5, 9]
    assert {c.epochs for c in sweep.cells} == {45}


def test_an_lc_cell_that_would_never_correct_is_refused_naming_it():
    # correction after epoch 40 of 10: the LC cells would be SLN runs reported as SLN-MO-LC
    with pytest.raises(SlnError, match=r"quickstart × SLN-MO-LC: sln.correction \(40\) must be below optim.epochs "
                                       r"\(10\)") as error:
        spec_lib.load("quickstart-sweep", overrides=["optim.epochs=10"])
    assert "\n" not in str(error.value) and "× CE" not in str(error.value)
    result = runner.invoke(app, ["sweep", "quickstart-sweep", "--dry-run", "--set", "optim.epochs=10"])
    assert result.exit_code == 1 and "SLN-MO-LC: sln.correction (40) must be below" in result.output


@pytest.mark.parametrize(("override", "message"), [
    ("sln.correction=7", "--set sln.correction=7 would turn the cells of CE, SLN into label-correction runs"),
    ("sln.correction=null", "--set sln.correction=None would change the key that defines method SLN-MO-LC"),
    ("sln.sigma=0", "--set sln.sigma=0 would change the key that defines method CE"),
])
def test_a_sweep_wide_set_never_changes_which_cells_are_lc_or_a_methods_own_key(override, message):
    with pytest.raises(SlnError) as error:
        spec_lib.load("quickstart-sweep", overrides=[override])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_set_that_makes_two_methods_identical_names_the_cells(tmp_path):
    # forward_anchor's default is argmax on CIFAR-100: B's own setting becomes what A gets anyway
    text = ("presets: [quickstart]\nmethods: {A: {method.name: forward}, "
            "B: {method.name: forward, method.forward_anchor: argmax}}\n")
    assert len(spec_lib.load(_spec(tmp_path, text)).cells) == 2  # digits: percentile vs argmax, two runs
    with pytest.raises(SlnError, match="--set data.dataset=cifar100 makes the cells quickstart-A-seed0 and "
                                       "quickstart-B-seed0 \\(methods A and B\\) identical"):
        spec_lib.load(_spec(tmp_path, text), overrides=["data.dataset=cifar100"])
    same = "presets: [quickstart]\nmethods: {A: {optim.lr: 0.05}, B: {optim.batch_size: 64}}\n"
    assert len(spec_lib.load(_spec(tmp_path, same), overrides=["optim.epochs=3"]).cells) == 2  # already alike


def test_the_dry_run_shows_each_cells_differences_from_its_preset():
    rows = status_lib.table(spec_lib.load("quickstart-sweep", seeds="0", overrides=["optim.epochs=50"]),
                            spec_lib.Path("/nonexistent-sweep"))
    changes = {row["method"]: row["changes"] for row in rows}
    assert changes == {"CE": {"optim.epochs": 50, "sln.sigma": 0.0}, "SLN": {"optim.epochs": 50},
                       "SLN-MO-LC": {"optim.epochs": 50, "sln.correction": 40}}
    result = runner.invoke(app, ["sweep", "quickstart-sweep", "--dry-run", "--seeds", "0", "--out", "/nonexistent"])
    assert result.exit_code == 0 and "sln.correction=40" in result.output and "sln.sigma=0.0" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("presets: [quickstart]\nmethod: {}\n", "unknown sweep key 'method'"),
        ("presets: [quickstart]\nmethods: {CE: {sln.sigm: 0}}\n", "did you mean 'sln.sigma'"),
        ("presets: [quickstart]\nmethods: {CE: {sigma: 0}}\n", "must be section.key"),
        ("presets: [quickstrat]\n", "unknown preset 'quickstrat'"),
        ("presets: []\n", "presets must be a non-empty list"),
        ("presets: [quickstart]\ngrid: {noise.rate: []}\n", "grid.noise.rate must be a non-empty list"),
        ("presets: [quickstart]\nseeds: [1, 1]\n", "seeds must be distinct"),
        ("presets: [quickstart]\nset: {run.seed: 3}\n", "use `seeds:`"),
        ("presets: [quickstart]\nmethods: {A: {noise.rate: 0.1}}\ngrid: {noise.rate: [0.2]}\n", "keep it in one place"),
        ("presets: [quickstart]\nmethods: {CE: {sln.sigma: -1}}\n", "sln.sigma must not be negative"),
        ("presets: [quickstart]\nmethods: {a/b: {}}\n", "method names"),
        ("- just a list\n", "must hold a mapping"),
    ],
)
def test_spec_mistakes_are_one_line_errors(tmp_path, text, message):
    result = runner.invoke(app, ["sweep", _spec(tmp_path, text), "--dry-run", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "1-x"], "--seeds takes"), (["--seeds", "3-1"], "--seeds takes"), (["--set", "run.out=x"], "--out"),
    (["--set", "optim.epoch=3"], "did you mean 'optim.epochs'"), (["--json"], "add --dry-run"),
    (["--devices", "tpu"], "--devices"), (["--jobs", "0"], "--jobs must be at least 1"),
])
def test_command_line_mistakes_are_one_line_errors(tmp_path, args, message):
    result = runner.invoke(app, ["sweep", "quickstart-sweep", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_sweep_name_suggests_a_shipped_one():
    result = runner.invoke(app, ["sweep", "quickstart-swep", "--dry-run"])
    assert result.exit_code == 1 and "did you mean quickstart-sweep" in result.stderr


def test_dry_run_json_keeps_its_contract(tmp_path):
    result = runner.invoke(app, ["sweep", "quickstart-sweep", "--dry-run", "--json", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 9
    for row in rows:
        assert {"name", "run_dir", "status", "epochs_done", "epochs_total", "branch_from"} <= set(row)
        assert row["status"] == "pending" and row["epochs_done"] == 0 and row["epochs_total"] == 60
    lc = next(r for r in rows if r["name"] == "quickstart-SLN-MO-LC-seed0")
    assert lc["branch_from"] == str(tmp_path / "s" / "quickstart-SLN-seed0") and lc["epochs_saved"] == 40
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_dry_run_table_states_the_epochs_saved(tmp_path):
    result = runner.invoke(app, ["sweep", "paper-cifar10", "--dry-run", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "saving 5,000 epochs (27.8% of the grid)" in text and "at epoch 250" in text


def test_presets_lists_the_sweeps():
    result = runner.invoke(app, ["presets", "--json", "--sweeps"])
    assert result.exit_code == 0
    assert set(json.loads(result.stdout)) == set(spec_lib.available())
    table = runner.invoke(app, ["presets"])
    assert "quickstart-sweep" in table.stdout and "cifar10-sym-lc" in table.stdout


def test_parse_seeds():
    assert spec_lib.parse_seeds("0,1,2") == [0, 1, 2]
    assert spec_lib.parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(SlnError):
        spec_lib.parse_seeds("0-100000")


def test_a_run_made_before_a_new_config_key_still_belongs_to_its_cell(tmp_path):
    import yaml

    sweep = spec_lib.load("quickstart-sweep", seeds="0", out=tmp_path)
    cell = sweep.cells[0]
    saved = {section: dict(values) if isinstance(values, dict) else values for section, values in cell.config.items()}
    del saved["optim"]["grad_clip"]  # written before optim.grad_clip existed; the cell leaves it null
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    status_lib.check_config(cell)
    saved["optim"]["lr"] = 0.5
    (cell.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(SlnError, match="optim.lr differ"):
        status_lib.check_config(cell)
