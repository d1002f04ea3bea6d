"""Benchmark: what `data.noisy_val` costs per epoch. Times, side by side in one invocation on one run's state, the
training pass over the remaining samples, the test pass, and the noisy-validation pass (raw and EMA networks).

    python benchmarks/noisy_val_cost.py [--preset quickstart] [--noisy-val 0.1] [--repeats 5] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from sln_cli import config as config_lib
from sln_cli import presets
from sln_cli.labels.trainset import build_trainset
from sln_cli.render.progress import TrainProgress
from sln_cli.training.devices import autocast
from sln_cli.training.epoch import evaluate, evaluate_noisy_val, train_pass
from sln_cli.training.state import initial_state, place_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--noisy-val", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    config = config_lib.resolve(presets.load(args.preset), [f"data.noisy_val={args.noisy_val}", *args.sets])
    device = torch.device("cuda" if config.run.device == "auto" and torch.cuda.is_available() else
                          "cpu" if config.run.device == "auto" else config.run.device)
    if config.run.cpu_threads:
        torch.set_num_threads(config.run.cpu_threads)
    trainset = build_trainset(config.data, config.noise)
    splits, state = place_splits(trainset, config, device), initial_state(trainset, config, device)
    models, forward = [state.model, state.ema.module], autocast(device, config.run.precision)
    batch = config.run.eval_batch_size

    def timed(work) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            work()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
        return best

    progress = TrainProgress(config.optim.epochs, quiet=True)
    seconds = {
        "train pass": timed(lambda: train_pass(state, splits.train, config, config.sln.sigma, 1, device, progress)),
        "test pass (raw + EMA)": timed(lambda: evaluate(models, splits.test, splits.test_labels, batch_size=batch,
                                                          forward=forward)),
        "noisy-val pass (raw + EMA)": timed(lambda: evaluate_noisy_val(models, splits, batch_size=batch,
                                                                       forward=forward)),
    }
    print(f"{config.data.dataset}, {config.model.name} on {device}: {len(splits.train)} trained, "
          f"{len(splits.noisy_val)} noisy-val, {len(splits.test)} test samples; best of {args.repeats}")
    for name, value in seconds.items():
        print(f"  {name:28s} {value * 1000:8.1f} ms")
    share = seconds["noisy-val pass (raw + EMA)"] / seconds["train pass"]
    print(f"  noisy-val pass / train pass: {share:.1%} per epoch")


if __name__ == "__main__":
    main()
