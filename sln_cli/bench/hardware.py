"""What the benchmark runs on: a one-line description of the device, its fastest training precision, the load."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

# x86 and Arm CPU flags that mean native bf16 arithmetic (oneDNN then runs bf16 convolutions at up to twice the
# fp32 rate); without them oneDNN emulates bf16, which is slower than fp32.
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


RunPrecision = Literal["fp32", "bf16", "fp16"]  # config.RunConfig.precision

@dataclass(frozen=True)
class Precision:
    """A precision and memory layout for the `sln` contenders, with why it was chosen."""

    precision: RunPrecision  # fp32 or bf16 (run.precision)
    channels_last: bool  # run.channels_last
    why: str

    @property
    def label(self) -> str:
        return self.precision + ("+channels_last" if self.channels_last else "")


def fastest_precision(device: torch.device) -> Precision:
    """bf16 autocast + channels-last where the device computes bf16 natively; fp32 + channels-last otherwise."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision("bf16", True, f"{torch.cuda.get_device_name(device)} supports bf16")
        return Precision("fp32", True, "this GPU has no native bf16: fp32")
    if device.type == "cpu":
        flags = cpu_flags()
        native = [flag for flag in _BF16_CPU_FLAGS if flag in flags]
        if native and torch.backends.mkldnn.is_available():
            return Precision("bf16", True, f"CPU flag {native[0]}: oneDNN runs bf16 natively")
        return Precision("fp32", True, "this CPU has no native bf16 (no avx512_bf16/amx_bf16/bf16 flag): fp32")
    return Precision("fp32", False, f"{device.type}: fp32 (bf16 autocast is not benchmarked there)")


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, Arm
            return set(value.split())
    return set()


def describe(device: torch.device) -> str:
    """e.g. `cpu: AMD EPYC, 2 cores, torch threads: 2, AVX512` or `cuda:0: NVIDIA H100 (sm_90, 80 GiB)`."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{device}: {props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB), "
                f"torch {torch.__version__}")
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return (f"cpu: {cpu_model()}, {cores} cores, torch threads: {torch.get_num_threads()}, "
                f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    return f"{device}: {platform.machine()}, torch {torch.__version__}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: on a shared machine, what else competed for the cores."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
