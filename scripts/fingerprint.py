"""Fingerprint training: the quick start and a 3-epoch run of every method, as hashes of metrics and weights.

A behaviour-preserving change (a refactor) must print the same JSON before and after:

    python scripts/fingerprint.py --out /tmp/fp-before.json     # on the old commit
    python scripts/fingerprint.py --out /tmp/fp-after.json      # on the new one
    diff /tmp/fp-before.json /tmp/fp-after.json                 # nothing: bit-identical

Timing columns of metrics.jsonl (`*_seconds`, `*_per_second`) are left out; every other number is hashed exactly,
and so is every tensor of checkpoint.pt (weights, EMA, optimiser, method state, RNG) and final.pt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

TIMING = ("_seconds", "_per_second")  # key endings of timings: left out
QUICK = ["--preset", "quickstart"]
SHORT = [*QUICK, "--set", "optim.epochs=3"]
METHODS = ["sln", "ce", "gce", "sce", "nce-rce", "ls", "bootstrap-soft", "bootstrap-hard", "forward", "elr",
           "coteaching", "sop", "sop-plus", "dividemix"]
RUNS: dict[str, list[str]] = {
    "quickstart-ce": [*QUICK, "--sigma", "0"],
    "quickstart-sln": QUICK,
    **{f"3ep-{name}": [*SHORT, "--method", name] for name in METHODS},
    "3ep-sln-mo-lc": [*SHORT, "--set", "sln.correction=2"],
    "3ep-sam": [*SHORT, "--set", "method.sam=true"],
    "3ep-dividemix-sln": [*SHORT, "--method", "dividemix", "--sigma", "0.5", "--set", "method.warmup_epochs=1"],
    "3ep-noisy-val": [*SHORT, "--set", "data.noisy_val=100"],
}


def tensors(value: object, prefix: str = "") -> dict[str, str]:
    """sha256 of every tensor (and the repr of every other leaf) in a nested checkpoint, by path."""
    if isinstance(value, torch.Tensor):
        return {prefix: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]}
    if isinstance(value, dict):  # timings (best.pt's metrics row has them) are not behaviour
        return {k: v for key, item in value.items() if not str(key).endswith(TIMING)
                for k, v in tensors(item, f"{prefix}/{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in tensors(item, f"{prefix}/{i}").items()}
    return {prefix: repr(value)}


def fingerprint(run: Path) -> dict[str, object]:
    rows = [{k: v for k, v in json.loads(line).items() if not k.endswith(TIMING)}
            for line in (run / "metrics.jsonl").read_text().splitlines()]
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    checkpoint.pop("metrics", None)  # the same rows as metrics.jsonl, timings included
    final = torch.load(run / "final.pt", weights_only=True)
    digest = hashlib.sha256(json.dumps(sorted(tensors(checkpoint).items()) + sorted(tensors(final).items()))
                            .encode()).hexdigest()[:16]
    return {"last": rows[-1], "metrics": hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16],
            "tensors": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="run only these names")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in RUNS.items():
            if args.only and name not in args.only:
                continue
            run = Path(tmp) / name
            subprocess.run([sys.executable, "-m", "sln_cli", "train", *argv, "--out", str(run)], check=True,
                           stdout=subprocess.DEVNULL)
            result[name] = fingerprint(run)
            print(name, result[name]["tensors"], flush=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
