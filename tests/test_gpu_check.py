"""`scripts/gpu-check.sh --device cpu --quick`: the GPU session's one command, run on the CPU as a test of itself.
Every step runs and lands in the one JSON summary (minutes on a shared CPU: slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_and_writes_its_summary(tmp_path):
    out = tmp_path / "gpu-check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), "--device", "cpu", "--quick", "--out", str(out),
                           "--work", str(tmp_path / "work"), "--budget", "1500"],
                          capture_output=True, text=True, env=env, timeout=1800)
    summary = json.loads(out.read_text())
    assert done.returncode == 0, (summary["failed"], done.stderr[-2000:])
    steps = summary["steps"]
    assert set(steps) == {"doctor", "pytest_gpu", "bench", "concurrent_runs", "presets"}
    assert steps["doctor"]["status"] == "passed" and steps["doctor"]["counts"]["fail"] == 0
    assert steps["pytest_gpu"] == {"status": "skipped", "reason": "--quick"}
    assert steps["bench"]["status"] == "passed" and steps["bench"]["result"]
    concurrent = steps["concurrent_runs"]["by_concurrent_runs"]
    assert set(concurrent) == {"1", "2", "4"}
    for count, result in concurrent.items():
        assert len(result["images_per_second_each"]) == int(count) and result["images_per_second_total"] > 0
    presets = steps["presets"]["by_preset"]
    assert presets["cifar10n-worst"]["status"] == "skipped"
    for name in ("cifar10-sym", "cifar10-openset-lc", "cifar100-dependent"):
        assert presets[name]["status"] == "passed" and presets[name]["epochs_per_second"] > 0, name
    assert json.loads(done.stdout)["failed"] == []  # the console shows the same summary, shortened
