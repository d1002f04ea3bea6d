"""Hostile inputs to the surfaces added since the first hostile suite (issue 24): sweep specs (alias-bombed grids,
huge seed ranges, duplicate keys), seeds past what an RNG takes, values that overflow inside torch, YAML integers
past Python's 4,300 digits, forward matrices (empty, complex, a `.npy` header claiming a huge shape), Slurm
missing, third-party warnings before the error line, and output that must be valid (JSON, LaTeX)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sln_cli import seeds
from sln_cli.errors import SlnError
from tests.hostile import ROOT, assert_one_line_error, assert_untouched, sln, sln_process, snapshot, write_run

GENERATED = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
ALIAS_GRID = ("presets: [quickstart]\ngrid:\n  optim.lr: &v [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n"
              + "".join(f"  optim.k{i}: *v\n" for i in range(19)))  # 20 keys x 10 values in ~400 bytes


def peak_growth(*args: str, cwd: Path) -> tuple[int, str]:
    """(bytes the peak RSS grew by while the command ran, its stderr), in a fresh process whose imports are done
    before the measurement starts (torch alone is ~700 MiB)."""
    code = ("import resource, sys; from sln_cli.cli import app; import sln_cli.sweep.plan, sln_cli.training.train;"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try: app({list(args)!r}, standalone_mode=True)\n"
            "except SystemExit: pass\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return int(done.stdout.strip().splitlines()[-1]), done.stderr


# --------------------------------------------------------------------------------------------------
# Count before you build
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "mentions"), [
    (["{spec}", "--dry-run"], "100,000,000,000,000,000,000 runs"),
    (["quickstart-sweep", "--seeds", "0-999999999", "--dry-run"], "1,000,000,000 seeds"),
])
def test_a_huge_grid_or_seed_range_is_refused_within_bounded_memory(tmp_path, args, mentions):
    (tmp_path / "grid.yaml").write_text(ALIAS_GRID)
    grown, stderr = peak_growth("sweep", *[a.replace("{spec}", str(tmp_path / "grid.yaml")) for a in args],
                                cwd=tmp_path)
    assert stderr.strip().startswith("error: ") and mentions in stderr and len(stderr.strip().splitlines()) == 1
    assert grown < 64 << 20, grown  # measured: under 1 MiB; before the fix, past 4 GiB


@pytest.mark.parametrize("text", ["0-99999999999999999999999", "18446744073709551616", "0-4294967296"])
def test_seeds_past_the_rng_range_are_refused_by_the_sweep(tmp_path, text):
    assert_one_line_error(sln("sweep", "quickstart-sweep", "--seeds", text, "--dry-run", "--out", tmp_path / "s"),
                          mentions="4294967295")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("seed", [2**63, 2**64, -1, 2**32])
def test_seeds_past_the_rng_range_are_refused_by_train_and_in_a_spec(tmp_path, seed):
    assert_one_line_error(sln("train", "--preset", "quickstart", "--set", f"run.seed={seed}", "--print-config"),
                          mentions="run.seed must be an integer from 0 to 4294967295")
    (tmp_path / "grid.yaml").write_text(f"presets: [quickstart]\nseeds: [0, {seed}]\n")
    assert_one_line_error(sln("sweep", tmp_path / "grid.yaml", "--dry-run"), mentions="4294967295")


def test_the_seed_check_is_one_function_for_every_command():
    assert seeds.seed_problem(seeds.MAX_SEED, "x") is None and seeds.MAX_SEED == 2**32 - 1
    for bad in (seeds.MAX_SEED + 1, -1, True, 1.0, "1"):
        assert "tune.seed must be an integer from 0 to 4294967295" in (seeds.seed_problem(bad, "tune.seed") or "")
    assert seeds.parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(SlnError, match="names a seed twice"):
        seeds.parse_seeds("0-2,1")


@GENERATED
@given(low=st.integers(0, 2**80), span=st.integers(0, 2**80))
@example(low=0, span=10**9)
def test_any_seed_range_is_counted_not_built(low, span):
    try:
        result = seeds.parse_seeds(f"{low}-{low + span}")
    except SlnError as exc:
        assert "seeds" in str(exc)
    else:
        assert result == list(range(low, low + span + 1)) and len(result) <= seeds.MAX_SEEDS


# --------------------------------------------------------------------------------------------------
# Values that feed torch, YAML integers, duplicate keys
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "mentions"), [
    ("optim.lr=1e308", "optim.lr must be a finite number of at most 100"),
    ("optim.lr=.inf", "optim.lr"),
    ("run.cpu_threads=1000000", "run.cpu_threads must be at most 4096"),
    ("optim.epochs=" + "9" * 5000, "4,300 digits"),
    ("noise.seed=" + "9" * 400, "noise.seed must be an integer from 0"),
])
def test_values_that_would_overflow_are_refused_before_training(setting, mentions):
    assert_one_line_error(sln("train", "--preset", "quickstart", "--set", setting, "--print-config"),
                          mentions=mentions)


def test_more_threads_than_cores_needs_forcing(monkeypatch):
    from sln_cli.training.train import FORCE_THREADS, check_threads

    cores = len(os.sched_getaffinity(0))
    assert check_threads(cores) == cores
    with pytest.raises(SlnError, match=f"more than the {cores} cores"):
        check_threads(cores + 1)
    monkeypatch.setenv(FORCE_THREADS, "1")
    assert check_threads(cores + 1) == cores + 1


@pytest.mark.parametrize(("spec", "mentions"), [
    ("presets: [quickstart]\nmethods:\n  CE: {sln.sigma: 0}\n  CE: {sln.sigma: 0.5}\n", "duplicate key 'CE'"),
    ("presets: [quickstart]\nseeds: [0]\nseeds: [1]\n", "duplicate key 'seeds'"),
    ("presets: [quickstart]\nset: {optim.lr: 0.1, optim.lr: 0.2}\n", "duplicate key 'optim.lr'"),
    ("presets: [quickstart]\nseeds: [" + "7" * 5000 + "]\n", "4,300 digits"),
])
def test_a_duplicate_key_or_a_huge_integer_in_a_spec_is_one_line(tmp_path, spec, mentions):
    (tmp_path / "grid.yaml").write_text(spec)
    assert_one_line_error(sln("sweep", tmp_path / "grid.yaml", "--dry-run"), mentions=mentions)


sweep_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6),
                         st.lists(st.integers(-3, 3) | st.floats(0, 1), max_size=4))
sweep_specs = st.fixed_dictionaries({"presets": st.sampled_from([["quickstart"], [], "quickstart", None])}, optional={
    "methods": st.dictionaries(st.sampled_from(["CE", "SLN", "x y", ""]), st.dictionaries(
        st.sampled_from(["sln.sigma", "optim.lr", "run.seed", "nope"]), sweep_values, max_size=2), max_size=3),
    "grid": st.dictionaries(st.sampled_from(["optim.lr", "sln.sigma", "optim.epochs", "run.out"]),
                            st.lists(sweep_values, max_size=4) | sweep_values, max_size=3),
    "seeds": st.lists(st.integers(-5, 2**65), max_size=4) | sweep_values,
    "set": st.dictionaries(st.sampled_from(["optim.epochs", "run.cpu_threads", "data.workers"]), sweep_values,
                           max_size=2)})


@GENERATED
@given(spec=sweep_specs)
@example(spec={"presets": ["quickstart"], "grid": {"optim.lr": [0.1] * 20, "sln.sigma": [0.1] * 20},
               "seeds": list(range(30))})
def test_any_sweep_spec_plans_or_is_refused_in_one_line_writing_nothing(tmp_path_factory, spec):
    folder = tmp_path_factory.mktemp("spec")
    (folder / "grid.yaml").write_text(json.dumps(spec))  # JSON is YAML
    before = snapshot(folder)
    outcome = sln("sweep", folder / "grid.yaml", "--dry-run", "--json", "--out", folder / "s")
    if outcome.exit_code != 0:
        assert_one_line_error(outcome)
    else:
        assert isinstance(json.loads(outcome.stdout), list)
    assert_untouched(before, snapshot(folder))


def test_a_sweep_refused_for_a_config_mismatch_writes_nothing(tmp_path, monkeypatch):
    from sln_cli.sweep import spec as spec_lib
    from sln_cli.sweep.runner import Options, run_sweep

    (tmp_path / "grid.yaml").write_text("presets: [quickstart]\nseeds: [0]\nset: {optim.epochs: 2}\n")
    sweep = spec_lib.load(str(tmp_path / "grid.yaml"), out=tmp_path / "s")
    (run_dir,) = [cell.run_dir for cell in sweep.cells]
    write_run(run_dir, ("optim.lr=0.5", "run.seed=0"))  # the run there has another learning rate
    (tmp_path / "s" / "sweep.yaml").write_text("the user's notes\n")
    before = snapshot(tmp_path)
    with pytest.raises(SlnError, match="optim.lr differ"):
        run_sweep(sweep, tmp_path / "s", Options(jobs=1))
    assert_untouched(before, snapshot(tmp_path))
    assert not (tmp_path / "s" / ".sln-owned").exists()


# --------------------------------------------------------------------------------------------------
# Forward matrices and .npy files
# --------------------------------------------------------------------------------------------------


def _npy_claiming(path: Path, shape: tuple[int, ...]) -> None:
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2), dtype=np.float64))
    header["shape"] = shape
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(np.zeros(4).tobytes())


FORWARD_CASES = {
    "empty probs.npy in a run": ("run", lambda p: np.save(p / "probs.npy", np.zeros((0, 10))), "non-empty"),
    "complex .npy": ("matrix.npy", lambda p: np.save(p, np.eye(10) * (1 + 1j)), "complex128"),
    "empty .csv": ("matrix.csv", lambda p: p.write_text(""), "non-empty"),
    "a header claiming 10^10 x 10^10": ("matrix.npy", lambda p: _npy_claiming(p, (10**10, 10**10)), "claims shape"),
    "a FIFO": ("matrix.csv", lambda p: os.mkfifo(p), "is none of them"),
}


@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_a_bad_forward_matrix_is_one_line(tmp_path, case):
    name, make, mentions = FORWARD_CASES[case]
    path = tmp_path / name
    if name == "run":
        path.mkdir()
    make(path)
    outcome = sln("train", "--preset", "quickstart", "--method", "forward", "--set",
                  f"method.forward_matrix={path}", "--train-limit", "100", "--test-limit", "50", "--epochs", "1",
                  "--out", tmp_path / "out", "--quiet")
    assert_one_line_error(outcome, mentions=mentions)


@pytest.mark.parametrize("case", ["complex .npy", "a header claiming 10^10 x 10^10", "empty .csv"])
def test_a_bad_transition_matrix_for_corrupt_is_one_line(tmp_path, case):
    name, make, mentions = FORWARD_CASES[case]
    make(tmp_path / name)
    outcome = sln("corrupt", "--dataset", "digits", "--mode", "transition", "--matrix",
                  tmp_path / name, "--out", tmp_path / "labels.csv")
    assert_one_line_error(outcome, mentions=mentions)
    assert not (tmp_path / "labels.csv").exists()


# --------------------------------------------------------------------------------------------------
# One line, nothing before it: Slurm missing, torch's and numpy's warnings (fresh processes)
# --------------------------------------------------------------------------------------------------


def test_launcher_slurm_without_slurm_is_one_line(tmp_path):
    pytest.importorskip("submitit")
    (tmp_path / "grid.yaml").write_text("presets: [quickstart]\nseeds: [0]\n")
    outcome = sln_process("sweep", tmp_path / "grid.yaml", "--launcher", "slurm", "--out", tmp_path / "s",
                          env={"PATH": os.path.dirname(sys.executable)})
    assert_one_line_error(outcome, mentions="needs Slurm's srun and sbatch")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # two fresh processes
def test_no_third_party_warning_comes_before_the_error_line(tmp_path):
    import pickle

    run = write_run(tmp_path / "run")
    (run / "final.pt").write_bytes(pickle.dumps({"model": {}}, protocol=4))  # a bare pickle, not torch's zip
    assert_one_line_error(sln_process("evaluate", run), mentions="final.pt")
    (tmp_path / "m.csv").write_text("")
    outcome = sln_process("corrupt", "--dataset", "digits", "--mode", "transition", "--matrix",
                          tmp_path / "m.csv", "--out", tmp_path / "l.csv")
    assert_one_line_error(outcome, mentions="non-empty")


# --------------------------------------------------------------------------------------------------
# Valid output: JSON without NaN, LaTeX escaped
# --------------------------------------------------------------------------------------------------


def test_report_json_has_null_where_a_value_is_not_finite(tmp_path):
    run = write_run(tmp_path / "s" / "a")
    lines = (run / "metrics.jsonl").read_text().replace('"test_loss": 1.0', '"test_loss": NaN')
    (run / "metrics.jsonl").write_text(lines)
    outcome = sln("report", tmp_path / "s", "--metric", "nll", "--format", "json", "--no-figures")
    assert outcome.exit_code == 0, outcome.stderr
    assert "NaN" not in outcome.stdout
    cells = json.loads(outcome.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    sln_cell = {c["method"]: c for c in cells}["SLN"]
    assert sln_cell["mean"] is None and sln_cell["values"] == [None]
    assert sln_cell["non_finite"] == ["mean", "values"]  # the reason: not a number, rather than no value


def test_latex_escapes_every_special_character_of_a_label_file_name(tmp_path):
    run = write_run(tmp_path / "s" / "a", ("noise.labels=/data/a#b$c^d~e{f}g_h%i&j\\k.csv",))
    outcome = sln("report", run, "--format", "latex", "--no-figures")
    assert outcome.exit_code == 0, outcome.stderr
    header = next(line for line in outcome.stdout.splitlines() if line.startswith("Method &"))
    assert header == (r"Method & a\#b\$c\textasciicircum{}d\textasciitilde{}e\{f\}g\_h\%i\&j\textbackslash{}k.csv"
                      r" \\")
