"""Choosing the device and the numeric precision of a run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from sln_cli.errors import SlnError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SlnError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SlnError(f"device {name} is not available: no CUDA GPU found; use --device cpu")
        if (device.index or 0) >= count:
            raise SlnError(f"device {name} is not available: found {count} GPU(s) (cuda:0..{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SlnError("device mps is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise SlnError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def autocast(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    """A factory of autocast contexts for the forward pass (a no-op in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = DTYPES[precision]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not (the scaler is then disabled)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
