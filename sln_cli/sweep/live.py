"""What a running sweep shows: a live table (one row per run) on a terminal, plain event lines otherwise."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sln_cli.rundir import runs
from sln_cli.sweep.spec import Cell

REFRESH_SECONDS = 1.0  # how often running runs' metrics files are read for the table
PLAIN_EVERY_SECONDS = 60.0  # without a terminal: a progress line this often, besides the events


class SweepDisplay:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.terminal = self.console.is_terminal
        self.cells: list[Cell] = []
        self.state: dict[str, str] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.eta: dict[str, float | None] = {}
        self._live: Live | None = None
        self._last_refresh = 0.0
        self._last_plain = time.monotonic()
        self._began: dict[str, tuple[float, int]] = {}  # run -> (when it was started, epochs it had then)

    @contextlib.contextmanager
    def live(self, cells: list[Cell], sweep_dir: Path) -> Iterator[None]:
        self.cells = cells
        for cell in cells:
            rows = runs.read_metrics(cell.run_dir) if (cell.run_dir / runs.CONFIG).is_file() else []
            self.last[cell.name] = rows[-1] if rows else {}
            self.state[cell.name] = "waiting"
        self.console.print(f"sweep {sweep_dir}: {len(cells)} runs; logs in {sweep_dir / 'logs'}",
                           markup=False, highlight=False)
        if self.terminal:
            self._live = Live(self._table(), console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        try:
            yield
        finally:
            self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()
            self._live = None

    def started(self, cell: Cell, device: str, mode: str) -> None:
        self.state[cell.name] = f"running ({mode}, {device})"
        self.last[cell.name] = _last_row(cell)
        self._began[cell.name] = (time.monotonic(), self.last[cell.name].get("epoch", 0))
        self._event(f"start {cell.name} on {device} ({mode})")

    def finished(self, cell: Cell, outcome: str, seconds: float, message: str) -> None:
        self.state[cell.name] = outcome
        self.last[cell.name] = _last_row(cell)
        self.eta[cell.name] = None
        row = self.last[cell.name]
        result = f": test {row['test_acc']:.1%}, EMA {row['test_acc_ema']:.1%}" if "test_acc" in row else ""
        self._event(f"{outcome} {cell.name} after {seconds:.0f} s{result}{'  ' + message if message else ''}")

    def refresh(self, running: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last_refresh < REFRESH_SECONDS:
            return
        self._last_refresh = now
        for name, child in running.items():
            self.last[name] = _last_row(child.cell)
            self.eta[name] = self._eta(name, child.cell.epochs)
        if self._live is not None:
            self._live.update(self._table())
        elif now - self._last_plain >= PLAIN_EVERY_SECONDS:
            self._last_plain = now
            parts = [f"{name} {self.last[name].get('epoch', 0)}/{child.cell.epochs}" for name, child in running.items()]
            self._event("running: " + ", ".join(parts))

    def _eta(self, name: str, epochs: int) -> float | None:
        """Seconds left at the pace of this launch (training and evaluation together)."""
        began, first = self._began.get(name, (time.monotonic(), 0))
        done = self.last[name].get("epoch", 0)
        return None if done <= first else (time.monotonic() - began) / (done - first) * (epochs - done)

    def _event(self, line: str) -> None:
        if self._live is None:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {line}", markup=False, highlight=False)

    def _table(self) -> Table:
        table = Table(title="sweep")
        for column in ("run", "status", "epoch", "test raw", "test EMA", "ETA"):
            table.add_column(column, justify="left" if column in ("run", "status") else "right")
        for cell in self.cells:
            row = self.last.get(cell.name, {})
            eta = self.eta.get(cell.name)
            table.add_row(cell.name, self.state.get(cell.name, ""), f"{row.get('epoch', 0)}/{cell.epochs}",
                          _pct(row.get("test_acc")), _pct(row.get("test_acc_ema")),
                          "" if eta is None else f"{eta / 60:.1f} min")
        return table


def _last_row(cell: Cell) -> dict[str, Any]:
    try:
        rows = runs.read_metrics(cell.run_dir)
    except Exception:  # a file being written or damaged: the table shows what it had  # noqa: BLE001
        return {}
    return rows[-1] if rows else {}


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"
