"""`sln analyze issues --write-labels relabel|drop`: the new label file changes exactly the chosen samples, its
manifest says which and from where, its figures against the truth are right, and `sln train --labels` takes it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.labels.labelfile import DROPPED, read_label_file
from tests.conftest import TINY_RUN as TINY
from tests.test_evaluate import assert_one_line_error

runner = CliRunner()


def issues(*args: str) -> dict:
    result = runner.invoke(app, ["analyze", "issues", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def ranked(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_relabel_changes_the_flagged_samples_to_the_suggested_class(tiny_runs, tmp_path: Path) -> None:
    run = tiny_runs["sln-0"]
    result = issues(str(run), "--write-labels", "relabel", "--out", str(tmp_path / "o"))
    written = result["labels_written"]
    new, old = read_label_file(written["path"]), read_label_file(run / "labels.csv")
    rows = ranked(result["files"]["csv"])
    flagged = {int(r["index"]): int(r["suggested_label"]) for r in rows if r["flagged"] == "1"}
    expected = old.noisy.copy()
    for index, suggested in flagged.items():
        expected[index] = suggested
    np.testing.assert_array_equal(new.noisy, expected)
    np.testing.assert_array_equal(new.clean, old.clean)  # the truth column is carried over untouched
    changed = sorted(i for i, s in flagged.items() if s != old.noisy[i])
    assert new.manifest["changed_indices"] == changed and written["num_changed"] == len(changed)
    assert new.manifest["action"] == "relabel" and new.manifest["derived_from"]["run"] == str(run)
    assert new.manifest["realized_noise_rate"] == np.mean(new.noisy != new.clean)  # the new file's, not the run's
    assert new.manifest["derived_from"]["labels"]["mode"] == "sym"
    wrong = [old.noisy[i] != old.clean[i] for i in changed]
    assert written["precision"] == np.mean(wrong)
    trained = np.array([int(r["index"]) for r in rows])
    assert written["noise_rate_before"] == np.mean(old.noisy[trained] != old.clean[trained])
    assert written["noise_rate_after"] == np.mean(new.noisy[trained] != new.clean[trained])


def test_drop_the_top_n_and_train_on_the_rest(tiny_runs, tmp_path: Path) -> None:
    run = tiny_runs["sln-0"]
    result = issues(str(run), "--write-labels", "drop", "--top", "7", "--out", str(tmp_path / "o"))
    top = [int(r["index"]) for r in ranked(result["files"]["csv"])[:7]]
    new = read_label_file(result["labels_written"]["path"])
    assert sorted(np.flatnonzero(new.noisy == DROPPED).tolist()) == sorted(top)
    retrained = tmp_path / "retrained"
    done = runner.invoke(app, ["train", *TINY, "--labels", result["labels_written"]["path"], "--out", str(retrained)])
    assert done.exit_code == 0, done.output
    meta = json.loads((retrained / "meta.json").read_text())
    assert meta["num_train"] == 200 - 7  # the same seeded subset, less the dropped samples


def test_requests_that_make_no_sense_are_one_line_errors(tiny_runs, tmp_path: Path) -> None:
    run, out = str(tiny_runs["sln-0"]), ["--out", str(tmp_path / "o")]
    assert_one_line_error(["analyze", "issues", run, "--write-labels", "fix", *out],
                          "Invalid value for '--write-labels'")
    assert_one_line_error(["analyze", "issues", run, "--write-labels", "drop", "--top", "3", "--threshold", "2",
                           *out], "give one of them")
    assert not (tmp_path / "o").exists()


def test_sln_refreshes_its_own_folder_and_asks_before_replacing_a_users_file(tiny_runs, tmp_path: Path) -> None:
    run = str(tiny_runs["ce-0"])
    issues(run, "--top", "2")
    issues(run, "--top", "2")  # RUN/analysis/issues-*: sln's own, refreshed without --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "issues.csv").write_text("my notes\n")
    assert_one_line_error(["analyze", "issues", run, "--out", str(mine)], "pass --overwrite")
    assert (mine / "issues.csv").read_text() == "my notes\n"
    issues(run, "--out", str(mine), "--overwrite")
