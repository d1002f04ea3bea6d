"""`sln report`: grouping by setting and method, mean ± std against hand-computed values, unfinished runs,
the paper's numbers, the five formats and the figures. Runs are written by hand (no training)."""

import csv
import io
import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from sln_cli import config as config_lib
from sln_cli import presets
from sln_cli.cli import app
from sln_cli.errors import SlnError
from sln_cli.report import collect, render

cli = CliRunner()
KEYS = {"setting", "method", "weights", "n_runs", "mean", "std", "values", "paper", "delta"}


def _run(path, overrides=(), *, raw, ema, epochs=2, done=None, edit=None):
    """A run directory whose last epoch has test accuracy `raw` (network) and `ema` (EMA)."""
    tree = config_lib.to_dict(config_lib.resolve(presets.load("quickstart"), [f"optim.epochs={epochs}", *overrides]))
    if edit:
        edit(tree)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    done = epochs if done is None else done
    rows = [{"epoch": e, "test_acc": raw - 0.1 * (done - e), "test_acc_ema": ema, "test_loss": 2 * raw,
             "test_loss_ema": 2 * ema, "memorized": 0.5} for e in range(1, done + 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if done == epochs:
        (path / "summary.json").write_text(json.dumps({"epochs": epochs, "best": None}))
    return path


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for seed, acc in enumerate([0.60, 0.62, 0.67]):
        _run(root / f"ce{seed}", ["sln.sigma=0", f"run.seed={seed}"], raw=acc, ema=0.7)
    for seed, (raw, ema) in enumerate([(0.8, 0.9), (0.9, 0.92)]):
        _run(root / f"sln{seed}", [f"run.seed={seed}"], raw=raw, ema=ema)
    _run(root / "sln9", ["run.seed=9"], raw=0.1, ema=0.1, done=1)  # unfinished: 1 of 2 epochs
    _run(root / "lc0", ["sln.correction=1"], raw=0.5, ema=0.95)
    return root


def _by_method(cells):
    return {c["method"]: c for c in cells}


def test_cells_are_mean_and_sample_std_over_finished_seeds(sweep):
    cells = _by_method(collect.cells(collect.find_runs([str(sweep)])))
    assert list(cells) == ["CE", "SLN", "SLN-MO", "SLN-MO-LC"]
    ce = cells["CE"]
    assert ce["weights"] == "raw" and ce["n_runs"] == 3 and ce["values"] == [0.60, 0.62, 0.67]
    assert ce["mean"] == pytest.approx(0.63) and ce["std"] == pytest.approx(math.sqrt(0.0013))
    assert cells["SLN"]["mean"] == pytest.approx(0.85) and cells["SLN"]["std"] == pytest.approx(math.sqrt(0.005))
    assert cells["SLN-MO"]["weights"] == "ema" and cells["SLN-MO"]["mean"] == pytest.approx(0.91)
    assert cells["SLN-MO-LC"]["n_runs"] == 1 and cells["SLN-MO-LC"]["std"] is None
    # the unfinished run is listed, never averaged
    assert cells["SLN"]["n_runs"] == 2 and cells["SLN"]["unfinished"] == [
        {"run_dir": str(sweep / "sln9"), "epochs_done": 1, "epochs_total": 2}]
    assert {c["setting"] for c in cells.values()} == {"digits sym 40%"}
    assert all(c["paper"] is None for c in cells.values())


def test_every_weights_adds_the_ema_of_ce_and_the_raw_lc_network(sweep):
    cells = _by_method(collect.cells(collect.find_runs([str(sweep)]), every=True))
    assert set(cells) == {"CE", "CE-MO", "SLN", "SLN-MO", "SLN-LC", "SLN-MO-LC"}
    assert cells["CE-MO"]["mean"] == pytest.approx(0.7)


def test_nll_reads_the_test_loss(sweep):
    cells = _by_method(collect.cells(collect.find_runs([str(sweep)]), metric="nll"))
    assert cells["CE"]["mean"] == pytest.approx(1.26) and cells["CE"]["metric"] == "test_loss"


def test_runs_before_and_after_the_method_section_group_together_and_other_methods_name_themselves(tmp_path):
    _run(tmp_path / "old", raw=0.8, ema=0.9)

    def with_method(name):
        def edit(tree):
            tree["method"] = {"name": name, "gce_q": None, "sam": False}
        return edit

    _run(tmp_path / "new", ["run.seed=1"], raw=0.6, ema=0.7, edit=with_method("sln"))
    _run(tmp_path / "gce", raw=0.5, ema=0.55, edit=with_method("gce"))
    cells = _by_method(collect.cells(collect.find_runs([str(tmp_path / "*")])))
    assert cells["SLN"]["n_runs"] == 2 and cells["SLN"]["mean"] == pytest.approx(0.7)
    assert cells["GCE"]["mean"] == pytest.approx(0.5) and cells["GCE-MO"]["mean"] == pytest.approx(0.55)


def test_runs_that_differ_beyond_the_seed_are_not_pooled(tmp_path):
    _run(tmp_path / "a", ["sln.sigma=0.5"], raw=0.8, ema=0.9)
    _run(tmp_path / "b", ["sln.sigma=1.0"], raw=0.6, ema=0.7)
    cells = _by_method(collect.cells(collect.find_runs([str(tmp_path / "a"), str(tmp_path / "b")])))
    assert cells["SLN (sigma=0.5)"]["mean"] == pytest.approx(0.8)
    assert cells["SLN (sigma=1.0)"]["mean"] == pytest.approx(0.6)


def test_the_paper_number_and_the_difference_stand_beside_ours(tmp_path):
    def cifar(tree):
        tree["data"]["dataset"] = "cifar10"

    _run(tmp_path / "lc", ["sln.correction=1"], raw=0.5, ema=0.95, edit=cifar)
    (cell,) = collect.cells(collect.find_runs([str(tmp_path / "lc")]))
    assert cell["setting"] == "cifar10 sym 40%" and cell["method"] == "SLN-MO-LC"
    assert cell["paper"] == pytest.approx(0.87) and cell["delta"] == pytest.approx(0.95 - 0.87)
    assert cell["paper_std"] == pytest.approx(0.0027) and cell["paper_checked"] is True
    assert "paper 87.00 ± 0.27; Δ +8.00: not within 1 pt, spread n/a" in render.cell_text(cell)  # one seed: no s


def test_the_official_label_files_stand_for_the_paper_settings(tmp_path):
    def official(tree):
        tree["data"]["dataset"] = "cifar10"
        tree["noise"]["labels"] = "official:cifar10/asym0.4"

    _run(tmp_path / "r", ["sln.sigma=0"], raw=0.8, ema=0.8, edit=official)
    (cell,) = collect.cells(collect.find_runs([str(tmp_path / "r")]))
    assert cell["setting"] == "official:cifar10/asym0.4" and cell["paper"] == pytest.approx(0.7272)


def test_one_column_never_mixes_datasets(tmp_path):
    for name, dataset in [("a", "digits"), ("b", "cifar10")]:
        def edit(tree, dataset=dataset):
            tree["data"]["dataset"] = dataset
            tree["noise"]["labels"] = f"{dataset}/sym0.4.csv"
        _run(tmp_path / name, raw=0.5, ema=0.5, edit=edit)
    result = cli.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--no-figures"])
    assert result.exit_code == 1 and "different datasets (cifar10, digits)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_formats(sweep):
    cells = collect.cells(collect.find_runs([str(sweep)]))
    table = list(csv.DictReader(io.StringIO(render.to_csv(cells))))
    assert table[0]["method"] == "CE" and float(table[0]["mean"]) == pytest.approx(0.63)
    assert "unfinished" in table[1] and "sln9:1/2" in table[1]["unfinished"]
    markdown = render.to_markdown(cells)
    assert "| CE | 63.00 ± 3.61 (3) |" in markdown and "unfinished: 1/2" in markdown
    latex = render.to_latex(cells)
    assert "CE & $63.00 \\pm 3.61$ \\\\" in latex and "digits sym 40\\%" in latex


def test_json_keeps_its_contract_and_figures_are_written(sweep):
    result = cli.invoke(app, ["report", str(sweep), "--json"])
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)
    assert all(KEYS <= set(c) for c in cells) and len(cells) == 4
    for name in ("accuracy.png", "memorisation.png"):
        assert (sweep / "report" / name).read_bytes()[:4] == b"\x89PNG"
    again = cli.invoke(app, ["report", str(sweep), "--format", "markdown"])  # our own PNGs are replaced freely
    assert again.exit_code == 0 and again.stdout.startswith("test accuracy (%), last epoch")


def test_a_png_sln_did_not_write_is_kept(sweep, tmp_path):
    out = tmp_path / "pictures"
    out.mkdir()
    (out / "accuracy.png").write_bytes(b"mine")
    result = cli.invoke(app, ["report", str(sweep), "--out", str(out)])
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert (out / "accuracy.png").read_bytes() == b"mine"


@pytest.mark.parametrize(("args", "message"), [
    (["--metric", "ece"], "`sln evaluate RUN...` computes it"), (["--select", "best"], "--select takes"),
    (["--select", "best-val"], "no validation split"), (["--format", "html"], "Invalid value for '--format'"),
])
def test_report_mistakes_are_one_line_errors(sweep, args, message):
    result = cli.invoke(app, ["report", str(sweep), "--no-figures", *args])
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_nothing_to_report(tmp_path):
    with pytest.raises(SlnError, match="neither a run directory nor a sweep"):
        collect.find_runs([str(tmp_path)])
    with pytest.raises(SlnError, match="nothing matches"):
        collect.find_runs([str(tmp_path / "x*")])
