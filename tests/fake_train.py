"""A stand-in for `sln train` in scheduler tests: writes a run directory like the real one, in milliseconds.

Behaviour is steered by files in $FAKE_TRAIN_CONTROL: `<run>.fail` makes the next attempt of that run print an
error and exit 1 (the file is consumed), `<run>.locked` makes it fail as a locked run would, `<run>.stop-after-N`
makes it exit 3 after epoch N, `<run>.sleep` makes it sleep (until SIGINT). Each call appends to `calls.log`.
"""

import json
import os
import sys
import time
from pathlib import Path

from sln_cli import config as config_lib
from sln_cli import presets


def main(argv):
    args = dict(zip(argv[::2], argv[1::2], strict=False))
    sets = [v for k, v in zip(argv[::2], argv[1::2], strict=False) if k == "--set"]
    control = Path(os.environ["FAKE_TRAIN_CONTROL"])
    resume = "--resume" in args
    run_dir = Path(args["--resume"] if resume else args["--out"])
    with open(control / "calls.log", "a") as f:
        f.write(f"{run_dir.name} {'resume' if resume else 'fresh'}\n")
    if (control / f"{run_dir.name}.fail").exists():
        (control / f"{run_dir.name}.fail").unlink()
        print("error: boom", flush=True)
        return 1
    if (control / f"{run_dir.name}.locked").exists():
        print(f"error: run directory {run_dir} is in use by process 1 on host h", flush=True)
        return 1
    if resume:
        config = config_lib.load_yaml(run_dir / "config.yaml")
    else:
        run_dir.mkdir(parents=True)
        resolved = config_lib.resolve(presets.load(args["--preset"]), sets,
                                      {"run.out": str(run_dir), "run.device": args["--device"]})
        (run_dir / "config.yaml").write_text(config_lib.dump(resolved))
        config = config_lib.to_dict(resolved)
    if (control / f"{run_dir.name}.sleep").exists():
        try:  # Python's own SIGINT handling, as the real trainer has it
            time.sleep(60)
        except KeyboardInterrupt:
            print("error: interrupted", flush=True)
            return 130
    done = sum(1 for _ in open(run_dir / "metrics.jsonl")) if (run_dir / "metrics.jsonl").exists() else 0
    stop = next((int(p.name.rsplit("-", 1)[1]) for p in control.glob(f"{run_dir.name}.stop-after-*")), None)
    for epoch in range(done + 1, config["optim"]["epochs"] + 1):
        row = {"epoch": epoch, "test_acc": 0.5 + 0.01 * epoch + 0.001 * config["run"]["seed"],
               "test_acc_ema": 0.6, "test_loss": 1.0, "test_loss_ema": 0.9, "memorized": 0.1}
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if stop == epoch:
            (control / f"{run_dir.name}.stop-after-{stop}").unlink()
            return 3
    (run_dir / "summary.json").write_text(json.dumps({"epochs": config["optim"]["epochs"], "last": row}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
