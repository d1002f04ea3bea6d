"""The steps of `scripts/gpu-check.sh` and its one JSON summary (see that script for how to run it).

Steps: `sln doctor --json`, `pytest -m gpu`, `sln bench --json` (reference loop, sln fp32, the fastest contender,
the ceiling), the images/s of 1, 2 and 4 concurrent quick CIFAR runs (`sln sweep --per-device N` on a GPU,
`--jobs N` on the CPU), and the epochs/s of every CIFAR preset on synthetic CIFAR data (the machine needs no
download: images are random, so accuracies mean nothing; the speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SLN = [sys.executable, "-m", "sln_cli"]
CONCURRENCY = (1, 2, 4)
FULL_EPOCH = {"cifar10": 50_000, "cifar100": 50_000}  # training images of one real epoch (epochs/s from images/s)
NEEDS_FILES = {"cifar10n-worst", "cifar10n-aggre", "cifar100n"}  # CIFAR-N human label files: not on the machine
# --quick times one preset of each special path (dependent's probs, open-set's source, LC, CIFAR-100) only
QUICK_PRESETS = {"cifar10-sym", "cifar10-openset-lc", "cifar100-dependent"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a test of the script itself")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON summary")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--budget", type=float, default=510.0,
                        help="seconds for everything (default 510: under 9 minutes); a step past it is skipped")
    args = parser.parse_args()
    global DEADLINE
    DEADLINE = time.monotonic() + args.budget
    work = args.work or Path(tempfile.mkdtemp(prefix="sln-gpu-check-"))
    started = time.perf_counter()
    summary: dict[str, Any] = {"device": args.device, "quick": args.quick, "work": str(work), "steps": {}}
    steps = summary["steps"]
    steps["doctor"] = _doctor(args.device, args.quick)
    steps["pytest_gpu"] = _pytest(args.quick)
    steps["bench"] = _bench(args.device, args.quick)
    data = _synthetic_data(work / "data", args.quick)
    steps["concurrent_runs"] = _concurrent(args.device, args.quick, data, work / "concurrent")
    steps["presets"] = _presets(args.device, args.quick, data, work / "presets")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["failed"] = sorted(name for name, step in steps.items() if step.get("status") == "failed")
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(_short(summary), indent=2))
    print(f"summary written to {args.out}", file=sys.stderr)
    return 1 if summary["failed"] else 0


DEADLINE = float("inf")  # time.monotonic() by which every step must have ended (--budget)


def _run(command: list[str], timeout: float) -> tuple[int, str, str, float]:
    """(exit code, stdout, last stderr line, seconds); 124 on a timeout (its own, or the budget's)."""
    started = time.perf_counter()
    timeout = min(timeout, DEADLINE - time.monotonic())
    if timeout <= 1:
        return 124, "", "skipped: the --budget was spent", 0.0
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout:.0f} s", time.perf_counter() - started
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, done.stdout, lines[-1] if lines else "", time.perf_counter() - started


def _step(code: int, seconds: float, error: str, **fields: Any) -> dict[str, Any]:
    status = "passed" if code == 0 else "failed"
    return {"status": status, "exit_code": code, "seconds": round(seconds, 1), **({"error": error} if code else {}),
            **fields}


def _doctor(device: str, quick: bool) -> dict[str, Any]:
    code, out, error, seconds = _run([*SLN, "doctor", "--device", device, "--json"], 300 if quick else 150)
    try:
        report = json.loads(out)
    except ValueError:
        return _step(code or 1, seconds, error or "no JSON from sln doctor")
    checks = report.get("checks", [])
    counts = {s: sum(c.get("status") == s for c in checks) for s in ("pass", "fail", "skip")}
    return _step(code, seconds, error, counts=counts, checks={c.get("name"): c.get("status") for c in checks},
                 machine={k: v for k, v in report.items() if k != "checks"})


def _pytest(quick: bool) -> dict[str, Any]:
    if quick:  # the gpu tests skip without CUDA; collecting the suite would only cost time here
        return {"status": "skipped", "reason": "--quick"}
    code, out, error, seconds = _run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
                                     150)
    tail = [line for line in out.splitlines() if line.strip()]
    return _step(0 if code in (0, 5) else code, seconds, error or (tail[-1] if tail else ""),
                 result=tail[-1] if tail else "")  # 5: no test collected


def _bench(device: str, quick: bool) -> dict[str, Any]:
    command = [*SLN, "bench", "--device", device, "--json"] + (["--steps", "1", "--rounds", "1"] if quick else [])
    code, out, error, seconds = _run(command, 300 if quick else 180)
    try:
        result = json.loads(out)
    except ValueError:
        return _step(code or 1, seconds, error or "no JSON from sln bench")
    return _step(code, seconds, error, result=result)


def _synthetic_data(folder: Path, quick: bool) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.synthetic import write_cifar10, write_cifar100

    n_train = 64 if quick else 5000
    write_cifar10(folder, n_train=n_train, n_test=32 if quick else 1000)
    write_cifar100(folder, n_train=max(n_train, 100), n_test=32 if quick else 1000)
    return folder


def _quick_run(quick: bool) -> list[str]:
    """--set arguments of a quick CIFAR run: 2 epochs (the first warms up), small where --quick asks."""
    sets = ["optim.epochs=2", "run.checkpoint_every=1000"]
    return sets + (["model.name=cnn", "run.eval_batch_size=64", "run.cpu_threads=1"] if quick else [])


def _concurrent(device: str, quick: bool, data: Path, out: Path) -> dict[str, Any]:
    """Images/s of N quick runs of cifar10-sym at once on one device: the training throughput of them all."""
    results = {}
    for count in CONCURRENCY:
        spec = out / f"concurrent{count}.yaml"
        spec.parent.mkdir(parents=True, exist_ok=True)
        sets = {key: yaml.safe_load(value) for key, value in (s.split("=", 1) for s in _quick_run(quick))}
        sets["data.data_dir"] = str(data)
        spec.write_text(json.dumps({"presets": ["cifar10-sym"], "methods": {"SLN": {}},
                                    "seeds": list(range(count)), "set": sets}), encoding="utf-8")
        devices = ["--devices", "cpu", "--jobs", str(count)] if device == "cpu" else \
            ["--devices", device, "--per-device", str(count)]
        code, _, error, seconds = _run([*SLN, "sweep", str(spec), "--out", str(out / f"n{count}"), *devices],
                                       180 if quick else 100)
        speeds = [_last_row(run).get("images_per_second") for run in sorted((out / f"n{count}").glob("*-seed*"))]
        speeds = [s for s in speeds if isinstance(s, int | float)]
        results[str(count)] = _step(code, seconds, error, runs=count,
                                    images_per_second_total=round(sum(speeds), 1) if speeds else None,
                                    images_per_second_each=[round(s, 1) for s in speeds])
    failed = any(r["status"] == "failed" for r in results.values())
    return {"status": "failed" if failed else "passed", "by_concurrent_runs": results}


def _presets(device: str, quick: bool, data: Path, out: Path) -> dict[str, Any]:
    """Epochs/s (of a full 50,000-image epoch, from the last epoch's images/s) of every shipped CIFAR preset."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from sln_cli import presets

    names = sorted(name for name in presets.available() if name.startswith("cifar"))
    probs = out / "probs.npy"  # dependent noise reads an averaged softmax: a random one here
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in names:
        if name in NEEDS_FILES:
            results[name] = {"status": "skipped", "reason": "needs the CIFAR-N human label file"}
            continue
        if quick and name not in QUICK_PRESETS:
            results[name] = {"status": "skipped", "reason": "--quick"}
            continue
        dataset = "cifar100" if name.startswith("cifar100") else "cifar10"
        classes = 100 if dataset == "cifar100" else 10
        sets = [*_quick_run(quick), f"data.data_dir={data}", f"run.device={device}", "run.record_probs=false"]
        if "dependent" in name:
            n_train = 64 if quick else 5000
            n_train = max(n_train, 100) if dataset == "cifar100" else n_train
            rng = np.random.default_rng(0)
            np.save(probs, rng.dirichlet(np.ones(classes), size=n_train).astype(np.float32))
            sets.append(f"noise.probs={probs}")
        if name.endswith("-lc"):
            sets.append("sln.correction=1")  # label correction in the second epoch: its cost is measured
        if "openset" in name:
            sets.append(f"noise.source_data_dir={data}")
        command = [*SLN, "train", "--preset", name, "--out", str(out / name), "--quiet", "--overwrite"]
        command += [arg for s in sets for arg in ("--set", s)]
        code, _, error, seconds = _run(command, 120 if quick else 45)
        row = _last_row(out / name)
        speed = row.get("images_per_second")
        results[name] = _step(code, seconds, error, images_per_second=round(speed, 1) if speed else None,
                              epochs_per_second=round(speed / FULL_EPOCH[dataset], 4) if speed else None)
    failed = any(r["status"] == "failed" for r in results.values())
    return {"status": "failed" if failed else "passed", "by_preset": results}


def _last_row(run_dir: Path) -> dict[str, Any]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


BENCH_FIGURES = ("reference_ips", "sln_fp32_ips", "sln_fast_ips", "ceiling_fast_ips", "fast_precision")


def _short(summary: dict[str, Any]) -> dict[str, Any]:
    """What the console shows: the summary without the bench's and doctor's full details (the bench's images/s of
    the official loop, sln fp32, sln's fastest and the ceiling are kept)."""
    steps = {}
    for name, step in summary["steps"].items():
        steps[name] = {k: v for k, v in step.items() if k not in ("result", "machine", "checks")}
        if isinstance(step.get("result"), dict):
            steps[name]["images_per_second"] = {k: step["result"].get(k) for k in BENCH_FIGURES}
    return {**summary, "steps": steps}


if __name__ == "__main__":
    sys.exit(main())
