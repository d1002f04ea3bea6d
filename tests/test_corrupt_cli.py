"""`sln corrupt` through the CLI: the documented usages, the JSON contract, determinism, and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from tests.synthetic import CIFAR10_NAMES, cifar_arrays, write_cifar10, write_cifar100

runner = CliRunner()
N10, N100 = 200, 300  # synthetic training-set sizes


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding DATA/ with synthetic CIFAR-10 and CIFAR-100 (relative paths as in the docs)."""
    write_cifar10(tmp_path / "DATA", n_train=N10, n_test=10, seed=0)
    write_cifar100(tmp_path / "DATA", n_train=N100, n_test=10, seed=1)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def clean_labels(num_classes: int) -> np.ndarray:
    """What the synthetic writers put in the training split (as `tests/synthetic.py` promises)."""
    if num_classes == 10:
        return cifar_arrays(10, N10, 10, seed=0)[1]
    return cifar_arrays(100, N100, 10, seed=1)[1]


def run(*args: str):
    return runner.invoke(app, ["corrupt", *args])


def run_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def read_csv(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)


def check_contract(summary: dict, num_samples: int, num_classes: int) -> None:
    assert summary["num_samples"] == num_samples and summary["num_classes"] == num_classes
    assert 0 <= summary["realized_noise_rate"] <= 1
    assert len(summary["per_class_noise_rate"]) == num_classes
    matrix = np.array(summary["transition_matrix"])
    assert matrix.shape == (num_classes, num_classes)
    assert matrix.sum(axis=1) == pytest.approx(np.ones(num_classes))  # every synthetic class has samples


# --- the usages as written -----------------------------------------------------------------------


def test_sym_usage_writes_csv_and_manifest(workdir: Path) -> None:
    result = run(
        "--dataset", "cifar10", "--data-dir", "DATA", "--mode", "sym", "--rate", "0.4", "--seed", "0",
        "--out", "labels/c10-sym.csv",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "requested rate" in result.stdout and "realised overall rate" in result.stdout
    rows = read_csv(workdir / "labels/c10-sym.csv")
    assert np.array_equal(rows[:, 0], clean_labels(10))
    manifest = json.loads((workdir / "labels/c10-sym.json").read_text())
    assert manifest["dataset"] == "cifar10" and manifest["mode"] == "sym" and manifest["seed"] == 0
    assert manifest["requested_noise_rate"] == 0.4 and manifest["num_classes"] == 10
    assert manifest["realized_noise_rate"] == pytest.approx(np.mean(rows[:, 0] != rows[:, 1]))
    assert {"sln_version", "sha256_clean", "sha256_noisy"} <= manifest.keys()


def test_cifar100_asym_usage_prints_json(workdir: Path) -> None:
    summary = run_json(
        "--dataset", "cifar100", "--data-dir", "DATA", "--mode", "asym", "--rate", "0.4", "--seed", "1",
        "--out", "c100-asym.csv",
    )  # fmt: skip
    check_contract(summary, N100, 100)
    rows = read_csv(workdir / "c100-asym.csv")
    flipped = rows[:, 0] != rows[:, 1]
    assert np.all(rows[flipped, 1] == (rows[flipped, 0] + 1) % 100), "next class only"
    assert summary["realized_noise_rate"] == pytest.approx(flipped.mean())
    # 300 samples: 4.5 binomial sigma around 0.4 is about 0.13
    assert abs(summary["realized_noise_rate"] - 0.4) < 0.13


@pytest.mark.parametrize("as_run_directory", [False, True])
def test_dependent_usage(workdir: Path, as_run_directory: bool) -> None:
    probs = np.random.default_rng(3).dirichlet(np.ones(10), size=N10)
    if as_run_directory:
        (workdir / "run").mkdir()
        np.save(workdir / "run" / "probs.npy", probs)
    else:
        np.save(workdir / "avg_softmax.npy", probs)
    source = "run" if as_run_directory else "avg_softmax.npy"
    args = ("--dataset", "cifar10", "--data-dir", "DATA", "--mode", "dependent", "--rate", "0.4", "--probs", source)
    summary = run_json(*args, "--out", "d.csv")
    assert summary["num_mislabelled"] == 80  # exactly round(0.4 * 200)
    rows = read_csv(workdir / "d.csv")
    others = probs.copy()
    others[np.arange(N10), rows[:, 0]] = -1
    flipped = rows[:, 0] != rows[:, 1]
    assert np.array_equal(rows[flipped, 1], others[flipped].argmax(axis=1))


def test_inspect_usage_of_our_own_file(workdir: Path) -> None:
    made = run_json(
        "--dataset", "cifar10", "--data-dir", "DATA", "--mode", "sym", "--rate", "0.4", "--out", "labels/c10-sym.csv"
    )
    inspected = run_json("--inspect", "labels/c10-sym.csv")
    for key in ("num_samples", "num_classes", "realized_noise_rate", "per_class_noise_rate", "transition_matrix"):
        assert inspected[key] == made[key]
    assert inspected["requested_noise_rate"] == 0.4 and inspected["mode"] == "sym"
    assert inspected["classes"] == list(CIFAR10_NAMES)  # the manifest records the class names
    checked = run_json("--inspect", "labels/c10-sym.csv", "--dataset", "cifar10", "--data-dir", "DATA")
    assert checked["classes"] == list(CIFAR10_NAMES)


def test_inspect_usage_of_a_cifar_n_file(workdir: Path) -> None:
    import torch

    clean = clean_labels(10)
    rng = np.random.default_rng(4)
    worse = np.where(rng.random(N10) < 0.4, rng.integers(0, 10, size=N10), clean)
    torch.save({"clean_label": clean, "worse_label": worse, "aggre_label": clean.copy()}, workdir / "CIFAR-10_human.pt")
    summary = run_json("--inspect", "CIFAR-10_human.pt", "--label-set", "worse_label")
    check_contract(summary, N10, 10)
    assert summary["realized_noise_rate"] == pytest.approx(np.mean(worse != clean))
    assert summary["label_set"] == "worse_label"
    run_json(
        "--inspect", "CIFAR-10_human.pt", "--label-set", "worse_label", "--dataset", "cifar10", "--data-dir", "DATA"
    )


def test_inspect_of_an_official_two_column_csv(workdir: Path) -> None:
    clean = clean_labels(10)
    noisy = np.where(np.arange(N10) % 5 == 0, (clean + 1) % 10, clean)
    (workdir / "sym0.4.csv").write_text(
        "label,label_noisy\n" + "".join(f"{c},{n}\n" for c, n in zip(clean, noisy, strict=True))
    )
    summary = run_json("--inspect", "sym0.4.csv", "--dataset", "cifar10", "--data-dir", "DATA")
    check_contract(summary, N10, 10)
    assert summary["realized_noise_rate"] == pytest.approx(0.2)
    assert summary["manifest"] is None and summary["requested_noise_rate"] is None


def test_rich_summary_of_cifar100_shows_top_confusions(workdir: Path) -> None:
    run_json("--dataset", "cifar100", "--data-dir", "DATA", "--mode", "sym", "--rate", "0.5", "--out", "s.csv")
    result = run("--inspect", "s.csv")
    assert result.exit_code == 0 and "Top confusions" in result.stdout and "Transition matrix" not in result.stdout


# --- modes end to end ----------------------------------------------------------------------------


def test_cifar10_asym_reports_requested_and_realised_plainly(workdir: Path) -> None:
    args = ("--dataset", "cifar10", "--data-dir", "DATA", "--mode", "asym", "--rate", "0.4", "--out", "a.csv")
    summary = run_json(*args)
    assert summary["requested_noise_rate"] == 0.4
    assert summary["expected_noise_rate"] == pytest.approx(0.2)  # 5 of the 10 balanced classes are mapped
    assert "mapped classes only" in summary["note"]
    rows = read_csv(workdir / "a.csv")
    allowed = {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}
    assert {(int(c), int(n)) for c, n in rows if c != n} <= allowed
    text = run(*args[:-2], "--out", "b.csv").stdout
    assert "requested rate" in text and "0.4000" in text and "realised overall rate" in text


def test_asym_superclass_stays_within_superclass(workdir: Path) -> None:
    from tests.synthetic import cifar100_superclass

    args = ("--dataset", "cifar100", "--data-dir", "DATA", "--mode", "asym-superclass", "--rate", "0.5")
    summary = run_json(*args, "--out", "s.csv")
    rows = read_csv(workdir / "s.csv")
    superclass = cifar100_superclass(1)
    flipped = rows[:, 0] != rows[:, 1]
    assert flipped.any() and np.all(superclass[rows[flipped, 0]] == superclass[rows[flipped, 1]])
    assert summary["mode"] == "asym-superclass"


def test_same_seed_same_file_other_seed_other_file(workdir: Path) -> None:
    base = ("--dataset", "cifar10", "--data-dir", "DATA", "--mode", "idn", "--rate", "0.4")
    for name, seed in (("a.csv", "5"), ("b.csv", "5"), ("c.csv", "6")):
        assert run(*base, "--seed", seed, "--out", name).exit_code == 0
    assert (workdir / "a.csv").read_bytes() == (workdir / "b.csv").read_bytes()
    assert (workdir / "a.csv").read_bytes() != (workdir / "c.csv").read_bytes()


def test_exact_sym_flips_exactly_round_rn(workdir: Path) -> None:
    args = ("--dataset", "cifar10", "--data-dir", "DATA", "--mode", "sym", "--rate", "0.33", "--exact")
    summary = run_json(*args, "--out", "e.csv")
    assert summary["num_mislabelled"] == 66  # round(0.33 * 200)


def test_transition_matrix_mode(workdir: Path) -> None:
    matrix = np.eye(10)
    matrix[0] = [0.5, 0.5] + [0.0] * 8
    np.savetxt(workdir / "T.csv", matrix, delimiter=",")
    summary = run_json(
        "--dataset", "cifar10", "--data-dir", "DATA", "--mode", "transition", "--matrix", "T.csv", "--out", "t.csv"
    )
    rows = read_csv(workdir / "t.csv")
    assert {(int(c), int(n)) for c, n in rows if c != n} <= {(0, 1)}
    assert summary["expected_noise_rate"] == pytest.approx(0.5 * np.mean(clean_labels(10) == 0))


def test_openset_records_which_sample_got_which_source_image(workdir: Path) -> None:
    args = ("--dataset", "cifar10", "--data-dir", "DATA", "--mode", "openset", "--rate", "0.4")
    summary = run_json(*args, "--source-dataset", "cifar100", "--source-data-dir", "DATA", "--out", "o.csv")
    assert (workdir / "o.csv").read_text().splitlines()[0] == "label,label_noisy,source_index"
    rows = read_csv(workdir / "o.csv")
    replaced = rows[rows[:, 2] >= 0, 2]
    assert replaced.size == 80 and np.unique(replaced).size == 80 and replaced.max() < N100
    assert np.array_equal(rows[:, 0], rows[:, 1]), "labels are kept"
    assert summary["realized_noise_rate"] == pytest.approx(0.4) and summary["source_dataset"] == "cifar100"
    manifest = json.loads((workdir / "o.json").read_text())
    assert manifest["source_dataset"] == "cifar100"


# --- errors --------------------------------------------------------------------------------------

GEN10 = ("--dataset", "cifar10", "--data-dir", "DATA")


def bad_matrix(workdir: Path, matrix: np.ndarray) -> str:
    np.save(workdir / "M.npy", matrix)
    return "M.npy"


def write_file(workdir: Path, name: str, text: str) -> str:
    (workdir / name).write_text(text)
    return name


def official_csv(clean: np.ndarray, noisy: np.ndarray) -> str:
    return "label,label_noisy\n" + "".join(f"{c},{n}\n" for c, n in zip(clean, noisy, strict=True))


ERROR_CASES = {
    "rate above 1": (lambda w: (*GEN10, "--mode", "sym", "--rate", "1.5"), "[0, 1]"),
    "rate below 0": (lambda w: (*GEN10, "--mode", "sym", "--rate", "-0.1"), "[0, 1]"),
    "rate missing": (lambda w: (*GEN10, "--mode", "sym"), "needs --rate"),
    "unknown mode": (lambda w: (*GEN10, "--mode", "symmetric", "--rate", "0.4"), "unknown mode"),
    "unknown dataset": (lambda w: ("--dataset", "cifar11", "--mode", "sym", "--rate", "0.4"), "unknown dataset"),
    "missing data dir": (
        lambda w: ("--dataset", "cifar10", "--data-dir", "nowhere", "--mode", "sym", "--rate", "0.4"),
        "no CIFAR-10 found",
    ),
    "dependent without probabilities": (lambda w: (*GEN10, "--mode", "dependent", "--rate", "0.4"), "--probs"),
    "openset without source": (lambda w: (*GEN10, "--mode", "openset", "--rate", "0.4"), "--source-dataset"),
    "asym without a map": (lambda w: ("--dataset", "digits", "--mode", "asym", "--rate", "0.4"), "--matrix"),
    "transition without matrix": (lambda w: (*GEN10, "--mode", "transition"), "--matrix"),
    "matrix of the wrong shape": (
        lambda w: (*GEN10, "--mode", "transition", "--matrix", bad_matrix(w, np.eye(3))),
        "shape (3, 3)",
    ),
    "matrix not row-stochastic": (
        lambda w: (*GEN10, "--mode", "asym", "--matrix", bad_matrix(w, np.full((10, 10), 0.2))),
        "sum to 1",
    ),
    "matrix file missing": (lambda w: (*GEN10, "--mode", "transition", "--matrix", "nope.npy"), "does not exist"),
    "matrix file not numeric": (
        lambda w: (*GEN10, "--mode", "transition", "--matrix", write_file(w, "m.csv", "a,b\nc,d\n")),
        "cannot read a matrix",
    ),
    "probabilities of the wrong shape": (
        lambda w: (*GEN10, "--mode", "dependent", "--rate", "0.4", "--probs", bad_matrix(w, np.full((5, 10), 0.1))),
        "shape (5, 10)",
    ),
    "run directory without probabilities": (
        lambda w: (*GEN10, "--mode", "dependent", "--rate", "0.4", "--probs", str(w)),
        "--record-probs",
    ),
    "rate with a matrix": (
        lambda w: (*GEN10, "--mode", "transition", "--rate", "0.4", "--matrix", bad_matrix(w, np.eye(10))),
        "drop --rate",
    ),
    "exact for a mode without it": (lambda w: (*GEN10, "--mode", "asym", "--rate", "0.4", "--exact"), "--exact"),
    "label set without --inspect": (
        lambda w: (*GEN10, "--mode", "sym", "--rate", "0.4", "--label-set", "worse_label"),
        "--label-set",
    ),
    "output not a csv": (lambda w: (*GEN10, "--mode", "sym", "--rate", "0.4", "--out", "x.json"), ".csv"),
}

OUTPUT = "out/labels.csv"


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_generation_errors(workdir: Path, case: str) -> None:
    make_args, message = ERROR_CASES[case]
    args = make_args(workdir)
    if "--out" not in args:
        args = (*args, "--out", OUTPUT)
    assert_error(workdir, run(*args), message)


def test_unwritable_output_path(workdir: Path) -> None:
    (workdir / "afile").write_text("not a directory")
    result = run(*GEN10, "--mode", "sym", "--rate", "0.4", "--out", "afile/labels.csv")
    assert_error(workdir, result, "cannot write")
    assert (workdir / "afile").read_text() == "not a directory"


def assert_error(workdir: Path, result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (workdir / "out").exists(), "no partial output"
    leftovers = [p.name for p in workdir.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".json"]
    assert leftovers == [], leftovers


INSPECT_CASES = {
    "malformed csv": (lambda w: write_file(w, "m.csv", "label,label_noisy\n1,2\n3;4\n"), (), "line 3"),
    "truncated csv": (lambda w: write_file(w, "t.csv", "label,label_noisy\n1,2\n3,"), (), "line 3"),
    "length differs from the dataset": (
        lambda w: write_file(w, "s.csv", official_csv(clean_labels(10)[:-1], clean_labels(10)[:-1])),
        GEN10,
        "made for another dataset or order",
    ),
    "clean labels differ from the dataset": (
        lambda w: write_file(w, "s.csv", official_csv(np.roll(clean_labels(10), 1), clean_labels(10))),
        GEN10,
        "made for another dataset or order",
    ),
    "labels out of range": (
        lambda w: write_file(w, "s.csv", official_csv(clean_labels(10), np.full(N10, 12))),
        GEN10,
        "10 classes",
    ),
    "missing file": (lambda w: "nope.csv", (), "does not exist"),
    "inspect with generation flags": (
        lambda w: write_file(w, "s.csv", official_csv(clean_labels(10), clean_labels(10))),
        ("--mode", "sym"),
        "drop --mode",
    ),
}


@pytest.mark.parametrize("case", list(INSPECT_CASES))
def test_inspect_errors(workdir: Path, case: str) -> None:
    make_file, extra, message = INSPECT_CASES[case]
    assert_error(workdir, run("--inspect", make_file(workdir), *extra), message)


def test_truncated_file_with_manifest_is_refused(workdir: Path) -> None:
    run_json(*GEN10, "--mode", "sym", "--rate", "0.4", "--out", "labels/s.csv")
    path = workdir / "labels" / "s.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:-10]) + "\n")
    result = run("--inspect", "labels/s.csv")
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "truncated" in result.stderr


def test_cifar_n_without_label_set_lists_the_sets(workdir: Path) -> None:
    import torch

    clean = clean_labels(10)
    torch.save({"clean_label": clean, "worse_label": clean.copy()}, workdir / "h.pt")
    result = run("--inspect", "h.pt")
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert "clean_label, worse_label" in result.stderr


def test_failed_generation_keeps_an_existing_output_untouched(workdir: Path) -> None:
    run_json(*GEN10, "--mode", "sym", "--rate", "0.4", "--out", "keep.csv")
    before = (workdir / "keep.csv").read_bytes(), (workdir / "keep.json").read_bytes()
    result = run(*GEN10, "--mode", "dependent", "--rate", "0.4", "--probs", "missing.npy", "--out", "keep.csv",
                 "--overwrite")
    assert result.exit_code == 1 and "does not exist" in result.stderr
    assert ((workdir / "keep.csv").read_bytes(), (workdir / "keep.json").read_bytes()) == before


def test_the_flag_conflicts_are_the_library_s_for_every_caller() -> None:
    """`labels.corrupt.check_flags` holds the policy `sln corrupt` applies, so a library caller gets it too."""
    from sln_cli.errors import SlnError
    from sln_cli.labels.corrupt import check_flags

    with pytest.raises(SlnError, match="--inspect summarises an existing file; drop --mode, --out$"):
        check_flags({"--inspect": "a.csv", "--mode": "sym", "--out": "b.csv"})
    check_flags({"--inspect": "a.csv", "--plot": "p.png", "--overwrite": True})  # replaces an earlier --plot
    with pytest.raises(SlnError, match="only fills the label cache; drop --dataset$"):
        check_flags({"--fetch-official": "all", "--dataset": "digits"})
    with pytest.raises(SlnError, match="--plot draws the file given to --inspect"):
        check_flags({"--mode": "sym", "--plot": "p.png"})
    check_flags({"--mode": "sym", "--rate": 0.2, "--out": "b.csv", "--overwrite": True})  # generation: fine
