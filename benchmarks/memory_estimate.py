"""The memory guard's estimate (`sln_cli.training.memory`) against the measured peak of real training and
evaluation steps.

Each case runs in a fresh process: model, SGD with momentum, the EMA copy, two forward/backward/step iterations at
the batch, one no-grad evaluation pass at the evaluation batch. CPU: peak RSS (ru_maxrss) above the RSS before the
model existed; CUDA: torch.cuda.max_memory_allocated. Prints estimated and measured peaks and their ratio.

    python benchmarks/memory_estimate.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CASES = [  # model, side, batch, eval batch
    ("cnn", 32, 128, 256), ("wrn-28-2", 32, 128, 256), ("wrn-28-2", 64, 32, 64), ("vgg19-bn", 64, 32, 64),
    ("resnet50", 128, 16, 32),
]


def measure(model_name: str, side: int, batch: int, eval_batch: int, device_name: str) -> dict:
    import copy

    import torch

    from sln_cli.models import build_model
    from sln_cli.training.memory import estimate

    torch.set_num_threads(1)
    device = torch.device(device_name)
    images = torch.randn(batch, 3, side, side, device=device)
    eval_images = torch.randn(eval_batch, 3, side, side, device=device)
    labels = torch.zeros(batch, dtype=torch.int64, device=device)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    model = build_model(model_name, num_classes=10, in_channels=3, image_size=side).to(device)
    ema = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        ema.eval()(eval_images)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    guess = estimate(model_name, num_classes=10, channels=3, side=side).peak(batch, eval_batch)
    return {"model": model_name, "side": side, "batch": batch, "eval_batch": eval_batch,
            "estimated_mib": guess / 2**20, "measured_mib": peak / 2**20, "ratio": guess / peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", type=int)
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(measure(*CASES[args.case], args.device)))
        return
    print(f"{'model':<10} {'side':>4} {'batch':>5} {'eval':>5} {'estimated MiB':>14} {'measured MiB':>13} "
          f"{'est/meas':>9}")
    for index in range(len(CASES)):
        done = subprocess.run([sys.executable, __file__, "--case", str(index), "--device", args.device],
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout)
        print(f"{row['model']:<10} {row['side']:>4} {row['batch']:>5} {row['eval_batch']:>5} "
              f"{row['estimated_mib']:>14.0f} {row['measured_mib']:>13.0f} {row['ratio']:>9.2f}")


if __name__ == "__main__":
    main()
