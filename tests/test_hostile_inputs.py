"""Hostile inputs, generated: label files, presets and `--set` values from hypothesis, plus YAML bombs.

Every case: the command either works or ends in exit 1 with one `error:` line and no traceback; it never
hangs, and the files that were there before are byte-identical afterwards.
"""

from __future__ import annotations

import math
import string
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sln_cli.config import Config, to_dict
from sln_cli.errors import SlnError
from sln_cli.labels.labelfile import read_label_file
from tests.hostile import assert_one_line_error, sln, snapshot, within

GENERATED = settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
KEYS = [f"{section}.{key}" for section, values in to_dict(Config()).items() if isinstance(values, dict)
        for key in values]


def _fresh(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("case")


# --------------------------------------------------------------------------------------------------
# Label files
# --------------------------------------------------------------------------------------------------

cells = st.one_of(
    st.integers(-5, 120).map(str),
    st.integers(-(2**80), 2**80).map(str),
    st.sampled_from(["", " 3", "3 ", '"4"', "1e3", "0x10", "+2", "-", "٣", "9" * 5000, "NaN"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
)
headers = st.sampled_from(["label,label_noisy", "label_noisy", "label,label_noisy,source_index",
                           "\ufefflabel,label_noisy", "noisy,clean", "label;label_noisy", "", '"label","label_noisy"'])
newlines = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def label_file_bytes(draw) -> bytes:
    """Mostly CSV-shaped text with broken cells, rows and line endings; sometimes arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    newline = draw(newlines)
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=4), max_size=12))
    text = draw(headers) + newline + newline.join(",".join(row) for row in rows) + draw(st.sampled_from(["", newline]))
    encoded = text.encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), errors="replace")
    return encoded


@GENERATED
@given(content=label_file_bytes())
@example(content=b"label,label_noisy\n1,99999999999999999999999\n")
@example(content=b"label,label_noisy\n1," + b"7" * 200_000 + b"\n")
@example(content=b"label,label_noisy\n\xff\xfe,1\n")
@example(content=b"\x00\x01\x02label_noisy")
@example(content=b'label,label_noisy\n"' + b"x" * 200_000 + b'",1\n')
def test_any_label_file_is_read_or_refused_in_one_line(tmp_path_factory, content):
    folder = _fresh(tmp_path_factory)
    path = folder / "labels.csv"
    path.write_bytes(content)
    before = snapshot(folder)
    outcome = sln("corrupt", "--inspect", path, "--json")
    if outcome.exit_code != 0:
        assert_one_line_error(outcome)
    assert snapshot(folder) == before


@GENERATED
@given(values=st.lists(st.tuples(st.integers(0, 10**18 - 1), st.integers(1 - 10**18, 10**18 - 1)), min_size=1,
                      max_size=60),
       newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans(), trailing=st.sampled_from(["", "\n", "\n\n"]))
def test_well_formed_files_parse_exactly(tmp_path_factory, values, newline, bom, trailing):
    """The vectorised reader against Python's int(): every value, sign and line ending."""
    path = _fresh(tmp_path_factory) / "labels.csv"
    rows = newline.join(f"{a},{b}" for a, b in values)
    path.write_text(("\ufeff" if bom else "") + "label,label_noisy" + newline + rows + trailing, encoding="utf-8")
    try:
        labels = read_label_file(path)
    except SlnError as exc:
        assert "negative" in str(exc) and any(b < 0 for _, b in values)
        return
    assert labels.clean.tolist() == [a for a, _ in values] and labels.noisy.tolist() == [b for _, b in values]


def test_a_big_label_file_of_the_wrong_length_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"label,label_noisy\n" + b"3,7\n" * 2_000_000)
    started = time.perf_counter()
    with pytest.raises(SlnError, match="has 2000000 rows but the dataset has 1297"):
        read_label_file(path, expected_rows=1297)
    assert time.perf_counter() - started < 5  # a byte count, not a parse (a parse takes seconds here)


def test_a_label_file_costs_memory_in_proportion_to_its_size(tmp_path):
    """Peak memory of reading a 2M-row file, in a fresh process: ~ the file plus its int64 columns, not 10x."""
    import subprocess
    import sys

    path = tmp_path / "big.csv"
    path.write_bytes(b"label,label_noisy\n" + b"13,57\n" * 2_000_000)
    code = ("import resource, sys; from sln_cli.labels.labelfile import read_label_file; import numpy;"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
            f"labels = read_label_file({str(path)!r}); assert labels.noisy.size == 2_000_000;"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)")
    grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])}).stdout)
    size, columns = path.stat().st_size, 2 * 8 * 2_000_000  # 12 MB of text becomes 32 MB of int64 columns
    assert grown < 2 * (size + columns), (grown, size)  # measured: 57 MiB; the list-of-lists reader took 536 MiB


# --------------------------------------------------------------------------------------------------
# Presets and --set
# --------------------------------------------------------------------------------------------------

leaf_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["cifar10", "digits", "mlp", "fp32", "auto", "1e-3", ".inf", "nan"]),
)
preset_trees = st.dictionaries(
    st.one_of(st.sampled_from(["data", "noise", "model", "optim", "sln", "run", "description"]), st.text(max_size=6)),
    st.one_of(leaf_values, st.dictionaries(st.sampled_from([k.split(".")[1] for k in KEYS]) | st.text(max_size=5),
                                           st.one_of(leaf_values, st.lists(leaf_values, max_size=3)), max_size=4)),
    max_size=5,
)


def _check_printed_config(outcome) -> None:
    if outcome.exit_code != 0:
        assert_one_line_error(outcome)
        return
    tree = yaml.safe_load(outcome.stdout)
    floats = [v for section in tree.values() if isinstance(section, dict) for v in section.values()
              if isinstance(v, float)]
    assert all(math.isfinite(v) for v in floats)  # validation lets no nan/inf through


@GENERATED
@given(tree=preset_trees, raw=st.one_of(st.none(), st.text(max_size=80)))
@example(tree={"optim": {"lr": float("nan")}}, raw=None)
@example(tree={}, raw="optim: {lr: !!python/object/apply:os.system ['touch PWNED']}")
@example(tree={}, raw="a: &a [1]\nb: *a\n" + "\t\x00")
def test_any_preset_resolves_or_is_refused_in_one_line(tmp_path_factory, tree, raw):
    folder = _fresh(tmp_path_factory)
    preset = folder / "preset.yaml"
    preset.write_text(yaml.safe_dump(tree) if raw is None else raw, encoding="utf-8")
    before = snapshot(folder)
    outcome = sln("train", "--preset", preset, "--print-config")
    _check_printed_config(outcome)
    assert snapshot(folder) == before and not Path("PWNED").exists()


set_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from([".nan", "-.inf", "1e999", "nan", "inf", "-1", "0", "[1, 2]", "{a: 1}", "&a [*a]", "null",
                     "!!python/object/apply:os.system ['touch PWNED']", "99999999999999999999999", "1e-3", "true",
                     "'", "[", "*undefined", "2" * 400]),
)


@GENERATED
@given(key=st.one_of(st.sampled_from(KEYS), st.text(alphabet=string.ascii_lowercase + "._", max_size=12)),
       value=set_values)
def test_any_set_value_resolves_or_is_refused_in_one_line(key, value):
    outcome = sln("train", "--preset", "quickstart", "--set", f"{key}={value}", "--print-config")
    _check_printed_config(outcome)
    assert not Path("PWNED").exists()


# --------------------------------------------------------------------------------------------------
# YAML bombs: refused in well under a second, wherever sln reads YAML
# --------------------------------------------------------------------------------------------------

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "\n".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]" for i in range(1, 10)
) + "\noptim: {lr_milestones: *j}\n"  # under a real key, so that resolving the config would walk it


@pytest.mark.parametrize("place", ["preset", "resume", "evaluate", "set"])
def test_a_billion_laughs_is_refused_fast(tmp_path, place):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(BILLION_LAUGHS)
    (run / "final.pt").write_bytes(b"not used")
    before = snapshot(tmp_path)
    args = {"preset": ["train", "--preset", run / "config.yaml", "--print-config"],
            "resume": ["train", "--resume", run],
            "evaluate": ["evaluate", run],
            "set": ["train", "--preset", "quickstart", "--set", "optim.lr_milestones=" + BILLION_LAUGHS.replace(
                "\n", ", ").join("{}"), "--print-config"]}[place]
    with within(20):
        outcome = sln(*args)
    line = assert_one_line_error(outcome)
    assert "not valid YAML" in line or "YAML nodes" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("content", "mentions"), [
    (b"\xff\xfe\x00\x01" * 10, "not UTF-8"),
    (b"optim:\n  lr: 0.1\n" + b"#" * (2 << 20), "over the 1 MiB"),
    (b"[" * 100_000, "preset.yaml"),
    (b"optim: !!python/object/apply:os.system ['touch PWNED']\n", "not valid YAML"),
])
def test_a_hostile_config_file_is_one_line(tmp_path, content, mentions):
    preset = tmp_path / "preset.yaml"
    preset.write_bytes(content)
    with within(20):
        outcome = sln("train", "--preset", preset, "--print-config")
    assert_one_line_error(outcome, mentions=mentions)
    assert not Path("PWNED").exists() and preset.read_bytes() == content
