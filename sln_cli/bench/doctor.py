"""`sln doctor`: what this machine is, then a few real training steps of every path `sln train` can take on it.

Each check trains sln's own loop (`sln_cli.training.train.train`) for an epoch or two on the bundled 8×8 digits
(offline) in a temporary directory, or exercises one mechanism directly (EMA, nvJPEG, a one-process DDP group), and
reports pass, fail or skip (with why) and its images/s. Any failure makes the command exit 1.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sln_cli import __version__
from sln_cli.training.devices import resolve_device

if TYPE_CHECKING:
    from rich.console import JustifyMethod

# A tiny real run: digits with 40% symmetric noise, the small CNN; 128 training images in batches of 32.
BASE: dict[str, Any] = {
    "description": "sln doctor",
    "data": {"dataset": "digits", "train_limit": 128, "test_limit": 64, "padding": 1, "flip": False},
    "noise": {"mode": "sym", "rate": 0.4, "seed": 0},
    "model": {"name": "cnn"},
    "optim": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "sln": {"sigma": 0.5, "ema_decay": 0.9},
    "run": {"eval_batch_size": 256, "channels_last": False},
}
TIMING_KEYS = ("epoch_seconds", "images_per_second", "wall_seconds")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass, fail or skip
    images_per_second: float | None
    seconds: float
    detail: str


class Skip(Exception):
    """A path this machine does not have (nvJPEG without CUDA, say): reported as skip, not as a failure."""


def diagnose(device: str = "auto") -> dict[str, Any]:
    """The machine's description and every check's result; `ok` is False when any check failed."""
    torch_device = resolve_device(device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sln-doctor-") as folder:
        checks = [_run(name, check, torch_device, Path(folder)) for name, check in CHECKS]
    return {
        "machine": describe_machine(torch_device),
        "checks": [asdict(check) for check in checks],
        "ok": all(check.status != "fail" for check in checks),
        "seconds": time.perf_counter() - started,
    }


def _run(name: str, check: Callable[[torch.device, Path], tuple[float | None, str]], device: torch.device,
         folder: Path) -> Check:
    started = time.perf_counter()
    try:
        rate, detail = check(device, folder / name)
        status = "pass"
    except Skip as why:
        rate, detail, status = None, str(why), "skip"
    except Exception as exc:  # a doctor reports every failure and goes on to the next check
        rate, detail, status = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", "fail"
    return Check(name, status, rate, time.perf_counter() - started, detail)


# --------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------


def describe_machine(device: torch.device) -> dict[str, Any]:
    import numpy
    import torchvision

    from sln_cli.bench.hardware import describe

    info: dict[str, Any] = {
        "sln": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
        "device": str(device), "description": describe(device), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "cuda_runtime": torch.version.cuda,
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(name=properties.name, capability=f"sm_{properties.major}{properties.minor}",
                    memory_total_gib=total / 2**30, memory_free_gib=free / 2**30,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(including_emulation=False))
        with contextlib.suppress(AttributeError, RuntimeError):
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    else:
        from sln_cli.bench.hardware import cpu_flags

        flags = cpu_flags()
        info["capability"] = " ".join(flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags)
        info.update(_host_memory())
    return info


def _host_memory() -> dict[str, float]:
    """MemTotal and MemAvailable of /proc/meminfo in GiB (Linux); nothing elsewhere."""
    try:
        lines = Path("/proc/meminfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    values = {key: int(rest.split()[0]) * 1024 / 2**30 for key, _, rest in (line.partition(":") for line in lines)
              if key in ("MemTotal", "MemAvailable")}
    return {"memory_total_gib": values.get("MemTotal", 0.0), "memory_free_gib": values.get("MemAvailable", 0.0)}


# --------------------------------------------------------------------------------------------------
# Checks through sln's own training loop
# --------------------------------------------------------------------------------------------------


def _train(device: torch.device, out: Path, *, resume: bool = False, **sections: dict[str, Any]) -> list[dict]:
    """Train the tiny run (BASE with `sections` merged in) into `out`; its metrics rows."""
    from sln_cli import config as config_lib
    from sln_cli.rundir import runs
    from sln_cli.training.train import train

    tree = {key: ({**value, **sections.get(key, {})} if isinstance(value, dict) else value)
            for key, value in BASE.items()}
    tree["run"] = {**tree["run"], "device": str(device), "out": str(out)}
    train(config_lib.resolve(tree), resume=out if resume else None, quiet=True)
    rows = runs.read_metrics(out)
    for row in rows:
        if not all(math.isfinite(row[key]) for key in ("train_loss", "test_loss", "test_loss_ema")):
            raise RuntimeError(f"a non-finite loss at epoch {row['epoch']}")
    return rows


def _precision(precision: str, *, channels_last: bool = False):
    def check(device: torch.device, out: Path) -> tuple[float, str]:
        if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise Skip("this GPU has no bf16")
        rows = _train(device, out, run={"precision": precision, "channels_last": channels_last})
        scaler = " with the GradScaler" if precision == "fp16" else ""
        return rows[-1]["images_per_second"], f"test accuracy {rows[-1]['test_acc']:.1%}{scaler}"

    return check


def _compile(device: torch.device, out: Path) -> tuple[float, str]:
    from sln_cli.training.devices import compile_mode

    rows = _train(device, out, optim={"epochs": 2}, run={"compile": "compile"})
    mode = compile_mode(device, world_size=1)
    graphs = " (CUDA graphs)" if mode == "reduce-overhead" else ""
    # the first epoch includes compiling; the second is the compiled speed
    return rows[-1]["images_per_second"], f"mode {mode}{graphs}; first epoch {rows[0]['epoch_seconds']:.1f} s"


def _label_correction(device: torch.device, out: Path) -> tuple[float, str]:
    rows = _train(device, out, optim={"epochs": 2}, sln={"correction": 1})
    corrected = rows[-1].get("corrected_acc")
    if corrected is None or not 0.0 <= corrected <= 1.0:
        raise RuntimeError(f"epoch 2 corrected no targets (corrected_acc {corrected})")
    return rows[-1]["images_per_second"], f"{corrected:.1%} of corrected targets point at the true label"


def _resume(device: torch.device, out: Path) -> tuple[float, str]:
    whole = _train(device, out / "whole", optim={"epochs": 2})
    _train(device, out / "resumed", optim={"epochs": 1})
    resumed = _train(device, out / "resumed", resume=True, optim={"epochs": 2})

    def strip(rows: list[dict]) -> list[dict]:
        return [{key: value for key, value in row.items() if key not in TIMING_KEYS} for row in rows]

    if strip(whole) != strip(resumed):
        raise RuntimeError("a run resumed after epoch 1 differs from the uninterrupted run")
    return resumed[-1]["images_per_second"], "checkpoint after epoch 1; epoch 2 resumed equals the uninterrupted run"


# --------------------------------------------------------------------------------------------------
# Checks of one mechanism each
# --------------------------------------------------------------------------------------------------


def _ema(device: torch.device, out: Path) -> tuple[float | None, str]:
    """The EMA of every float weight and BatchNorm buffer equals `decay * ema + (1 - decay) * model`."""
    from sln_cli.models import build_model
    from sln_cli.training.ema import WeightEMA

    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8).to(device)
    ema = WeightEMA(model, decay=0.9)
    before = {key: value.clone() for key, value in ema.state_dict().items()}
    model.train()(torch.randn(32, 1, 8, 8, device=device))  # moves the BatchNorm running statistics
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    started = time.perf_counter()
    ema.update()
    seconds = time.perf_counter() - started
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            expected = 0.9 * before[key] + 0.1 * value
            if not torch.allclose(ema.state_dict()[key], expected, rtol=1e-5, atol=1e-6):
                raise RuntimeError(f"EMA of {key} is not 0.9 * ema + 0.1 * model")
    return None, f"every float weight and buffer averaged; one update {seconds * 1e3:.2f} ms"


def _nvjpeg(device: torch.device, out: Path) -> tuple[float, str]:
    """nvJPEG's batched decode on the device against libjpeg-turbo on the CPU, for 32 synthetic photos."""
    if device.type != "cuda":
        raise Skip("nvJPEG needs a CUDA device")
    from torchvision.io import decode_jpeg, encode_jpeg

    from sln_cli.data.files import decode_batch

    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(32, 3, 12, 16, generator=generator), size=(240, 320))
    datas = [encode_jpeg((image * 255).to(torch.uint8), quality=90) for image in smooth]
    decode_batch(datas, [Path("warm-up")] * len(datas), device=device)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    decoded = decode_batch(datas, [Path(f"synthetic-{i}.jpg") for i in range(len(datas))], device=device)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    grey = max((image.float().cpu() - decode_jpeg(data).float()).abs().mean().item()
               for image, data in zip(decoded, datas, strict=True))
    if grey > 2.0:
        raise RuntimeError(f"nvJPEG differs from libjpeg-turbo by {grey:.2f} grey levels on average")
    return len(datas) / seconds, f"within {grey:.2f} grey levels of the CPU decoder"


def _ddp(device: torch.device, out: Path) -> tuple[float, str]:
    """A one-process group (gloo on the CPU, nccl on CUDA): DistributedDataParallel steps and an all-reduce."""
    import torch.distributed as dist

    from sln_cli.models import build_model
    from sln_cli.training.distributed import _NO_FORWARD_BUFFER_SYNC

    if dist.is_initialized():
        raise Skip("a process group exists already (under torchrun): run sln doctor without torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_model("cnn", num_classes=10, in_channels=1, image_size=8).to(device)
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index or 0] if device.type == "cuda" else None, **_NO_FORWARD_BUFFER_SYNC)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        images, labels = torch.randn(64, 1, 8, 8, device=device), torch.randint(0, 10, (64,), device=device)
        steps, started = 8, time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(network(images), labels).backward()
            optimizer.step()
        total = torch.ones(3, device=device)
        dist.all_reduce(total)
        rate = steps * len(images) / (time.perf_counter() - started)
        if total.tolist() != [1.0, 1.0, 1.0]:
            raise RuntimeError(f"an all-reduce over one process changed its input: {total.tolist()}")
    finally:
        dist.destroy_process_group()
    return rate, f"{backend}, 1 process: DDP steps and an all-reduce"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CHECKS: list[tuple[str, Callable[[torch.device, Path], tuple[float | None, str]]]] = [
    ("fp32", _precision("fp32")),
    ("bf16", _precision("bf16")),
    ("fp16+scaler", _precision("fp16")),
    ("channels-last", _precision("fp32", channels_last=True)),
    ("compile", _compile),
    ("ema", _ema),
    ("label-correction", _label_correction),
    ("checkpoint+resume", _resume),
    ("nvjpeg", _nvjpeg),
    ("ddp-1-process", _ddp),
]


def render(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    machine = result["machine"]
    console.print(f"sln {machine['sln']}, torch {machine['torch']}, torchvision {machine['torchvision']}, "
                  f"python {machine['python']}, CUDA runtime {machine['cuda_runtime'] or '-'}")
    memory = (f"{machine['memory_total_gib']:.1f} GiB ({machine['memory_free_gib']:.1f} free)"
              if "memory_total_gib" in machine else "-")
    console.print(f"{machine['description']}; capability: {machine.get('capability') or '-'}; memory {memory}")
    table = Table(box=None, header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (("check", "left"), ("result", "left"), ("images/s", "right"),
                                                      ("seconds", "right"), ("detail", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for check in result["checks"]:
        rate = "-" if check["images_per_second"] is None else f"{check['images_per_second']:,.0f}"
        colour = {"pass": "green", "fail": "red", "skip": "yellow"}[check["status"]]
        table.add_row(check["name"], f"[{colour}]{check['status']}[/]", rate, f"{check['seconds']:.1f}",
                      check["detail"])
    console.print(table)
    verdict = "all checks passed" if result["ok"] else "some checks FAILED"
    console.print(f"{verdict} in {result['seconds']:.0f} s")
