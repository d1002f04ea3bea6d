"""Benchmark: a sweep with `--jobs 2` (one CPU thread per run) against the same sweep one run at a time with two
threads, side by side in one invocation. Prints both wall times and their ratio.

    python benchmarks/sweep_jobs.py [--spec quickstart-sweep] [--seeds 0,1,2] [--set optim.epochs=20] [--out DIR]

Each configuration runs the whole sweep from scratch into its own folder under --out (default: a temporary one).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(spec: str, out: Path, jobs: int, threads: int, extra: list[str]) -> float:
    command = [sys.executable, "-m", "sln_cli", "sweep", spec, "--out", str(out), "--jobs", str(jobs),
               "--cpu-threads", str(threads), *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="quickstart-sweep")
    parser.add_argument("--seeds", default=None)
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    extra = (["--seeds", args.seeds] if args.seeds else []) + [a for s in args.sets for a in ("--set", s)]
    root = args.out or Path(tempfile.mkdtemp(prefix="sln-sweep-bench-"))
    parallel = run(args.spec, root / "jobs2-threads1", 2, 1, extra)
    serial = run(args.spec, root / "jobs1-threads2", 1, 2, extra)
    print(f"{args.spec} {' '.join(extra)}: --jobs 2 --cpu-threads 1: {parallel:.0f} s; "
          f"--jobs 1 --cpu-threads 2: {serial:.0f} s; ratio (serial / parallel) {serial / parallel:.2f}; "
          f"sweeps in {root}")


if __name__ == "__main__":
    main()
