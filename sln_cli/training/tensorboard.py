"""TensorBoard event files for `sln train --tensorboard` (config key `run.tensorboard`), in RUN/tensorboard/.

Every per-epoch metric of metrics.jsonl becomes a scalar at step = epoch under a tag derived from its key
(`metric_tag`); at the end of training, the reliability diagram of the test split (raw and EMA) and, with true
labels, the memorisation curve are added as images. A resumed run rebuilds its event files from metrics.jsonl
(`TensorBoardLogger`), so every tag holds each step exactly once. Written on rank 0 only, through
`torch.utils.tensorboard` (the optional extra `sln-cli[tensorboard]`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from sln_cli.errors import SlnError
from sln_cli.rundir import runs

LOG_DIR = "tensorboard"
INSTALL = "pip install 'sln-cli[tensorboard]'"
GROUPS = (("train_", "train"), ("test_", "test"), ("val_", "val"), ("noisy_val_", "noisy_val"))
TAGS = {"lr": "schedule/lr", "sigma": "schedule/sigma", "memorized": "noise/memorized",
        "corrected_acc": "noise/corrected_acc", "epoch_seconds": "speed/epoch_seconds",
        "images_per_second": "speed/images_per_second", "wall_seconds": "speed/wall_seconds",
        "devices": "speed/devices"}
RELIABILITY_TAG, MEMORISATION_TAG = "final/reliability_test", "final/memorisation"


def require_tensorboard() -> None:
    """A one-line SlnError saying how to install the tensorboard package when it is missing."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package itself)
    except ImportError:
        raise SlnError(f"--tensorboard (run.tensorboard) needs the optional tensorboard package: {INSTALL}") from None


def metric_tag(key: str) -> str | None:
    """The stable tag of a metrics.jsonl key: `test_acc_ema` -> `test/acc_ema`, `lr` -> `schedule/lr`; None for
    `epoch` (it is the step). Keys added later get `other/<key>`, so no key is ever dropped."""
    if key == "epoch":
        return None
    for prefix, group in GROUPS:
        if key.startswith(prefix):
            return f"{group}/{key[len(prefix):]}"
    return TAGS.get(key, f"other/{key}")


class TensorBoardLogger:
    """Scalars per epoch and the final images; events flushed after every epoch, so a killed run keeps them.

    Exactly once: before its first epoch, a process rebuilds the event files from metrics.jsonl (which `--resume`
    has just made agree with the checkpoint): the scalars of every epoch before this one, and the images logged
    at those epochs, are written anew and the old files removed. Whatever a kill left (an epoch logged but not
    checkpointed, or checkpointed but not logged) is thus repaired, and the raw records never hold a (tag, step)
    twice."""

    def __init__(self, run_dir: Path, *, first_epoch: int) -> None:
        require_tensorboard()
        self.run_dir, self.first_epoch, self.logged = Path(run_dir), first_epoch, False
        self.writer: Any = None  # opened at the first epoch this process logs (a finished run adds nothing)

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            self._rebuild(before=row["epoch"])
        self._scalars(row)
        self.writer.flush()
        self.logged = True

    def _rebuild(self, *, before: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.writer import FileWriter

        log_dir = self.run_dir / LOG_DIR
        old = sorted(p for p in log_dir.glob("events.out.tfevents.*") if p.is_file() and not p.is_symlink())
        images = [event for path in old for event in _image_events(path, before)]
        rows = [row for row in runs.read_metrics(self.run_dir) if row["epoch"] < before]
        for path in old:  # a kill from here on leaves steps missing, which the next resume rebuilds
            path.unlink()
        if rows or images:
            rebuilt = FileWriter(str(log_dir))
            for event in images:
                rebuilt.add_event(event)
            for row in rows:
                for tag, value in _scalar_values(row):
                    rebuilt.add_summary(_scalar_summary(tag, value), global_step=row["epoch"])
            rebuilt.flush()
            rebuilt.close()
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def _scalars(self, row: dict[str, Any]) -> None:
        for tag, value in _scalar_values(row):
            self.writer.add_scalar(tag, value, global_step=row["epoch"])

    def finish(self, models: dict[str, nn.Module], test_images: Any, test_labels: Tensor, *, epoch: int,
               batch_size: int) -> None:
        """The final images (only when this process trained an epoch, so a re-resumed finished run adds none)."""
        if self.logged:
            from sln_cli.analyze.calibration import reliability_bins
            from sln_cli.render.plots import memorisation_figure, reliability_figure
            from sln_cli.training.checkpoints import predict

            labels = test_labels.cpu().numpy()
            diagrams = {name: reliability_bins(predict(model, test_images, batch_size=batch_size), labels)
                        for name, model in models.items()}
            self._image(RELIABILITY_TAG, reliability_figure(diagrams, title=f"Test split, epoch {epoch}"), epoch)
            rows = [row for row in runs.read_metrics(self.run_dir) if row.get("memorized") is not None]
            if rows:
                curve = {"raw network, during training": ([row["epoch"] for row in rows],
                                                          [row["memorized"] for row in rows])}
                self._image(MEMORISATION_TAG, memorisation_figure(curve), epoch)
        self.close()

    def _image(self, tag: str, figure: Any, epoch: int) -> None:
        from PIL import Image

        from sln_cli.render.plots import png_bytes

        with Image.open(io.BytesIO(png_bytes(figure))) as image:
            pixels = np.asarray(image.convert("RGB"))  # H×W×3 uint8
        self.writer.add_image(tag, pixels, global_step=epoch, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def _scalar_values(row: dict[str, Any]) -> list[tuple[str, float]]:
    """(tag, value) of every finite number of a metrics row (None, booleans and NaN are not scalars)."""
    return [(tag, value) for key, value in row.items()
            if (tag := metric_tag(key)) is not None and isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value)]


def _scalar_summary(tag: str, value: float) -> Any:
    from torch.utils.tensorboard.summary import scalar

    return scalar(tag, value)


def _image_events(path: Path, before: int) -> list[Any]:
    """The image events of an event file at steps before `before` (the final images of an earlier end of
    training, kept when a finished run is extended); an unreadable file gives none."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    kept = []
    try:
        for record in RawEventFileLoader(str(path)).Load():  # as written (EventFileLoader converts images)
            event = Event.FromString(record)
            if event.step < before and event.HasField("summary") \
                    and event.summary.value and all(v.HasField("image") for v in event.summary.value):
                kept.append(event)
    except Exception:  # noqa: BLE001  (a file cut off by a kill: its complete records were read)
        pass
    return kept


class NoLogger:
    """What the training loop holds when TensorBoard is off (and on ranks other than 0): every call does nothing."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, *args: Any, **kwargs: Any) -> None:
        pass


def open_logger(run_dir: Path, *, enabled: bool, first_epoch: int) -> TensorBoardLogger | NoLogger:
    return TensorBoardLogger(run_dir, first_epoch=first_epoch) if enabled else NoLogger()
