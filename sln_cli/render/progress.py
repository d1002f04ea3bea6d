"""What a training run shows: rich progress bars on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

SAMPLE_SECONDS = 1.0  # how often the live loss is read back from the device (each read is a host sync)


def progress_bar(console: Console | None = None, *, remaining: bool = True, info: bool = False,
                 transient: bool = False, disable: bool = False) -> Progress:
    """The one kind of rich bar `sln` shows: description, bar, done/total, time elapsed and (`remaining`) left;
    `info` adds a column for a task's `info` field (live metrics)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=console, transient=transient, disable=disable)


class TrainProgress:
    """Epoch and step bars with live metrics; plain log lines when stdout is not a terminal; or nothing."""

    def __init__(self, epochs: int, *, quiet: bool = False, console: Console | None = None) -> None:
        self.console = console or Console()
        self.quiet = quiet
        self._last_sample = 0.0
        self._progress: Progress | None = None
        if not quiet and self.console.is_terminal:
            self._progress = progress_bar(self.console, info=True)
            self._epochs = self._progress.add_task("epochs", total=epochs, info="")
            self._steps = self._progress.add_task("steps", total=1, info="")

    def __enter__(self) -> TrainProgress:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress:
            self._progress.stop()

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, highlight=False)

    def start(self, first_epoch: int) -> None:
        if self._progress:
            self._progress.update(self._epochs, completed=first_epoch - 1)

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self._progress:
            self._progress.reset(self._steps, total=steps, description=f"epoch {epoch}", info="")

    def step(self, images: int, read_loss: Callable[[], float]) -> None:
        """Advance the step bar; read the live loss (a device sync) at most once per SAMPLE_SECONDS."""
        if not self._progress:
            return
        self._progress.advance(self._steps)
        now = time.perf_counter()
        if now - self._last_sample >= SAMPLE_SECONDS:
            self._last_sample = now
            rate = self._progress.tasks[self._steps].speed or 0.0
            self._progress.update(self._steps, info=f"loss {read_loss():.3f}  {rate * images:,.0f} img/s")

    def end_epoch(self, row: dict[str, Any]) -> None:
        line = format_row(row)
        if self._progress:
            self._progress.advance(self._epochs)
            self._progress.update(self._epochs, info=line)
        elif not self.quiet:
            print(f"epoch {row['epoch']:>4}  {line}", flush=True)


def format_row(row: dict[str, Any]) -> str:
    parts = [f"loss {row['train_loss']:.3f}", f"test {row['test_acc']:.2%}", f"ema {row['test_acc_ema']:.2%}"]
    if row.get("val_acc_ema") is not None:
        parts.append(f"val-ema {row['val_acc_ema']:.2%}")
    if row.get("noisy_val_acc_ema") is not None:
        parts.append(f"noisy-val-ema {row['noisy_val_acc_ema']:.2%}")
    if row.get("memorized") is not None:
        parts.append(f"memorized {row['memorized']:.2%}")
    parts.append(f"{row['images_per_second']:,.0f} img/s")
    return "  ".join(parts)


def summary_table(summary: dict[str, Any]) -> Table:
    """The final table: last epoch and (when there is a validation set) the epoch it selects."""
    table = Table(title=f"run {summary['run_dir']}")
    table.add_column("weights")
    table.add_column("selection")
    table.add_column("epoch", justify="right")
    table.add_column("test acc", justify="right")
    table.add_column("test loss", justify="right")
    names = ("SLN (raw)", "SLN-MO (EMA)") if summary.get("sigma", 1.0) > 0 else ("CE (raw)", "CE + EMA")
    if (named := summary.get("method_names")) and summary.get("method") != "sln":
        names = (f"{named['raw']} (raw)", f"{named['ema']} (EMA)")
    for name, key in zip(names, ("", "_ema"), strict=True):
        last = summary["last"]
        table.add_row(name, "last epoch", str(last["epoch"]), f"{last['test_acc' + key]:.2%}",
                      f"{last['test_loss' + key]:.4f}")
        best = summary.get("best")
        if best is not None:
            table.add_row(name, f"best val ({summary['selection']})", str(best["epoch"]),
                          f"{best['test_acc' + key]:.2%}", f"{best['test_loss' + key]:.4f}")
    return table

