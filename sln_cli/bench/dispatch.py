"""`sln bench`'s choice of benchmark: the training contenders (default), every method's images/s (`methods`), or
the Clothing1M input pipelines (`pipeline`); and the renderer of each result. Library callers get the same checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sln_cli.errors import SlnError

PIPELINES = ("clothing1m",)


@dataclass(frozen=True)
class BenchRequest:
    device: str = "auto"
    data_dir: Path | None = None  # a CIFAR-10 folder; synthetic images when None
    steps: int | None = None  # per contender and round (None: 2 on a CPU, 50 on a GPU; methods: 2)
    rounds: int = 5
    threads: int | None = None  # torch's CPU threads (None: torch's choice)
    pipeline: str | None = None  # clothing1m: the input pipelines instead of training
    images: int = 64  # pipeline: synthetic JPEGs timed
    methods: bool = False  # every training method against CE instead
    compare_determinism: bool | None = None  # also sln_fast with run.deterministic=false (None: on CUDA only)


def run(request: BenchRequest, console: Any = None) -> tuple[str, dict[str, Any]]:
    """The benchmark `request` asks for: (its kind, its result); `render(kind, result, console)` shows it."""
    if request.threads is not None:
        if request.threads < 1:
            raise SlnError(f"--threads must be at least 1, got {request.threads}")
        import torch

        torch.set_num_threads(request.threads)
    if request.methods:
        from sln_cli.bench.methods import benchmark_methods

        steps = 2 if request.steps is None else request.steps
        return "methods", benchmark_methods(device=request.device, steps=steps, rounds=request.rounds,
                                            console=console)
    if request.pipeline is not None:
        if request.pipeline not in PIPELINES:
            raise SlnError(f"--pipeline knows only clothing1m, got {request.pipeline!r}")
        if request.images < 1:
            raise SlnError(f"--images must be at least 1, got {request.images}")
        from sln_cli.bench.pipeline import benchmark_pipeline

        return "pipeline", benchmark_pipeline(images=request.images, device=request.device)
    from sln_cli.bench.training import BenchSettings, benchmark_training

    settings = BenchSettings(device=request.device, data_dir=request.data_dir, steps=request.steps,
                             rounds=request.rounds, nondeterministic=request.compare_determinism)
    return "training", benchmark_training(settings, console=console)


def render(kind: str, result: dict[str, Any], console: Any) -> None:
    """The tables of one benchmark's result."""
    if kind == "methods":
        from sln_cli.bench.methods import render as render_methods

        render_methods(result, console)
    elif kind == "pipeline":
        from sln_cli.bench.report import render_pipeline

        render_pipeline(result, console)
    else:
        from sln_cli.bench.report import render_training

        render_training(result, console)
