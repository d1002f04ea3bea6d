"""Hostile files and file systems: pickles that would run code wherever sln loads a .pt, full disks, paths that
are files or vanished, another user's folders, and outputs that belong to the user.

Every case: exit code 1, one `error:` line without traceback, no code run, every file that was there
byte-identical afterwards and nothing half-written left behind.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY as TINY_BASE
from tests.hostile import (
    assert_one_line_error,
    assert_untouched,
    sln,
    sln_process,
    snapshot,
    write_hostile_pt,
)

TINY = [*TINY_BASE, "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny finished run with every file sln loads: checkpoint, final, best, an epoch's weights, probs."""
    run = tmp_path_factory.mktemp("trained") / "run"
    outcome = sln("train", *TINY, "--epochs", "1", "--out", run, "--record-probs", "--set", "run.keep_checkpoints=1")
    assert outcome.exit_code == 0, outcome.stderr
    shutil.copy(run / "final.pt", run / "best.pt")  # digits has no validation split; sln would load it all the same
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# --------------------------------------------------------------------------------------------------
# Pickles that would run code, in every place sln loads a .pt
# --------------------------------------------------------------------------------------------------

PICKLE_CASES = {
    # name: (file replaced inside the run, its shape, the command)
    "evaluate final.pt": ("final.pt", "checkpoint", ["evaluate", "{run}"]),
    "evaluate --checkpoint last": ("checkpoint.pt", "checkpoint", ["evaluate", "{run}", "--checkpoint", "last"]),
    "evaluate --checkpoint best": ("best.pt", "checkpoint", ["evaluate", "{run}", "--checkpoint", "best"]),
    "evaluate --checkpoint epoch-1": ("checkpoints/epoch-0001.pt", "checkpoint",
                                      ["evaluate", "{run}", "--checkpoint", "epoch-1"]),
    "evaluate a .pt given directly": ("final.pt", "exec", ["evaluate", "{run}/final.pt"]),
    "evaluate a bare pickle": ("final.pt", "pickle", ["evaluate", "{run}"]),
    "analyze confidence": ("final.pt", "checkpoint", ["analyze", "confidence", "{run}"]),
    "analyze landscape": ("final.pt", "checkpoint", ["analyze", "landscape", "{run}", "--points", "3"]),
    "analyze landscape --interpolate": ("checkpoint.pt", "checkpoint",
                                        ["analyze", "landscape", "{run}", "--points", "3", "--interpolate",
                                         "{run}/checkpoint.pt", "--checkpoint", "final"]),
    "train --resume": ("checkpoint.pt", "checkpoint", ["train", "--resume", "{run}", "--quiet"]),
    "train --resume (exec)": ("checkpoint.pt", "exec", ["train", "--resume", "{run}", "--quiet"]),
    "corrupt --inspect CIFAR-N": ("cifar-n.pt", "cifar_n", ["corrupt", "--inspect", "{run}/cifar-n.pt",
                                                            "--label-set", "worse_label"]),
    "train --labels CIFAR-N": ("cifar-n.pt", "cifar_n", ["train", *TINY, "--epochs", "1", "--labels",
                                                         "{run}/cifar-n.pt", "--set", "noise.label_set=worse_label",
                                                         "--out", "{run}/../new"]),
    "train --set model.weights": ("weights.pth", "checkpoint",
                                  ["train", *TINY, "--epochs", "1", "--set", "model.name=resnet50", "--set",
                                   "model.weights={run}/weights.pth", "--out", "{run}/../new"]),
}


@pytest.mark.parametrize("case", PICKLE_CASES)
def test_a_pickle_that_would_run_code_is_refused_everywhere(run, tmp_path, case):
    name, shape, args = PICKLE_CASES[case]
    marker = tmp_path / "CODE-RAN"
    write_hostile_pt(run / name, marker, shape=shape)
    before = snapshot(tmp_path)
    outcome = sln(*[arg.format(run=run) for arg in args])
    line = assert_one_line_error(outcome)
    assert not marker.exists(), "unpickling ran code"
    assert "weights_only" not in line  # never advise loading it unsafely
    assert_untouched(before, snapshot(tmp_path))


def test_the_pickle_cases_would_run_code_if_loaded_unsafely(tmp_path):
    """The sabotage check of the cases above: their files really do run code under a plain torch.load."""
    import torch

    for shape in ("checkpoint", "exec", "pickle", "cifar_n"):
        marker = tmp_path / f"ran-{shape}"
        write_hostile_pt(tmp_path / f"{shape}.pt", marker, shape=shape)
        if shape == "pickle":
            pickle.loads((tmp_path / f"{shape}.pt").read_bytes())
        else:
            torch.load(tmp_path / f"{shape}.pt", weights_only=False)
        assert marker.exists(), shape


def test_an_object_array_in_probs_npy_is_refused(run, tmp_path):
    np.save(run / "probs.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    before = snapshot(tmp_path)
    outcome = sln("corrupt", "--dataset", "digits", "--mode", "dependent", "--rate", "0.2", "--probs", run,
                  "--out", tmp_path / "x.csv")
    assert_one_line_error(outcome)
    assert_untouched(before, snapshot(tmp_path))


@pytest.mark.parametrize("missing", ["model", "ema", "optimizer", "targets", "torch_rng"])
def test_a_checkpoint_that_loads_but_lacks_keys_is_one_line(run, tmp_path, missing):
    import torch

    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    del saved[missing]
    torch.save(saved, run / "checkpoint.pt")
    before = snapshot(tmp_path)
    assert_one_line_error(sln("train", "--resume", run, "--epochs", "2", "--quiet"), mentions="checkpoint.pt")
    if missing in ("model", "ema"):
        assert_one_line_error(sln("evaluate", run, "--checkpoint", "last"), mentions="checkpoint.pt")
    assert_untouched(before, snapshot(tmp_path))


# --------------------------------------------------------------------------------------------------
# Outputs that belong to the user
# --------------------------------------------------------------------------------------------------

GENERATE = ["corrupt", "--dataset", "digits", "--mode", "sym", "--rate", "0.4"]


def test_corrupt_never_replaces_a_file_without_overwrite_nor_one_it_did_not_write(tmp_path):
    (tmp_path / "mine.csv").write_text("label,label_noisy\n1,1\n")
    (tmp_path / "mine.json").write_text('{"my": "notes"}')
    before = snapshot(tmp_path)
    assert_one_line_error(sln(*GENERATE, "--out", tmp_path / "mine.csv"), mentions="--overwrite")
    assert_one_line_error(sln(*GENERATE, "--out", tmp_path / "mine.csv", "--overwrite"),
                          mentions="not the manifest of an sln label file")
    (tmp_path / "other.json").write_text("{}")  # an unrelated JSON where the manifest would go
    before = snapshot(tmp_path)
    assert_one_line_error(sln(*GENERATE, "--out", tmp_path / "other.csv", "--overwrite"), mentions="other.json")
    assert_untouched(before, snapshot(tmp_path))
    assert sln(*GENERATE, "--out", tmp_path / "ours.csv").exit_code == 0
    assert sln(*GENERATE, "--seed", "1", "--out", tmp_path / "ours.csv", "--overwrite").exit_code == 0


def test_evaluate_never_replaces_a_named_file_without_overwrite(run, tmp_path):
    for flag, name in (("--csv", "table.csv"), ("--save-predictions", "p.npz")):
        (tmp_path / name).write_text("mine")
        before = snapshot(tmp_path)
        outcome = sln("evaluate", run, "--weights", "raw", flag, tmp_path / name)  # one file: the very name
        assert_one_line_error(outcome, mentions=f"{name} already exists")
        assert_untouched(before, snapshot(tmp_path))
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "reliability-test.png").write_text("my figure")
    before = snapshot(tmp_path)
    assert_one_line_error(sln("evaluate", run, "--out", folder), mentions="reliability-test.png")
    assert_untouched(before, snapshot(tmp_path))
    assert sln("evaluate", run, "--csv", tmp_path / "table.csv", "--overwrite").exit_code == 0
    assert sln("evaluate", run).exit_code == 0 and sln("evaluate", run).exit_code == 0  # its own diagram: refreshed


def test_train_overwrite_removes_only_sln_files_and_refuses_foreign_directories(run, tmp_path):
    (run / "notes.txt").write_text("keep me")
    (run / "checkpoints" / "favourite.pt").write_text("keep me too")
    outcome = sln("train", *TINY, "--epochs", "1", "--out", run, "--overwrite")
    assert outcome.exit_code == 0, outcome.stderr
    assert (run / "notes.txt").read_text() == "keep me"
    assert (run / "checkpoints" / "favourite.pt").read_text() == "keep me too"
    assert not (run / "probs.npy").exists()  # the old run's files went; this run did not record probs
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("mine")
    (foreign / "chapter1.tex").write_text("mine")
    before = snapshot(tmp_path / "thesis")
    assert_one_line_error(sln("train", *TINY, "--epochs", "1", "--out", foreign, "--overwrite"),
                          mentions="was not made by sln")
    assert_untouched(before, snapshot(tmp_path / "thesis"))


def test_a_run_made_before_markers_is_left_to_the_user(run, tmp_path):
    (run / ".sln-owned").unlink()
    before = snapshot(tmp_path)
    assert_one_line_error(sln("train", *TINY, "--epochs", "1", "--out", run, "--overwrite"), mentions="rm -r")
    assert_untouched(before, snapshot(tmp_path))
    outcome = sln("train", "--resume", run, "--epochs", "2", "--quiet")  # it still resumes
    assert outcome.exit_code == 0, outcome.stderr


# --------------------------------------------------------------------------------------------------
# File systems: full, read-only for us, files where folders should be, paths that vanished
# --------------------------------------------------------------------------------------------------


def _file_size_limit(limit: int):
    """preexec: writes past `limit` bytes fail with EFBIG ("File too large"), as a full disk fails them."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process at the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow  # a fresh process (resource limits apply to a whole process)
def test_a_full_disk_during_corrupt_keeps_the_previous_files(tmp_path):
    assert sln(*GENERATE, "--out", tmp_path / "labels.csv").exit_code == 0
    (tmp_path / "unrelated.txt").write_text("mine")
    before = snapshot(tmp_path)
    outcome = sln_process(*GENERATE, "--seed", "1", "--out", tmp_path / "labels.csv", "--overwrite",
                          preexec=_file_size_limit(2000))  # the CSV of 1,297 samples is ~6 KB
    assert_one_line_error(outcome, mentions=str(tmp_path / "labels"))
    assert_untouched(before, snapshot(tmp_path))


@pytest.mark.slow  # a fresh process (resource limits apply to a whole process)
def test_a_full_disk_during_training_leaves_metrics_and_checkpoint_in_agreement(trained, tmp_path):
    """The checkpoint of an epoch is written before its metrics line: a failed write loses the epoch entirely."""
    import torch

    # every file fits but the checkpoint, which adds the optimizer's momentum and the targets to the weights
    limit = (trained / "final.pt").stat().st_size + 4096
    run = tmp_path / "run"
    outcome = sln_process("train", *TINY, "--epochs", "2", "--out", run, preexec=_file_size_limit(limit))
    assert_one_line_error(outcome, mentions=str(run / "checkpoint.pt"))
    assert not (run / "checkpoint.pt").exists() and not (run / "metrics.jsonl").exists()  # epoch 1 never logged
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    resumed = sln("train", "--resume", run, "--epochs", "2", "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("command", ["train", "corrupt", "evaluate-csv", "evaluate-out", "cache"])
def test_a_file_where_a_folder_should_be_is_one_line(run, tmp_path, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    args = {"train": ["train", *TINY, "--epochs", "1", "--out", blocker / "run"],
            "corrupt": [*GENERATE, "--out", blocker / "x.csv"],
            "evaluate-csv": ["evaluate", run, "--csv", blocker / "t.csv"],
            "evaluate-out": ["evaluate", run, "--out", blocker],
            "cache": ["cache", "--data-dir", run, "--out", blocker / "c", "--workers", "0"]}[command]
    before = snapshot(tmp_path)
    assert_one_line_error(sln(*args), mentions=str(blocker))
    assert_untouched(before, snapshot(tmp_path))


def test_paths_that_do_not_exist_are_one_line(tmp_path):
    gone = tmp_path / "gone"
    for args in (["evaluate", gone], ["train", "--resume", gone], ["corrupt", "--inspect", gone / "x.csv"],
                 ["analyze", "confidence", gone], ["train", "--preset", gone / "p.yaml"]):
        assert_one_line_error(sln(*args), mentions=str(gone))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions; see the next test")
def test_a_folder_we_may_not_write_is_one_line_naming_it(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert_one_line_error(sln(*GENERATE, "--out", locked / "x.csv"), mentions=str(locked / "x.csv"))
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("error", [
    PermissionError(13, "Permission denied", "/data/run/final.pt"),
    OSError(30, "Read-only file system", "/data/run/metrics.jsonl"),
    OSError(28, "No space left on device", "/data/run/checkpoint.pt"),
    FileNotFoundError(2, "No such file or directory", "/data/vanished"),
    NotADirectoryError(20, "Not a directory", "/data/file/run"),
])
def test_any_os_error_a_user_can_cause_names_its_path_and_cause(monkeypatch, error):
    import sln_cli.labels.corrupt

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(sln_cli.labels.corrupt, "inspect", fail)
    line = assert_one_line_error(sln("corrupt", "--inspect", "x.csv"))
    assert error.filename in line and error.strerror in line
