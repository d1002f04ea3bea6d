"""`sln report`'s three accuracies: last epoch, noisy-validation selected, best test epoch (oracle), per network."""

import json

import yaml
from typer.testing import CliRunner

from sln_cli import config as config_lib
from sln_cli import presets
from sln_cli.cli import app
from sln_cli.report import collect, selection

cli = CliRunner()
# per epoch: (test_acc, noisy_val_acc, test_acc_ema, noisy_val_acc_ema) of two seeds
CURVES = {0: [(0.50, 0.40, 0.55, 0.45), (0.70, 0.48, 0.60, 0.50), (0.60, 0.47, 0.65, 0.52), (0.55, 0.42, 0.62, 0.51)],
          1: [(0.52, 0.41, 0.50, 0.40), (0.58, 0.45, 0.66, 0.44), (0.68, 0.46, 0.64, 0.49), (0.50, 0.46, 0.63, 0.47)]}


def _run(path, seed, *, noisy_val=True):
    overrides = ["optim.epochs=4", f"run.seed={seed}"] + (["data.noisy_val=50"] if noisy_val else [])
    tree = config_lib.to_dict(config_lib.resolve(presets.load("quickstart"), overrides))
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    rows = []
    for epoch, (test, val, test_ema, val_ema) in enumerate(CURVES[seed], start=1):
        row = {"epoch": epoch, "test_acc": test, "test_acc_ema": test_ema, "test_loss": 1 - test,
               "test_loss_ema": 1 - test_ema}
        if noisy_val:
            row |= {"noisy_val_acc": val, "noisy_val_acc_ema": val_ema}
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(json.dumps({"epochs": 4, "best": None}))


def _cells(root):
    found = collect.find_runs([str(root)])
    return {c["method"]: c for c in selection.add_selections(collect.cells(found), found)}


def test_each_network_selects_on_its_own_noisy_validation_curve_and_the_oracle_on_the_test_curve(tmp_path):
    for seed in (0, 1):
        _run(tmp_path / "sweep" / f"s{seed}", seed)
    cells = _cells(tmp_path / "sweep")
    raw, ema = cells["SLN"]["selections"], cells["SLN-MO"]["selections"]
    # seed 0 raw: noisy val peaks at epoch 2 (0.48), seed 1 raw: first of the 0.46s is epoch 3
    assert raw["noisy_val_selected"]["epochs"] == [2, 3] and raw["noisy_val_selected"]["values"] == [0.70, 0.68]
    assert ema["noisy_val_selected"]["epochs"] == [3, 3] and ema["noisy_val_selected"]["values"] == [0.65, 0.64]
    assert raw["last_epoch"]["values"] == [0.55, 0.50] and ema["last_epoch"]["values"] == [0.62, 0.63]
    assert raw["best_test_epoch_oracle"]["epochs"] == [2, 3] and ema["best_test_epoch_oracle"]["values"] == [0.65, 0.66]
    assert abs(ema["noisy_val_selected"]["mean"] - 0.645) < 1e-12


def test_the_report_prints_the_three_side_by_side_with_the_oracle_marked(tmp_path):
    _run(tmp_path / "sweep" / "s0", 0)
    result = cli.invoke(app, ["report", str(tmp_path / "sweep"), "--no-figures", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "| digits sym 40% | SLN-MO | 62.00 (ep 4) | 65.00 (ep 3) | 65.00 (ep 3) |" in result.output
    assert "noisy-val selected" in result.output and "oracle †" in result.output
    assert "must not" in result.output and "65.00 (ep 3)" in result.output
    data = json.loads(cli.invoke(app, ["report", str(tmp_path / "sweep"), "--json", "--no-figures"]).stdout)
    assert set(data[0]["selections"]) == {"last_epoch", "noisy_val_selected", "best_test_epoch_oracle"}


def test_runs_without_a_noisy_validation_split_have_none_and_no_extra_table(tmp_path):
    _run(tmp_path / "sweep" / "s0", 0, noisy_val=False)
    cells = _cells(tmp_path / "sweep")
    assert cells["SLN"]["selections"]["noisy_val_selected"] is None
    assert cells["SLN"]["selections"]["best_test_epoch_oracle"]["values"] == [0.70]
    result = cli.invoke(app, ["report", str(tmp_path / "sweep"), "--no-figures", "--format", "markdown"])
    assert result.exit_code == 0 and "noisy-val selected" not in result.output
