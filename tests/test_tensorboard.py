"""`sln train --tensorboard`: event files read back with tensorboard's EventAccumulator hold every metrics.jsonl
key under its stable tag at step = epoch, lr and sigma, the final images; a resumed run (also one interrupted
after logging an epoch it had not checkpointed, or killed before logging one it had) rebuilds its events so that
every tag holds each step exactly once, also in the raw records."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.rundir import runs
from sln_cli.training.tensorboard import MEMORISATION_TAG, RELIABILITY_TAG, TensorBoardLogger, metric_tag
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


def raw_records(run: Path) -> list[tuple[str, int]]:
    """Every (tag, step) of every scalar event in the files, as written (no reader's purging or dedup)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    events = [Event.FromString(record) for path in sorted((run / "tensorboard").glob("events.out.tfevents.*"))
              for record in RawEventFileLoader(str(path)).Load()]
    return [(value.tag, event.step) for event in events if event.HasField("summary")
            for value in event.summary.value if value.HasField("simple_value")]


def epoch_done(logger: TensorBoardLogger, run: Path, row: dict, *, log: bool = True) -> None:
    """What training does after each epoch: the metrics line, then the events (a kill may fall in between)."""
    runs.append_metrics(run, row)
    if log:
        logger.log_epoch(row)


def test_a_resumed_logger_rebuilds_the_steps_of_its_checkpoint_exactly_once(tmp_path: Path,
                                                                              tensorboard_extra: None) -> None:
    first = TensorBoardLogger(tmp_path, first_epoch=1)
    for epoch in (1, 2, 3):  # epoch 3 logged, then the process died before its checkpoint
        epoch_done(first, tmp_path, {"epoch": epoch, "test_acc": epoch / 10, "memorized": None})
    runs.write_metrics(tmp_path, runs.read_metrics(tmp_path)[:2])  # --resume: metrics as the epoch-2 checkpoint
    second = TensorBoardLogger(tmp_path, first_epoch=3)
    for epoch in (3, 4):
        epoch_done(second, tmp_path, {"epoch": epoch, "test_acc": epoch / 10 + 0.5})
    second.close()
    scalars = events(tmp_path).Scalars("test/acc")
    assert [s.step for s in scalars] == [1, 2, 3, 4]
    assert [s.value for s in scalars] == pytest.approx([0.1, 0.2, 0.8, 0.9])
    assert sorted(raw_records(tmp_path)) == [("test/acc", step) for step in (1, 2, 3, 4)]  # no duplicate
    assert "noise/memorized" not in events(tmp_path).Tags()["scalars"]  # None is not a scalar


def test_a_kill_between_the_metrics_line_and_the_events_loses_no_step(tmp_path: Path, tensorboard_extra: None) -> None:
    """The issue's case: killed after epoch 3's checkpoint and metrics line, before its events."""
    first = TensorBoardLogger(tmp_path, first_epoch=1)
    epoch_done(first, tmp_path, {"epoch": 1, "test_acc": 0.1})
    epoch_done(first, tmp_path, {"epoch": 2, "test_acc": 0.2})
    epoch_done(first, tmp_path, {"epoch": 3, "test_acc": 0.3}, log=False)  # killed inside log_epoch
    second = TensorBoardLogger(tmp_path, first_epoch=4)  # resumed from the epoch-3 checkpoint
    for epoch in (4, 5):
        epoch_done(second, tmp_path, {"epoch": epoch, "test_acc": epoch / 10})
    second.close()
    assert [(s.step, s.value) for s in events(tmp_path).Scalars("test/acc")] == \
        [(e, pytest.approx(e / 10)) for e in (1, 2, 3, 4, 5)]
    assert sorted(raw_records(tmp_path)) == [("test/acc", step) for step in (1, 2, 3, 4, 5)]


def test_events_left_by_a_replaced_run_are_removed(tmp_path: Path, tensorboard_extra: None) -> None:
    old = TensorBoardLogger(tmp_path, first_epoch=1)
    epoch_done(old, tmp_path, {"epoch": 1, "test_acc": 0.5})
    old.close()
    (tmp_path / "metrics.jsonl").unlink()  # a new run in the same directory, old events still there
    new = TensorBoardLogger(tmp_path, first_epoch=1)
    for epoch in (1, 2):
        epoch_done(new, tmp_path, {"epoch": epoch, "test_acc": 0.9})
    new.close()
    assert [(s.step, s.value) for s in events(tmp_path).Scalars("test/acc")] == [(1, pytest.approx(0.9)),
                                                                                  (2, pytest.approx(0.9))]
    assert sorted(raw_records(tmp_path)) == [("test/acc", 1), ("test/acc", 2)]


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
            # timings differ between the two epoch-3 runs
            if key not in ("epoch_seconds", "images_per_second", "wall_seconds"):
                assert [s.value for s in steps] == pytest.approx([row[key] for row in rows], rel=1e-6), key
    assert {"schedule/lr", "schedule/sigma", "noise/memorized", "test/acc_ema"} <= set(tags["scalars"])
    for tag in (RELIABILITY_TAG, MEMORISATION_TAG):  # at the end of the first run, and of epoch 3 (once: rebuilt)
        assert [image.step for image in accumulator.Images(tag)] == [2, 3]
        assert accumulator.Images(tag)[-1].width > 100
    records = raw_records(run)
    assert len(records) == len(set(records)) and {step for _, step in records} == {1, 2, 3}


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
