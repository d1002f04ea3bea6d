"""`sln train` under torchrun, with every rank saving its weights and targets after each epoch (test-side only).

Usage: `python -m torch.distributed.run ... tests/torchrun_dump.py DUMP_DIR train ARGS...`; after the run
DUMP_DIR/rank-R.pt holds rank R's final network, EMA, targets and method tensors, so a test can check the
replicas agree.
"""

import os
import sys
from pathlib import Path

import torch

import sln_cli.training.train as train_module
from sln_cli.cli import main


def _dumping(run_epoch, folder: Path):
    def run_and_dump(state, *args, **kwargs):
        row = run_epoch(state, *args, **kwargs)
        method = {key: value for key, value in state.method.state_dict().items() if isinstance(value, torch.Tensor)}
        weights = {"model": state.model.state_dict(), "ema": state.ema.state_dict(), "targets": state.targets,
                   "method": method}  # per-sample state too: SOP's u and v, DivideMix's losses and division
        torch.save(weights, folder / f"rank-{os.environ['RANK']}.pt")
        return row

    return run_and_dump


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    train_module.run_epoch = _dumping(train_module.run_epoch, folder)
    sys.argv = ["sln", *sys.argv[2:]]
    main()
