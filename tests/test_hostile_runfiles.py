"""Hostile run-directory files (issue 24): what `sln report` and `sln sweep --dry-run` read back from runs and
sweeps. A FIFO, a device, a huge or sparse file, a damaged value anywhere: never a hang, a traceback or unbounded
memory; `sln report` lists a damaged run beside the readable ones, naming the file and the key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sln_cli.errors import SlnError
from sln_cli.rundir import readers, runs
from tests.hostile import assert_one_line_error, sln, within, write_run

GENERATED = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def two_runs(tmp_path) -> Path:
    """A sweep-like folder: a good run and one to damage."""
    write_run(tmp_path / "sweep" / "good", acc=0.8)
    write_run(tmp_path / "sweep" / "bad", ("run.seed=1",), acc=0.6)
    return tmp_path / "sweep"


def report(sweep: Path, *args: str):
    return sln("report", sweep, "--no-figures", "--format", "json", *args)


def assert_listed_as_damaged(outcome, bad: Path, mentions: str) -> None:
    """Exit 0, the good run's table as valid JSON, and one line naming the damaged run, its file and key."""
    assert outcome.crashed is None and outcome.exit_code == 0, (outcome.exit_code, outcome.stderr[-1500:])
    assert "Traceback" not in outcome.stderr
    cells = json.loads(outcome.stdout)
    assert {c["method"]: c["values"] for c in cells}["SLN"] == [0.8]  # the good run, alone
    lines = [line for line in outcome.stderr.splitlines() if line.startswith("damaged")]
    assert len(lines) == 1 and str(bad) in lines[0] and mentions in lines[0], outcome.stderr


# --------------------------------------------------------------------------------------------------
# Files that are not regular files, or far too big
# --------------------------------------------------------------------------------------------------

SPECIAL = {
    "fifo": lambda p: os.mkfifo(p),
    "dev-zero": lambda p: p.symlink_to("/dev/zero"),
    "directory": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("name", [runs.SUMMARY, runs.METRICS, runs.META, runs.CONFIG])
@pytest.mark.parametrize("kind", list(SPECIAL))
def test_a_special_file_in_a_run_is_refused_without_blocking(two_runs, name, kind):
    bad = two_runs / "bad"
    (bad / name).unlink()
    SPECIAL[kind](bad / name)
    with within():
        outcome = report(two_runs)
    if name == runs.META:  # the report does not read meta.json; the sweep's status does (below)
        assert outcome.exit_code == 0
        return
    assert_listed_as_damaged(outcome, bad, name)
    assert "not a regular file" in outcome.stderr


@pytest.mark.parametrize("name", [runs.SUMMARY, runs.METRICS])
def test_a_huge_sparse_file_is_refused_by_its_size_before_it_is_read(two_runs, name):
    with open(two_runs / "bad" / name, "ab") as f:
        f.truncate(3 << 30)  # 3 GiB of holes: no disk used, but reading it whole needs 3 GiB of memory
    with within():
        outcome = report(two_runs)
    assert_listed_as_damaged(outcome, two_runs / "bad", name)
    assert "GiB" in outcome.stderr


def test_one_huge_metrics_line_under_the_file_cap_is_refused_by_the_line_cap(two_runs):
    with open(two_runs / "bad" / runs.METRICS, "ab") as f:
        f.write(b"[" * (readers.MAX_LINE_BYTES + 10) + b"\n" + b'{"epoch": 3}\n')
    assert_listed_as_damaged(report(two_runs), two_runs / "bad", "line 3 is over 64 KiB")


# --------------------------------------------------------------------------------------------------
# Damaged values: one run listed as damaged, the others reported
# --------------------------------------------------------------------------------------------------

LAST = '{"epoch": 2, "test_acc": %s, "test_acc_ema": 0.5, "test_loss": 1.0, "test_loss_ema": 1.0}\n'
METRIC_DAMAGE = {
    "a string": ('"0.9"', "test_acc"),
    "null": ("null", "test_acc is missing"),
    "a list": ("[0.9]", "test_acc"),
    "a 400-digit integer": ("9" * 400, "400 digits"),
}


@pytest.mark.parametrize("damage", list(METRIC_DAMAGE))
def test_a_damaged_metric_lists_the_run_as_damaged(two_runs, damage):
    value, mentions = METRIC_DAMAGE[damage]
    bad = two_runs / "bad"
    lines = (bad / runs.METRICS).read_text().splitlines(keepends=True)
    (bad / runs.METRICS).write_text(lines[0] + LAST % value)
    assert_listed_as_damaged(report(two_runs), bad, mentions)


FILE_DAMAGE = {
    "metric missing": (runs.METRICS, b'{"epoch": 1}\n{"epoch": 2, "test_acc": 0.5}\n', "test_acc_ema is missing"),
    "nested 100,000 deep": (runs.METRICS, b'{"epoch": 1}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n{}\n",
                            "over 64 KiB"),
    "nested 40 deep": (runs.METRICS, b'{"epoch": 1, "x": ' + b"[" * 40 + b"]" * 40 + b"}\n{}\n", "deeper than"),
    "not UTF-8": (runs.METRICS, b'{"epoch": 1, "\xff": 1}\n{"epoch": 2}\n', "not UTF-8"),
    "summary a list": (runs.SUMMARY, b"[1, 2]", "not a JSON object"),
    "summary epochs a string": (runs.SUMMARY, b'{"epochs": "2"}', "epochs"),
    "summary nested 100,000 deep": (runs.SUMMARY, b"[" * 100_000 + b"]" * 100_000, "deeper than"),
    "summary an integer of 5,000 digits": (runs.SUMMARY, b'{"epochs": ' + b"7" * 5000 + b"}", "4,300 digits"),
    # quadratic for a regex that skips strings (each unclosed quote scanned to the end): linear here
    "summary 1 MiB of escaped quotes": (runs.SUMMARY, b'"' + b'\\"' * 500_000, "not valid JSON"),
    "config without a section": (runs.CONFIG, b"data: {dataset: digits}\n", "no noise section"),
    "config epochs a string": (runs.CONFIG, None, "optim.epochs"),
    "config dataset missing": (runs.CONFIG, None, "data.dataset is missing"),
    "config an integer of 5,000 digits": (runs.CONFIG, None, "4,300 digits"),
    "config a duplicate key": (runs.CONFIG, None, "duplicate key"),
}


def _config_edit(path: Path, case: str) -> bytes:
    text = path.read_text()
    if case == "config epochs a string":
        return text.replace("epochs: 2", "epochs: two").encode()
    if case == "config dataset missing":
        return text.replace("  dataset: digits\n", "").encode()
    if case == "config an integer of 5,000 digits":
        return text.replace("epochs: 2", "epochs: " + "7" * 5000).encode()
    return (text + "optim:\n  lr: 0.1\n").encode()  # a second `optim:` mapping


@pytest.mark.parametrize("case", list(FILE_DAMAGE))
def test_a_damaged_file_lists_the_run_as_damaged(two_runs, case):
    name, content, mentions = FILE_DAMAGE[case]
    bad = two_runs / "bad"
    (bad / name).write_bytes(content if content is not None else _config_edit(bad / name, case))
    with within(20):
        outcome = report(two_runs)
    assert_listed_as_damaged(outcome, bad, mentions)


def test_the_table_names_the_damaged_run_below_it_and_only_damage_is_one_error_line(two_runs):
    (two_runs / "bad" / runs.SUMMARY).write_text("[]")
    table = sln("report", two_runs, "--no-figures")
    assert table.exit_code == 0 and f"damaged, left out: {two_runs / 'bad'}" in " ".join(table.stdout.split())
    (two_runs / "good" / runs.SUMMARY).write_text("[]")
    assert_one_line_error(sln("report", two_runs, "--no-figures"), mentions="no readable run")


def test_a_cut_off_last_metrics_line_is_still_an_unfinished_epoch_not_damage(two_runs):
    bad = two_runs / "bad"
    (bad / runs.SUMMARY).unlink()
    with open(bad / runs.METRICS, "a") as f:
        f.write('{"epoch": 3, "test_ac')  # a kill in the middle of a write
    assert [row["epoch"] for row in runs.read_metrics(bad)] == [1, 2]


# --------------------------------------------------------------------------------------------------
# Generated: any metrics row and any summary is read or refused as damage, never a crash
# --------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | st.just([]) | st.just({}),
    lambda inner: st.lists(inner, min_size=1, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, min_size=1, max_size=3),
    max_leaves=8)
metric_keys = st.sampled_from(["epoch", "test_acc", "test_acc_ema", "test_loss", "test_loss_ema", "memorized", "x"])
rows = st.dictionaries(metric_keys, json_values, max_size=7)


@GENERATED
@given(row=rows, summary=st.one_of(json_values, st.dictionaries(st.sampled_from(["epochs", "best"]), json_values)))
@example(row={"epoch": 2, "test_acc": float("nan"), "test_acc_ema": 0.5, "test_loss": 1, "test_loss_ema": 1},
         summary={"epochs": 2})
@example(row={"epoch": 2**70}, summary={"epochs": True})
def test_any_metrics_row_and_summary_are_read_or_listed_as_damaged(tmp_path_factory, row, summary):
    sweep = tmp_path_factory.mktemp("generated")
    write_run(sweep / "good", acc=0.8)
    bad = write_run(sweep / "bad", ("run.seed=1",), acc=0.6)
    (bad / runs.METRICS).write_text('{"epoch": 1}\n' + json.dumps(row) + "\n")
    (bad / runs.SUMMARY).write_text(json.dumps(summary))
    outcome = report(sweep)
    assert outcome.crashed is None and outcome.exit_code == 0, outcome.stderr[-1500:]
    cells = json.loads(outcome.stdout)  # valid JSON: NaN and Infinity would make this fail
    assert "NaN" not in outcome.stdout and "Infinity" not in outcome.stdout
    assert any(0.8 in c["values"] for c in cells)  # the good run is in the table
    assert all(line.startswith(("damaged", "figures")) for line in outcome.stderr.splitlines())


# --------------------------------------------------------------------------------------------------
# The readers themselves
# --------------------------------------------------------------------------------------------------


def test_read_json_refuses_deep_nesting_before_the_parser_recurses(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 10_000_000 + "]" * 10_000_000)  # 20 MB: over the size cap too
    with pytest.raises(SlnError, match="over the 1 MiB"):
        readers.read_json(path, what="file")
    path.write_text('{"a": "[[[[[[[["}')  # brackets inside strings do not count
    assert readers.read_json(path, what="file") == {"a": "[[[[[[[["}
    path.write_text("[" * 500 + "]" * 500)
    with pytest.raises(SlnError, match="deeper than 32"):
        readers.read_json(path, what="file")


def test_read_npy_checks_the_header_before_allocating(tmp_path):
    import numpy as np

    path = tmp_path / "probs.npy"
    np.save(path, np.zeros((3, 2), dtype=np.float32))
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    fixed = np.lib.format.header_data_from_array_1_0(np.zeros((3, 2), dtype=np.float32))
    fixed["shape"] = (10**10, 10**10)
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buffer, fixed)
    path.write_bytes(buffer.getvalue() + data[header_end:])
    with pytest.raises(SlnError, match="claims shape"):
        readers.read_npy(path, what="probs")
    np.save(path, np.zeros((2, 2), dtype=np.complex64))
    with pytest.raises(SlnError, match="complex64"):
        readers.read_npy(path, what="matrix")


# --------------------------------------------------------------------------------------------------
# The sweep's own files and its runs' files, read by `sln sweep --dry-run`
# --------------------------------------------------------------------------------------------------

SWEEP_DAMAGE = {
    "failures.json a list": ("failures.json", lambda p: p.write_text("[]"), "failures.json is a list"),
    "failures.json attempts a string": ("failures.json", lambda p: p.write_text('{"x": {"attempts": "2"}}'),
                                        "x.attempts"),
    "failures.json a FIFO": ("failures.json", lambda p: os.mkfifo(p), "not a regular file"),
    "meta.json a FIFO": ("RUN/meta.json", lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
    "meta.json nested 100,000 deep": ("RUN/meta.json", lambda p: p.write_text("[" * 100_000 + "]" * 100_000),
                                      "deeper than"),
    "summary.json on /dev/zero": ("RUN/summary.json", lambda p: (p.unlink(), p.symlink_to("/dev/zero")),
                                  "character device"),
    "metrics.jsonl sparse 3 GiB": ("RUN/metrics.jsonl", lambda p: open(p, "ab").truncate(3 << 30), "GiB"),
}


@pytest.mark.parametrize("case", list(SWEEP_DAMAGE))
def test_a_damaged_sweep_file_is_one_line_for_the_dry_run(tmp_path, case):
    from sln_cli.sweep import spec as spec_lib
    from tests.hostile import snapshot

    name, damage, mentions = SWEEP_DAMAGE[case]
    (tmp_path / "grid.yaml").write_text("presets: [quickstart]\nseeds: [0]\nset: {optim.epochs: 2}\n")
    sweep = spec_lib.load(str(tmp_path / "grid.yaml"), out=tmp_path / "s")
    write_run(sweep.cells[0].run_dir, ("run.seed=0",))
    damage(Path(str(tmp_path / "s" / name).replace("RUN", sweep.cells[0].name)))
    before = snapshot(tmp_path / "grid.yaml")
    with within():
        outcome = sln("sweep", tmp_path / "grid.yaml", "--out", tmp_path / "s", "--dry-run")
    assert_one_line_error(outcome, mentions=mentions)
    assert snapshot(tmp_path / "grid.yaml") == before


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_label_file_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    SPECIAL[kind](tmp_path / "labels.csv")
    with within():
        outcome = sln("corrupt", "--inspect", tmp_path / "labels.csv")
    assert_one_line_error(outcome, mentions="not a regular file")
