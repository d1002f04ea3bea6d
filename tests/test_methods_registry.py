"""The method registry: every spec is complete, config/catalog/bench/CLI agree with it, and a method defined in one
file outside sln_cli (tests/toy_method.py) trains through `sln train --method toy`."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.config import MethodConfig, resolve
from sln_cli.errors import SlnError
from sln_cli.methods import catalog

TESTS = Path(__file__).parent


def test_every_registered_method_has_every_field():
    assert list(catalog.METHODS) == [spec.name for spec in catalog.BUILTIN]
    for name, spec in catalog.METHODS.items():
        assert spec.name == name and re.fullmatch(r"[a-z][a-z0-9-]*", name)
        assert spec.paper and spec.changes and isinstance(spec.soft_targets, bool)
        assert spec.reference is not None and re.fullmatch(r"[0-9a-f]{40}", spec.reference.commit), name
        module, _, cls = spec.factory.partition(":")
        assert module.startswith("sln_cli.methods.") and cls, name
        assert (Path("sln_cli") / "methods" / f"{module.rsplit('.', 1)[1]}.py").read_text().count(f"class {cls}(") == 1
        for h in spec.hyperparameters:
            assert h.source and (h.bounds is None or len(h.bounds) == 4), (name, h.key)


def test_the_config_section_holds_exactly_the_registrys_keys():
    fields = {f.name for f in dataclasses.fields(MethodConfig)} - {"name", "sam"}
    assert fields == {h.key for spec in catalog.METHODS.values() for h in spec.hyperparameters} | {"sam_rho"}
    for name in catalog.METHODS:  # every name resolves, with exactly its own keys set
        config = resolve({}, [f"method.name={name}", "method.forget_rate=0.2"] if name == "coteaching"
                         else [f"method.name={name}", "sln.sigma=0"])
        own = {h.key for h in catalog.METHODS[name].hyperparameters}
        assert {k for k, v in dataclasses.asdict(config.method).items() if v is not None} - {"name", "sam"} \
            <= own, name


def test_cli_and_bench_list_the_registry():
    listed = json.loads(CliRunner().invoke(app, ["methods", "--json"]).output)
    assert [row["name"] for row in listed][:-1] == list(catalog.METHODS)  # the last row: SAM
    for row in listed[:-1]:
        spec = catalog.METHODS[row["name"]]
        assert set(row["hyperparameters"]) == {h.key for h in spec.hyperparameters}
        assert row["combinations"] == spec.combinations
    from sln_cli.bench.methods import VARIANTS

    assert set(VARIANTS) == set(catalog.METHODS) | {"ce+sam"}


def test_bounds_come_from_the_spec_and_all_bad_keys_are_named_at_once():
    with pytest.raises(SlnError) as caught:
        resolve({}, ["method.name=dividemix", "method.p_threshold=1", "method.sharpen_t=0", "method.lambda_u=-1"])
    message = str(caught.value)
    assert "\n" not in message
    for key in ("p_threshold", "sharpen_t", "lambda_u"):
        assert f"method.{key} must be in" in message
    with pytest.raises(SlnError, match=r"method.name must be one of sln, ce, .*got 'toyy'"):
        resolve({}, ["method.name=toyy"])


def test_register_refuses_a_key_outside_the_method_section_and_a_second_spelling():
    bad = catalog.MethodSpec("x", "p", "c", True, (catalog.Hyperparameter("x_rate", 1, 1, "s"),))
    with pytest.raises(ValueError, match="not a key"):
        catalog.register(bad)
    with pytest.raises(ValueError, match="twice"):
        catalog.register(catalog.METHODS["sln"])
    assert "x" not in catalog.METHODS


def _sln(tmp_path: Path, *args: str, plugins: str = "toy_method") -> subprocess.CompletedProcess:
    env = {**os.environ, "SLN_METHODS": plugins,
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    return subprocess.run([sys.executable, "-m", "sln_cli", *args], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_a_toy_method_in_one_file_trains_through_sln_train(tmp_path):
    run = tmp_path / "toy"
    result = _sln(tmp_path, "train", "--preset", "quickstart", "--method", "toy", "--epochs", "2", "--train-limit",
                  "200", "--test-limit", "100", "--set", "model.name=mlp", "--set", "run.cpu_threads=1", "--quiet",
                  "--out", str(run))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # its loss was used: cross-entropy on 10 classes is a few nats, the toy's adds 100
    assert len(rows) == 2 and all(100 < row["train_loss"] < 110 for row in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "toy" and summary["method_names"]["ema"] == "TOY-MO"  # the preset's sigma was for sln
    listed = json.loads(_sln(tmp_path, "methods", "--json").stdout)
    assert "toy" in [row["name"] for row in listed]


def test_a_plugin_that_does_not_import_is_one_line(tmp_path):
    result = _sln(tmp_path, "train", "--preset", "quickstart", "--method", "toy", "--epochs", "1",
                  plugins="no_such_module_here")
    assert result.returncode == 1 and result.stderr.startswith("error: $SLN_METHODS names module")
    assert len(result.stderr.strip().splitlines()) == 1
