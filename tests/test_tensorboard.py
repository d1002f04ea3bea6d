"""`sln train --tensorboard`: event files read back with tensorboard's EventAccumulator hold every metrics.jsonl
key under its stable tag at step = epoch, lr and sigma, the final images; a resumed run (also one interrupted
after logging an epoch it had not checkpointed) continues the curves without duplicated steps."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.tensorboard import MEMORISATION_TAG, RELIABILITY_TAG, TensorBoardLogger, metric_tag
from tests.conftest import TINY_RUN as TINY
from tests.conftest import require_extra
from tests.test_evaluate import assert_one_line_error

runner = CliRunner()


@pytest.fixture
def tensorboard_extra() -> None:
    """The tests that write or read event files need the extra; the rest (tags, its absence) run without it."""
    require_extra("tensorboard", "tensorboard")


def events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train(*args: str) -> None:
    result = runner.invoke(app, ["train", *TINY, *args])
    assert result.exit_code == 0, result.output


def resume(run: Path, *args: str) -> None:
    result = runner.invoke(app, ["train", "--resume", str(run), "--quiet", *args])
    assert result.exit_code == 0, result.output


def test_tags_are_stable_names_of_the_metric_keys() -> None:
    assert metric_tag("epoch") is None
    assert metric_tag("train_loss") == "train/loss" and metric_tag("test_acc_ema") == "test/acc_ema"
    assert metric_tag("val_acc") == "val/acc" and metric_tag("lr") == "schedule/lr"
    assert metric_tag("sigma") == "schedule/sigma" and metric_tag("memorized") == "noise/memorized"
    assert metric_tag("a_new_key") == "other/a_new_key"  # nothing is dropped


def test_a_resumed_logger_purges_the_steps_after_its_checkpoint(tmp_path: Path, tensorboard_extra: None) -> None:
    first = TensorBoardLogger(tmp_path, first_epoch=1)
    for epoch in (1, 2, 3):  # epoch 3 logged, then the process died before its checkpoint
        first.log_epoch({"epoch": epoch, "test_acc": epoch / 10, "memorized": None, "flag": True})
    second = TensorBoardLogger(tmp_path, first_epoch=3)  # resumed from the epoch-2 checkpoint
    for epoch in (3, 4):
        second.log_epoch({"epoch": epoch, "test_acc": epoch / 10 + 0.5})
    second.close()
    scalars = events(tmp_path).Scalars("test/acc")
    assert [s.step for s in scalars] == [1, 2, 3, 4]
    assert [s.value for s in scalars] == pytest.approx([0.1, 0.2, 0.8, 0.9])
    assert "noise/memorized" not in events(tmp_path).Tags()["scalars"]  # None and booleans are not scalars


def test_events_left_by_a_replaced_run_are_hidden(tmp_path: Path, tensorboard_extra: None) -> None:
    old = TensorBoardLogger(tmp_path, first_epoch=1)
    old.log_epoch({"epoch": 1, "test_acc": 0.5})  # one epoch: the new run's steps never go backwards, so only
    old.close()                                   # the purge (not TensorBoard's out-of-order check) can hide it
    new = TensorBoardLogger(tmp_path, first_epoch=1)  # a new run in the same directory, old events still there
    for epoch in (1, 2):
        new.log_epoch({"epoch": epoch, "test_acc": 0.9})
    new.close()
    assert [(s.step, s.value) for s in events(tmp_path).Scalars("test/acc")] == [(1, pytest.approx(0.9)),
                                                                                  (2, pytest.approx(0.9))]


@pytest.mark.slow  # three short trainings and their final images
def test_training_writes_every_metric_and_resumes_without_duplicates(tmp_path: Path, tensorboard_extra: None) -> None:
    run = tmp_path / "run"
    train("--tensorboard", "--out", str(run), "--set", "run.checkpoint_every=1")
    saved = tmp_path / "checkpoint-epoch-2.pt"
    shutil.copy(run / "checkpoint.pt", saved)
    resume(run, "--epochs", "3")
    shutil.copy(saved, run / "checkpoint.pt")  # as if killed after logging epoch 3, before its checkpoint
    resume(run, "--epochs", "3")
    accumulator, rows = events(run), metrics(run)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    tags = accumulator.Tags()
    for key in rows[0]:
        if key != "epoch" and isinstance(rows[0][key], float):
            steps = accumulator.Scalars(metric_tag(key))
            assert [s.step for s in steps] == [1, 2, 3], key
            if key not in ("epoch_seconds", "images_per_second"):  # timings differ between the two epoch-3 runs
                assert [s.value for s in steps] == pytest.approx([row[key] for row in rows], rel=1e-6), key
    assert {"schedule/lr", "schedule/sigma", "noise/memorized", "test/acc_ema"} <= set(tags["scalars"])
    for tag in (RELIABILITY_TAG, MEMORISATION_TAG):  # at the end of the first run, and of epoch 3 (once: purged)
        assert [image.step for image in accumulator.Images(tag)] == [2, 3]
        assert accumulator.Images(tag)[-1].width > 100


def test_switched_on_at_resume_it_backfills_the_earlier_epochs(tmp_path: Path, tensorboard_extra: None) -> None:
    run = tmp_path / "run"
    train("--out", str(run))
    assert not (run / "tensorboard").exists()
    resume(run, "--epochs", "3", "--tensorboard")
    assert [s.step for s in events(run).Scalars("test/acc")] == [1, 2, 3]


def test_missing_tensorboard_is_a_one_line_error_before_any_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run = tmp_path / "run"
    assert_one_line_error(["train", *TINY, "--tensorboard", "--out", str(run)], "pip install 'sln-cli[tensorboard]'")
    assert not run.exists()
