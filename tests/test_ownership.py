"""`sln_cli.rundir.ownership`: sln re-claims only directories it marked, deletes only its own files, and says so."""

import json

import pytest

from sln_cli.errors import SlnError
from sln_cli.rundir.ownership import MARKER, check_replaceable, claim_new_directory, is_owned, prepare_output_dir

RUN_FILES = ["config.yaml", "meta.json", "metrics.jsonl", "checkpoint.pt", "final.pt", "summary.json",
             "labels.csv", "labels.json", ".final.pt.abc123.tmp"]


def _fill(directory, names):
    for name in names:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(name)


def test_a_new_directory_is_created_and_marked(tmp_path):
    run = tmp_path / "a" / "run"
    claim_new_directory(run, "run", overwrite=False)
    marker = json.loads((run / MARKER).read_text())
    assert marker["kind"] == "run" and "sln_version" in marker and "created" in marker
    assert is_owned(run, "run") and not is_owned(run, "sweep") and not is_owned(tmp_path, "run")


def test_an_empty_existing_directory_is_taken(tmp_path):
    claim_new_directory(tmp_path, "run", overwrite=False)
    assert is_owned(tmp_path, "run")


def test_a_non_empty_directory_needs_overwrite(tmp_path):
    claim_new_directory(tmp_path, "run", overwrite=False)
    _fill(tmp_path, RUN_FILES)
    with pytest.raises(SlnError, match=f"run directory {tmp_path} is not empty.*--overwrite.*--resume"):
        claim_new_directory(tmp_path, "run", overwrite=False)
    assert all((tmp_path / name).is_file() for name in RUN_FILES)


def test_overwrite_removes_only_the_files_sln_writes(tmp_path):
    claim_new_directory(tmp_path, "run", overwrite=False)
    ours = [*RUN_FILES, "checkpoints/epoch-0002.pt", "analysis/reliability-test.png"]
    theirs = ["notes.txt", "config.yaml.bak", "checkpoints/my-favourite.pt", "analysis/paper-figure.pdf",
              "sub/final.pt"]
    _fill(tmp_path, ours + theirs)
    (tmp_path / "linked.pt").symlink_to(tmp_path / "notes.txt")
    (tmp_path / "best.pt").symlink_to(tmp_path / "notes.txt")  # a link is never sln's, whatever its name
    claim_new_directory(tmp_path, "run", overwrite=True)
    assert not any((tmp_path / name).exists() for name in ours)
    assert all((tmp_path / name).read_text() == name for name in theirs)
    assert (tmp_path / "best.pt").is_symlink() and (tmp_path / "linked.pt").is_symlink()
    assert is_owned(tmp_path, "run")


def test_overwrite_removes_folders_it_emptied(tmp_path):
    claim_new_directory(tmp_path, "run", overwrite=False)
    _fill(tmp_path, [*RUN_FILES, "checkpoints/epoch-0001.pt"])
    claim_new_directory(tmp_path, "run", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER]


def test_overwrite_refuses_a_directory_sln_did_not_mark(tmp_path):
    _fill(tmp_path, ["config.yaml", "thesis.tex"])
    with pytest.raises(SlnError, match=f"{tmp_path} was not made by sln"):
        claim_new_directory(tmp_path, "run", overwrite=True)
    assert (tmp_path / "config.yaml").read_text() == "config.yaml" and not (tmp_path / MARKER).exists()


def test_overwrite_refuses_a_run_made_before_markers_and_says_what_to_do(tmp_path):
    _fill(tmp_path, ["config.yaml", "meta.json", "metrics.jsonl", "final.pt"])
    with pytest.raises(SlnError, match=r"made before sln marked.*rm -r"):
        claim_new_directory(tmp_path, "run", overwrite=True)
    assert (tmp_path / "final.pt").is_file()


def test_overwrite_refuses_a_marker_of_another_kind(tmp_path):
    claim_new_directory(tmp_path, "sweep", overwrite=False)
    _fill(tmp_path, ["config.yaml"])
    with pytest.raises(SlnError, match="sln sweep directory, not a run one"):
        claim_new_directory(tmp_path, "run", overwrite=True)
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.parametrize("content", [b"", b"\xff\xfe", b"[1, 2]", b'{"kind": 3}', b"{" * 100_000])
def test_a_damaged_marker_owns_nothing(tmp_path, content):
    (tmp_path / MARKER).write_bytes(content)
    _fill(tmp_path, ["final.pt"])
    assert not is_owned(tmp_path, "run")
    with pytest.raises(SlnError, match="not made by sln"):
        claim_new_directory(tmp_path, "run", overwrite=True)


def test_a_file_where_the_directory_should_be_is_one_line(tmp_path):
    (tmp_path / "run").write_text("mine")
    with pytest.raises(SlnError, match="exists and is not a directory"):
        claim_new_directory(tmp_path / "run", "run", overwrite=True)
    with pytest.raises(SlnError, match="cannot create"):
        claim_new_directory(tmp_path / "run" / "sub", "run", overwrite=True)
    assert (tmp_path / "run").read_text() == "mine"


def test_an_output_file_is_replaced_only_with_overwrite(tmp_path):
    path = tmp_path / "table.csv"
    check_replaceable(path, overwrite=False)  # new: fine
    path.write_text("mine")
    with pytest.raises(SlnError, match=f"{path} already exists; pass --csv-overwrite"):
        check_replaceable(path, overwrite=False, flag="--csv-overwrite")
    check_replaceable(path, overwrite=True)
    with pytest.raises(SlnError, match="is a directory"):
        check_replaceable(tmp_path, overwrite=True)


def test_sln_keeps_its_own_files_in_a_folder_it_made_up_to_date(tmp_path):
    folder = tmp_path / "plots"
    prepare_output_dir(folder, ["reliability-*.png"], overwrite=False)
    assert is_owned(folder, "analysis")
    (folder / "reliability-test.png").write_text("old")
    (folder / "mine.png").write_text("mine")
    check_replaceable(folder / "reliability-test.png", overwrite=False)
    prepare_output_dir(folder, ["reliability-*.png"], overwrite=False)
    with pytest.raises(SlnError, match="already exists"):
        check_replaceable(folder / "mine.png", overwrite=False)


def test_a_users_folder_is_used_only_when_nothing_is_in_the_way(tmp_path):
    (tmp_path / "reliability-test.png").write_text("theirs")
    (tmp_path / "notes.txt").write_text("theirs")
    with pytest.raises(SlnError, match=f"{tmp_path / 'reliability-test.png'} already exists in a folder sln did"):
        prepare_output_dir(tmp_path, ["reliability-*.png"], overwrite=False)
    assert not (tmp_path / MARKER).exists()
    prepare_output_dir(tmp_path, ["reliability-*.png"], overwrite=True)  # consent given: used, never marked
    assert not (tmp_path / MARKER).exists() and (tmp_path / "notes.txt").read_text() == "theirs"
    with pytest.raises(SlnError, match="already exists"):  # the next write asks again
        prepare_output_dir(tmp_path, ["reliability-*.png"], overwrite=False)
    with pytest.raises(SlnError, match="already exists"):
        check_replaceable(tmp_path / "notes.txt", overwrite=False)


def test_a_folder_holding_a_users_file_of_an_sln_name_is_never_marked(tmp_path):
    (tmp_path / "reliability-test.png").write_text("theirs")
    prepare_output_dir(tmp_path, ["confidence-*.png"], overwrite=False)
    assert not (tmp_path / MARKER).exists()
    with pytest.raises(SlnError, match="already exists"):  # so the user's file still needs --overwrite
        prepare_output_dir(tmp_path, ["reliability-*.png"], overwrite=False)


def test_a_file_where_the_output_folder_should_be(tmp_path):
    (tmp_path / "plots").write_text("mine")
    with pytest.raises(SlnError, match="is not a directory"):
        prepare_output_dir(tmp_path / "plots", ["*.png"], overwrite=True)
