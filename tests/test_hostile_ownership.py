"""Ownership holds for every command that writes (issue 24): each is run once into a fresh place to learn what it
writes; then the same names are put in a folder the user made, beside the user's notes, and the command must
refuse (one line) without --overwrite, replace only what it names with --overwrite, and never mark the user's
folder as its own, nor touch the notes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sln_cli.rundir.ownership import MARKER
from tests.conftest import TINY as TINY_BASE
from tests.hostile import assert_one_line_error, sln, snapshot, write_run

TINY = [*TINY_BASE, "--device", "cpu", "--epochs", "1"]
NOTES = "notes.txt"

# name: (arguments, with {run} a finished run, {dest} the output folder; whether --overwrite is accepted)
WRITERS = {
    "train": (["train", *TINY, "--out", "{dest}"], True),
    "sweep": (["sweep", "{spec}", "--out", "{dest}"], False),
    "report": (["report", "{report_runs}", "--out", "{dest}"], True),
    "corrupt --out": (["corrupt", "--dataset", "digits", "--mode", "sym", "--rate", "0.4", "--out",
                       "{dest}/labels.csv"], True),
    "corrupt --plot": (["corrupt", "--inspect", "{run}/labels.csv", "--plot", "{dest}/noise.png"], True),
    "evaluate --out": (["evaluate", "{run}", "--weights", "raw", "--out", "{dest}"], True),
    "evaluate --csv": (["evaluate", "{run}", "--weights", "raw", "--csv", "{dest}/table.csv"], True),
    "evaluate --save-predictions": (["evaluate", "{run}", "--weights", "raw", "--save-predictions",
                                     "{dest}/p.npz"], True),
    "analyze confidence": (["analyze", "confidence", "{run}", "--out", "{dest}"], True),
    "analyze issues": (["analyze", "issues", "{run}", "--out", "{dest}"], True),
    "analyze landscape": (["analyze", "landscape", "{run}", "--points", "3", "--out", "{dest}"], True),
    "cache": (["cache", "--data-dir", "{images}", "--out", "{dest}", "--workers", "0"], False),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    outcome = sln("train", *TINY, "--out", root / "run")
    assert outcome.exit_code == 0, outcome.stderr
    write_run(root / "runs" / "a")
    (root / "grid.yaml").write_text("presets: [quickstart]\nseeds: [0]\nset: {optim.epochs: 1, data.train_limit: 100,"
                                    " data.test_limit: 50, model.name: mlp}\n")
    for name in ("cat", "dog"):
        (root / "images" / "train" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "images" / "train" / name / "a.png")
    return {"run": root / "run", "report_runs": root / "runs", "spec": root / "grid.yaml", "images": root / "images"}


def command(name: str, inputs: dict[str, Path], dest: Path) -> list[str]:
    values = {**{key: str(path) for key, path in inputs.items()}, "dest": str(dest)}
    return [arg.format(**values) for arg in WRITERS[name][0]]


def written(folder: Path) -> list[Path]:
    """The files a command wrote into a fresh folder (its marker and lock aside), relative to it."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name not in (MARKER,
                                                                                                    ".sln.lock"))


@pytest.mark.slow  # every writing command, three or four times each
@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_keeps_the_users_folder_and_files(inputs, tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if name == "sweep":
        from sln_cli.sweep import runner

        monkeypatch.setattr(runner, "LOOK_SECONDS", 0.05)
    fresh = tmp_path / "fresh"
    outcome = sln(*command(name, inputs, fresh))
    assert outcome.exit_code == 0, outcome.stderr[-2000:]
    names = written(fresh)
    assert names, "the command wrote nothing: the test would prove nothing"

    # the user's folder: notes, and a file of the user's at every name the command writes
    user = tmp_path / "user"
    user.mkdir()
    (user / NOTES).write_text("the user's notes")
    for relative in names:
        (user / relative).parent.mkdir(parents=True, exist_ok=True)
        (user / relative).write_bytes(b"the user's own file")
    before = snapshot(user)
    assert_one_line_error(sln(*command(name, inputs, user)))
    assert snapshot(user) == before, "changed without --overwrite"

    if WRITERS[name][1]:
        outcome = sln(*command(name, inputs, user), "--overwrite")
        if outcome.exit_code != 0:
            assert_one_line_error(outcome)  # e.g. train: a run directory sln did not make is never re-claimed
            assert snapshot(user) == before
        after = snapshot(user)
        assert after[str(user / NOTES)] == b"the user's notes"
        untouched = [p for p in before if p not in after]
        assert not untouched, f"removed: {untouched}"
    assert not (user / MARKER).exists(), "the user's folder was marked as sln's"

    # a user's folder holding only notes: used or refused, never marked, the notes kept
    other = tmp_path / "other"
    other.mkdir()
    (other / NOTES).write_text("notes")
    outcome = sln(*command(name, inputs, other))
    if outcome.exit_code != 0:
        assert_one_line_error(outcome)
    assert (other / NOTES).read_text() == "notes" and not (other / MARKER).exists()
    shutil.rmtree(other)


def test_report_overwrite_reaches_the_figures_and_a_second_report_asks_again(inputs, tmp_path):
    """The issue's cases: `--overwrite` was not passed to the figures; a second report replaced the user's PNG."""
    user = tmp_path / "report"
    user.mkdir()
    (user / NOTES).write_text("mine")
    (user / "accuracy.png").write_bytes(b"my figure")
    runs = inputs["report_runs"]
    assert_one_line_error(sln("report", runs, "--out", user), mentions="accuracy.png")
    assert (user / "accuracy.png").read_bytes() == b"my figure"
    assert sln("report", runs, "--out", user, "--overwrite").exit_code == 0
    assert (user / "accuracy.png").read_bytes().startswith(b"\x89PNG") and not (user / MARKER).exists()
    assert_one_line_error(sln("report", runs, "--out", user), mentions="accuracy.png")  # still the user's folder
    fresh = tmp_path / "new"
    assert sln("report", runs, "--out", fresh).exit_code == 0 and (fresh / MARKER).exists()
    assert sln("report", runs, "--out", fresh).exit_code == 0  # its own folder: refreshed freely
    assert os.path.getsize(fresh / "accuracy.png") > 0
