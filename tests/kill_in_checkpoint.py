"""`sln` that SIGKILLs itself inside the write of checkpoint.pt for one epoch (test-side only).

Usage: `python tests/kill_in_checkpoint.py EPOCH ARGS...`: the temporary file of that epoch's checkpoint is
created and partly written, then the process is killed before the rename, exactly where a kill inside the write
lands (a timed kill from outside can miss a write that takes a millisecond on a fast, idle machine).
"""

import os
import signal
import sys
from pathlib import Path
from typing import Any

import sln_cli.rundir.runs as runs
from sln_cli.cli import main


def _killing(save_torch, epoch: int):
    def save(path: Path, obj: Any) -> None:
        if Path(path).name == runs.CHECKPOINT and isinstance(obj, dict) and obj.get("epoch") == epoch:
            with runs.atomic_write(path, "wb") as f:
                f.write(b"a checkpoint cut off by SIGKILL")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        save_torch(path, obj)

    return save


if __name__ == "__main__":
    runs.save_torch = _killing(runs.save_torch, int(sys.argv[1]))
    sys.argv = ["sln", *sys.argv[2:]]
    main()
