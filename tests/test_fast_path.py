"""The fast paths change nothing but speed: compiled and channels-last training give the plain metrics."""

import math

import pytest
import torch
from typer.testing import CliRunner

from sln_cli.cli import app
from tests.conftest import untimed_metrics

runner = CliRunner()
# 200 samples at batch 64: three full batches and a partial one, so the eager fallback of a compiled
# step is exercised every epoch.
BASE = ["train", "--preset", "quickstart", "--train-limit", "200", "--test-limit", "100", "--epochs", "2",
        "--set", "optim.batch_size=64", "--quiet", "--precision", "fp32", "--device", "cpu"]


def _metrics(tmp_path, name, *args):
    result = runner.invoke(app, [*BASE, "--out", str(tmp_path / name), *args])
    assert result.exit_code == 0, result.output
    return untimed_metrics(tmp_path / name)


def _assert_close(fast, plain, rel=1e-4):
    """Same keys; numbers equal to `rel` (kernels may round differently); counts and epochs exact."""
    assert len(fast) == len(plain)
    for a, b in zip(fast, plain, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if a[key] is None or isinstance(a[key], int):
                assert a[key] == b[key], key
            else:
                assert math.isclose(a[key], b[key], rel_tol=rel, abs_tol=1e-6), (key, a[key], b[key])


def test_channels_last_gives_the_plain_metrics(tmp_path):
    plain = _metrics(tmp_path, "plain", "--set", "run.channels_last=false")
    fast = _metrics(tmp_path, "nhwc", "--set", "run.channels_last=true")
    _assert_close(fast, plain)


@pytest.mark.slow
def test_a_compiled_step_gives_the_plain_metrics(tmp_path):
    plain = _metrics(tmp_path, "plain", "--set", "model.name=mlp")
    fast = _metrics(tmp_path, "compiled", "--set", "model.name=mlp", "--set", "run.compile=compile")
    _assert_close(fast, plain)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_cpu(tmp_path, precision):
    """bf16 autocast and fp16 with its gradient scaler run their logic on CPU tensors too."""
    rows = _metrics(tmp_path, precision, "--set", "model.name=cnn", "--precision", precision)
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss_ema"]) for r in rows)
    checkpoint = torch.load(tmp_path / precision / "checkpoint.pt", weights_only=True)
    scaler = checkpoint["scaler"]
    if precision == "fp16":
        assert scaler["scale"] > 0  # the scaler was live and is saved for resume
    else:
        assert scaler == {}  # a disabled scaler saves nothing
