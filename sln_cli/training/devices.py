"""Choosing the device and the numeric precision of a run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch

from sln_cli.errors import SlnError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must exist. `cuda:N` becomes the current
    device (`use_device`), so that nothing this process opens later lands on GPU 0."""
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
    use_device(device)
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


def use_device(device: torch.device) -> None:
    """Make a `cuda:N` device the current one, so that everything that opens a CUDA context without being told
    where (DataLoader pin-memory threads, nvJPEG, the caching allocator, NCCL) opens it on GPU N, not on GPU 0."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def set_determinism(deterministic: bool) -> None:
    """`run.deterministic`: on, the same seed gives the same numbers on the same kind of device (exact resume);
    off, cuDNN may pick the fastest convolution algorithm per shape by timing it (`benchmark`), and kernels
    with float atomics (index_add_, some backward passes) may sum in any order.

    On, cuBLAS needs a fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts: set here unless the
    user set it) and ops without a deterministic CUDA kernel warn instead of failing.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def optimizer_kernel(device: torch.device) -> dict[str, bool]:
    """The fastest SGD implementation on `device`: fused on CUDA (it also takes the GradScaler's scale and
    inf flag without a host sync), foreach elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def compile_mode(device: torch.device, *, world_size: int) -> str:
    """torch.compile's mode for `run.compile=compile`: CUDA graphs (`reduce-overhead`) on one GPU only.

    Under DistributedDataParallel, CUDA graphs are skipped for BatchNorm's in-place running-statistics updates
    ("mutated inputs") and SyncBatchNorm breaks the graph at every layer, so several processes use the
    `default` mode (inductor kernels, no graphs); so does the CPU, where there are no CUDA graphs.
    """
    return "reduce-overhead" if device.type == "cuda" and world_size == 1 else "default"


# Every backend switch that may compute an fp32 matmul or convolution in a lower precision (TF32 on NVIDIA
# GPUs, whose cuDNN convolutions default to it; bf16 in oneDNN). torch >= 2.9's per-backend API; mixing it
# with the legacy `allow_tf32` flags is an error there, so only this API is touched.
_FP32_SWITCHES = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")


def _fp32_switches() -> list[Any]:
    found = []
    for dotted in _FP32_SWITCHES:
        backend: Any = torch.backends
        for part in dotted.split("."):
            backend = getattr(backend, part, None)
        if backend is not None and hasattr(backend, "fp32_precision"):
            found.append(backend)
    return found


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Within the block, fp32 matmuls and convolutions are IEEE fp32 on every backend (no TF32, no bf16).

    The analyses need it: TF32 carries ~1e-3 relative error, as large as the Lanczos tolerance of the
    Hessian eigenvalues. On torch without the per-backend API, the legacy TF32 flags are turned off instead.
    """
    switches = _fp32_switches()
    if switches:
        saved = [backend.fp32_precision for backend in switches]
        try:
            for backend in switches:
                backend.fp32_precision = "ieee"
            yield
        finally:
            for backend, value in zip(switches, saved, strict=True):
                backend.fp32_precision = value
        return
    saved_legacy = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_legacy
