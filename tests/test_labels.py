"""The noisy-label file format: write/read round trip, manifests, official SLN CSVs, CIFAR-N .pt, checks, summaries."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import sln_cli
from sln_cli.errors import SlnError
from sln_cli.labels.labelfile import (
    WRONG_FILE,
    NoisyLabels,
    check_against,
    read_label_file,
    sha256_labels,
    summarize,
    write_label_file,
)


def example(n: int = 40, num_classes: int = 5, seed: int = 0, openset: bool = False) -> NoisyLabels:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, num_classes, size=n).astype(np.int64)
    noisy = np.where(rng.random(n) < 0.3, rng.integers(0, num_classes, size=n), clean).astype(np.int64)
    source_index = None
    if openset:
        noisy = clean.copy()
        source_index = np.full(n, -1, dtype=np.int64)
        source_index[: n // 4] = np.arange(n // 4) * 3
    return NoisyLabels(noisy=noisy, clean=clean, source_index=source_index, manifest={})


# --- writing and reading our own files -----------------------------------------------------------


def test_round_trip_with_manifest(tmp_path: Path) -> None:
    labels = example()
    path = tmp_path / "out" / "labels.csv"
    written = write_label_file(path, labels, {"dataset": "cifar10", "num_classes": 5, "mode": "sym", "seed": 3})
    assert path.read_text().splitlines()[0] == "label,label_noisy"
    manifest = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert manifest == written
    assert manifest["sha256_clean"] == sha256_labels(labels.clean)
    assert manifest["sha256_noisy"] == sha256_labels(labels.noisy)
    assert manifest["num_samples"] == 40 and manifest["dataset"] == "cifar10" and manifest["seed"] == 3
    back = read_label_file(path)
    assert np.array_equal(back.clean, labels.clean) and np.array_equal(back.noisy, labels.noisy)
    assert back.source_index is None and back.manifest == manifest
    assert back.noisy.dtype == np.int64


def test_sha256_is_of_int64_little_endian_labels() -> None:
    import hashlib

    labels = np.array([3, 1, 2], dtype=np.int32)
    expected = hashlib.sha256(b"".join(int(v).to_bytes(8, "little", signed=True) for v in labels)).hexdigest()
    assert sha256_labels(labels) == expected


def test_openset_round_trip_keeps_source_index(tmp_path: Path) -> None:
    labels = example(openset=True)
    write_label_file(tmp_path / "o.csv", labels, {"mode": "openset", "source_dataset": "cifar100"})
    assert (tmp_path / "o.csv").read_text().splitlines()[0] == "label,label_noisy,source_index"
    back = read_label_file(tmp_path / "o.csv")
    assert np.array_equal(back.source_index, labels.source_index)
    assert "sha256_source_index" in back.manifest


def test_edited_file_is_refused_when_it_has_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    write_label_file(path, example(), {"num_classes": 5})
    lines = path.read_text().splitlines()
    clean, noisy = lines[5].split(",")
    lines[5] = f"{clean},{(int(noisy) + 1) % 5}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SlnError, match="edited"):
        read_label_file(path)
    path.write_text("\n".join(lines[:-3]) + "\n")  # rows lost
    with pytest.raises(SlnError, match="truncated"):
        read_label_file(path)
    (tmp_path / "labels.json").unlink()  # without the manifest it is a plain CSV again
    assert read_label_file(path).noisy.size == 37


def test_failed_manifest_write_leaves_neither_file(tmp_path: Path) -> None:
    (tmp_path / "labels.json").mkdir()  # the manifest cannot be renamed onto a directory
    with pytest.raises(SlnError, match="cannot write"):
        write_label_file(tmp_path / "labels.csv", example(), {})
    assert not (tmp_path / "labels.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"], "no temporary files left behind"


def test_failed_csv_rename_takes_the_new_manifest_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    real_replace = os.replace

    def replace(source: str, target: str | Path) -> None:
        if str(target).endswith(".csv"):  # the manifest is already in place when the CSV's rename fails
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(SlnError, match="No space left"):
        write_label_file(tmp_path / "labels.csv", example(), {})
    assert list(tmp_path.iterdir()) == []


def test_output_must_be_a_csv(tmp_path: Path) -> None:
    with pytest.raises(SlnError, match=r"\.csv"):
        write_label_file(tmp_path / "labels.json", example(), {})


def test_manifest_records_the_tool_version_when_the_caller_passes_it(tmp_path: Path) -> None:
    manifest = write_label_file(tmp_path / "a.csv", example(), {"sln_version": sln_cli.__version__})
    assert manifest["sln_version"] == sln_cli.__version__ and manifest["format"] == "sln-noisy-labels"


# --- the official SLN CSVs -----------------------------------------------------------------------


def test_official_two_column_csv_loads_unchanged(tmp_path: Path) -> None:
    # As chenpf1025/SLN publishes them: `label,label_noisy`, 50,000 rows, trailing newline, no manifest.
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 10, size=50000)
    noisy = np.where(rng.random(50000) < 0.4, (clean + rng.integers(1, 10, size=50000)) % 10, clean)
    text = "label,label_noisy\n" + "".join(f"{c},{n}\n" for c, n in zip(clean, noisy, strict=True))
    path = tmp_path / "sym0.4.csv"
    path.write_text(text)
    labels = read_label_file(path)
    assert labels.manifest == {} and labels.source_index is None
    assert np.array_equal(labels.clean, clean) and np.array_equal(labels.noisy, noisy)
    check_against(labels, clean, 10)


def test_unrelated_json_beside_an_official_csv_is_not_taken_for_its_manifest(tmp_path: Path) -> None:
    (tmp_path / "sym0.4.csv").write_text("label,label_noisy\n1,2\n3,3\n")
    (tmp_path / "sym0.4.json").write_text('{"sha256_noisy": "0", "num_samples": 7}')
    labels = read_label_file(tmp_path / "sym0.4.csv")
    assert labels.manifest == {} and labels.noisy.tolist() == [2, 3]


def test_extra_columns_are_allowed_and_columns_found_by_name(tmp_path: Path) -> None:
    # e.g. pandas with its index column, columns in another order
    (tmp_path / "x.csv").write_text(",label_noisy,label,worker\n0,3,1,a\n1,2,2,b\n")
    labels = read_label_file(tmp_path / "x.csv")
    assert labels.clean.tolist() == [1, 2] and labels.noisy.tolist() == [3, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("clean,noisy\n1,2\n", "expected columns"),
        ("label,label_noisy\n1,2\n3\n", "line 3 has 1 fields"),
        ("label,label_noisy\n1,2\n3,", "line 3"),
        ("label,label_noisy\n1,two\n", "not an integer"),
        ("label,label_noisy\n1,2\n-1,2\n", "negative"),
    ],
)
def test_malformed_csvs_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(SlnError, match=message):
        read_label_file(tmp_path / "bad.csv")


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(SlnError, match="does not exist"):
        read_label_file(tmp_path / "nope.csv")
    (tmp_path / "labels.txt").write_text("label,label_noisy\n")
    with pytest.raises(SlnError, match=r"\.csv"):
        read_label_file(tmp_path / "labels.txt")


# --- CIFAR-N -------------------------------------------------------------------------------------


def write_cifar_n(path: Path, content: dict, numpy1_names: bool = True) -> Path:
    """`torch.save` of numpy arrays, as CIFAR-N ships; optionally rename numpy's reconstructor to the
    `numpy.core.multiarray` that the real files (pickled by numpy 1.x) name."""
    import torch

    torch.save(content, path)
    if numpy1_names:
        original = path.with_suffix(".orig")
        path.rename(original)
        with zipfile.ZipFile(original) as source, zipfile.ZipFile(path, "w") as target:
            for info in source.infolist():
                data = source.read(info.filename)
                if info.filename.endswith("data.pkl"):
                    assert b"numpy._core.multiarray" in data or b"numpy.core.multiarray" in data
                    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                target.writestr(info, data)
        original.unlink()
    return path


def cifar10_human(n: int = 60, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 10, size=n)
    content = {"clean_label": clean}
    for key, rate in (("aggre_label", 0.1), ("worse_label", 0.4), ("random_label1", 0.2)):
        content[key] = np.where(rng.random(n) < rate, rng.integers(0, 10, size=n), clean)
    return content


@pytest.mark.parametrize("numpy1_names", [True, False])
def test_cifar_n_labels_load_by_name(tmp_path: Path, numpy1_names: bool) -> None:
    content = cifar10_human()
    path = write_cifar_n(tmp_path / "CIFAR-10_human.pt", content, numpy1_names)
    labels = read_label_file(path, label_set="worse_label")
    assert np.array_equal(labels.clean, content["clean_label"])
    assert np.array_equal(labels.noisy, content["worse_label"])
    assert labels.manifest == {} and labels.noisy.dtype == np.int64


def test_cifar_n_label_set_missing_or_unknown_lists_the_available_sets(tmp_path: Path) -> None:
    path = write_cifar_n(tmp_path / "CIFAR-10_human.pt", cifar10_human())
    with pytest.raises(SlnError, match="--label-set.*aggre_label, clean_label, random_label1, worse_label"):
        read_label_file(path)
    with pytest.raises(SlnError, match="no label set 'worst_label'.*worse_label"):
        read_label_file(path, label_set="worst_label")


def test_cifar100_n_noisy_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    clean = rng.integers(0, 100, size=80)
    noisy = np.where(rng.random(80) < 0.4, rng.integers(0, 100, size=80), clean)
    path = write_cifar_n(tmp_path / "CIFAR-100_human.pt", {"clean_label": clean, "noisy_label": noisy})
    labels = read_label_file(path, label_set="noisy_label")
    assert np.array_equal(labels.noisy, noisy) and np.array_equal(labels.clean, clean)


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_n_file_with_arbitrary_objects_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"clean_label": np.arange(3), "x": _Exploit()}, path)
    with pytest.raises(SlnError, match="cannot read .* as CIFAR-N labels"):
        read_label_file(path, label_set="clean_label")
    assert "must never run" not in capsys.readouterr().out


def test_cifar_n_without_clean_labels_is_refused(tmp_path: Path) -> None:
    path = write_cifar_n(tmp_path / "x.pt", {"noisy_label": np.arange(3)})
    with pytest.raises(SlnError, match="clean_label"):
        read_label_file(path, label_set="noisy_label")


# --- checks against a dataset --------------------------------------------------------------------


def test_check_against_accepts_the_matching_dataset() -> None:
    labels = example()
    check_against(labels, labels.clean.copy(), 5)


@pytest.mark.parametrize(
    ("mutate", "num_classes", "message"),
    [
        (lambda clean: clean[:-1], 5, "has 40 rows but the dataset has 39"),
        (lambda clean: np.roll(clean, 1), 5, "clean column differs"),
        (lambda clean: clean, 3, "3 classes"),
    ],
)
def test_check_against_refuses_files_for_another_dataset(mutate, num_classes: int, message: str) -> None:
    labels = example()
    with pytest.raises(SlnError, match=message) as error:
        check_against(labels, mutate(labels.clean.copy()), num_classes)
    assert WRONG_FILE in str(error.value)


# --- summaries -----------------------------------------------------------------------------------


def test_summary_matches_a_count_by_hand() -> None:
    clean = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    noisy = np.array([0, 1, 1, 0, 1, 0, 2, 2, 2, 0])
    summary = summarize(clean, noisy, 4, requested_rate=0.4, mode="sym")
    assert summary["num_samples"] == 10 and summary["num_classes"] == 4 and summary["num_mislabelled"] == 4
    assert summary["realized_noise_rate"] == pytest.approx(0.4)
    assert summary["requested_noise_rate"] == 0.4 and summary["mode"] == "sym"
    assert summary["per_class_noise_rate"] == pytest.approx([0.5, 0.5, 0.25, 0.0])
    assert summary["class_counts"] == [4, 2, 4, 0]
    matrix = np.array(summary["transition_matrix"])
    assert matrix == pytest.approx(np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0.25, 0, 0.75, 0], [0, 0, 0, 0]]))
    assert summary["top_confusions"][0] == {"true": 0, "noisy": 1, "count": 2, "fraction_of_class": 0.5}
    json.dumps(summary)  # JSON-ready


def test_summary_of_random_noise_is_row_stochastic() -> None:
    labels = example(n=2000, num_classes=7, seed=5)
    matrix = np.array(summarize(labels.clean, labels.noisy, 7)["transition_matrix"])
    assert matrix.shape == (7, 7)
    assert matrix.sum(axis=1) == pytest.approx(np.ones(7))


def test_openset_summary_counts_replaced_images() -> None:
    labels = example(n=40, openset=True)
    summary = summarize(labels.clean, labels.noisy, 5, requested_rate=0.25, source_index=labels.source_index)
    assert summary["realized_noise_rate"] == pytest.approx(0.25)
    assert summary["num_replaced_images"] == 10 and summary["label_noise_rate"] == 0.0
    assert summary["num_mislabelled"] == 0  # open-set keeps the labels
    expected = [np.mean(labels.source_index[labels.clean == c] >= 0) for c in range(5)]
    assert summary["per_class_noise_rate"] == pytest.approx(expected)


@pytest.mark.parametrize("file_backed", ["ours", "source"])
def test_an_openset_file_on_a_file_backed_dataset_is_one_line(file_backed: str) -> None:
    import torch

    from sln_cli.data import Dataset, Split
    from sln_cli.labels import trainset

    def dataset(name: str, on_files: bool) -> Dataset:
        split = (Split(labels=np.zeros(2, np.int64), files=(Path("a.png"), Path("b.png"))) if on_files
                 else Split(labels=np.zeros(2, np.int64), images=torch.zeros(2, 3, 4, 4, dtype=torch.uint8)))
        return Dataset(name, ("a", "b"), split, split, None, (0.5,) * 3, (0.5,) * 3)

    labels = NoisyLabels(noisy=np.zeros(2, np.int64), clean=np.zeros(2, np.int64),
                         source_index=np.array([1, -1]), manifest={})
    ours, source = dataset("folder", file_backed == "ours"), dataset("other", file_backed == "source")
    with pytest.raises(SlnError, match=f"{'folder' if file_backed == 'ours' else 'other'} is read from files"):
        trainset._swap_openset_images(ours, labels, source, None)
