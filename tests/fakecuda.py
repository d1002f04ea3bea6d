"""Running sln's device code on fake CUDA tensors, without a GPU, and counting what crosses the host-device line.

`fake_cuda()` gives a block in which `torch.device("cuda")` tensors are `FakeTensor`s (shapes, dtypes and devices
propagate; no kernel runs; a CPU tensor with data mixed into a CUDA op raises as it would on a GPU), and yields a
`DeviceTraffic` dispatch mode that records every op which would move data between host and device or make the host
wait for the device:

- `h2d` / `d2h`: a copy between CPU and CUDA memory (`torch.as_tensor(host_data, device="cuda")`, `.cpu()`, a
  tensor indexed with a Python list, ...); a pageable host-to-device copy is also a stream synchronisation;
- `sync`: a host read of a device value (`.item()`, `.tolist()`, `int(t)`, `bool(t)`, `if t:`, and `torch.unique`,
  whose output size is data); under fake tensors it returns a stand-in value (the largest int64, 1.0, True; all
  the values for unique) so the host code goes on;
- `mixed`: a CPU tensor (0-dim ones included) as an operand of an op on CUDA tensors;
- `generator`: a random op whose generator lives on another device than its output (CUDA raises
  "Expected a 'cuda' device type for generator").

What FakeTensorMode alone cannot cover, and how it is covered here:
- no CUDA generator can be made without a driver: `torch.Generator` is replaced by `LogicalGenerator`, a CPU
  generator that reports the device it was asked for, so device-mismatch checks still see what a GPU would;
- autograd's engine asks the CUDA driver for stream contexts, so `Tensor.backward` is replaced by
  `fake_backward`: it calls the hooks registered on tensors of the graph (the logit-gradient noise) with a
  gradient of the right shape, dtype and device, and gives every leaf reached a gradient. Autograd's own kernels
  run on the device of their inputs and never touch the host, so what it leaves out cannot copy anything;
- `Module.to` swaps parameters in place, which FakeTensorMode's weak references forbid: parameters are replaced;
  `copy.deepcopy` of a fake tensor reads its (absent) data pointer: it clones instead;
- autocast and GradScaler are told CUDA AMP is available, so they take their CUDA paths.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
COPIES = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default, aten._copy_from_and_resize.default}
# In-place kernels with no fake implementation in torch 2.14 (FakeTensorMode would run the real CUDA kernel):
# their operands are checked like any op's, then nothing runs, as nothing would be computed on fake tensors anyway.
NO_FAKE_KERNEL = {aten._fused_sgd_}
CUDA = torch.device("cuda", 0)  # with its index: `.to(CUDA)` of a tensor made there is then a no-op


# The device each non-CPU LogicalGenerator stands for, by its seed: an op receives a fresh `torch._C.Generator`
# wrapper of the same generator, not our object, and the seed is what survives (sln seeds each generator itself).
LOGICAL_DEVICES: dict[int, torch.device] = {}


class LogicalGenerator(torch.Generator):
    """A CPU generator that says it lives on the device it was made for (no CUDA generator exists without a GPU)."""

    def __new__(cls, device: str | torch.device = "cpu") -> LogicalGenerator:
        generator = super().__new__(cls)
        generator._logical_device = torch.device(device)
        generator._register()
        return generator

    def __init__(self, device: str | torch.device = "cpu") -> None:
        pass

    def _register(self) -> None:
        if self._logical_device.type != "cpu":
            LOGICAL_DEVICES[self.initial_seed()] = self._logical_device

    def manual_seed(self, seed: int) -> LogicalGenerator:
        super().manual_seed(seed)
        self._register()
        return self

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self._logical_device


def generator_device(generator: torch.Generator) -> torch.device:
    return LOGICAL_DEVICES.get(generator.initial_seed(), generator.device)


@dataclass
class DeviceTraffic(TorchDispatchMode):
    """Records `(kind, op)` for every op that would cross the host-device line (see the module docstring)."""

    events: list[tuple[str, str]] = field(default_factory=list)
    stand_ins: bool = True  # fake tensors: host reads return stand-ins; False on a real GPU (the real values)

    def __post_init__(self) -> None:
        super().__init__()

    def count(self, since: int = 0) -> dict[str, int]:
        return self.count_between(since, len(self.events))

    def count_between(self, start: int, stop: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for kind, _ in self.events[start:stop]:
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        name = str(func)
        if func in (aten._local_scalar_dense.default, aten.item.default):
            self.events.append(("sync", name))
            if self.stand_ins:
                return _stand_in(args[0].dtype)
        if func in COPIES:
            source = args[1] if func is aten.copy_.default else args[0]
            target = args[0].device if func is aten.copy_.default else kwargs.get("device") or source.device
            target = torch.device(target)
            if source.device.type != target.type:
                self.events.append(("h2d" if target.type == "cuda" else "d2h", name))
        elif any(t.device.type == "cuda" for t in tensors) and any(t.device.type == "cpu" for t in tensors):
            self.events.append(("mixed", name))
        generator = kwargs.get("generator")
        if generator is not None:
            out = kwargs.get("device") or (tensors[0].device if tensors else torch.device("cpu"))
            if generator_device(generator).type != torch.device(out).type:
                self.events.append(("generator", name))
                # recorded; not run with it: FakeTensorMode given a CPU generator for a CUDA draw corrupts memory
                kwargs = {**kwargs, "generator": None}
        if func.overloadpacket in NO_FAKE_KERNEL:
            return None
        if func is aten._unique2.default and self.stand_ins:  # its size is data: CUDA reads it back (a sync)
            self.events.append(("sync", name))
            values = args[0].flatten().clone()  # a stand-in of the largest possible size
            return values, torch.zeros_like(values, dtype=torch.int64), torch.ones_like(values, dtype=torch.int64)
        return func(*args, **kwargs)


def _stand_in(dtype: torch.dtype) -> bool | int | float:
    if dtype == torch.bool:
        return True
    if not dtype.is_floating_point:
        return torch.iinfo(torch.int64).max
    return 1.0


@dataclass
class _Hooks:
    registered: list[tuple[torch.Tensor, object]] = field(default_factory=list)


def fake_backward(hooks: _Hooks):
    """`Tensor.backward` for fake CUDA tensors: hooks get a gradient like their tensor, every leaf reached a grad."""

    def backward(self: torch.Tensor, gradient: torch.Tensor | None = None, *args, **kwargs) -> None:
        for tensor, hook in hooks.registered:
            result = hook(torch.zeros_like(tensor))
            assert result is None or (result.device == tensor.device and result.shape == tensor.shape)
        hooks.registered.clear()
        seen, stack = set(), [self.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            variable = getattr(node, "variable", None)
            if variable is not None:  # AccumulateGrad: a leaf
                variable.grad = torch.zeros_like(variable) if variable.grad is None else variable.grad + 0
            stack.extend(next_node for next_node, _ in node.next_functions)

    return backward


def _apply_by_replacing(self: torch.nn.Module, fn, recurse: bool = True) -> torch.nn.Module:
    """`Module._apply` (behind `.to`) for fake tensors: torch swaps a FakeTensor parameter in place, which fails on
    the weak references FakeTensorMode keeps; a new Parameter in its place does what `.to` promises."""
    if recurse:
        for module in self.children():
            _apply_by_replacing(module, fn)
    with torch.no_grad():
        for key, param in self._parameters.items():
            if param is not None:
                self._parameters[key] = torch.nn.Parameter(fn(param), requires_grad=param.requires_grad)
        for key, buffer in self._buffers.items():
            if buffer is not None:
                self._buffers[key] = fn(buffer)
    return self


def _deepcopy_by_cloning(self: torch.Tensor, memo: dict) -> torch.Tensor:
    """`Tensor.__deepcopy__` for fake tensors (the EMA copies the network): torch's own reads the fake storage's
    data pointer and corrupted memory here (segfaults in a later test); a clone is what a deep copy means."""
    if id(self) not in memo:
        with torch.no_grad():
            copied = self.clone()
        copied.requires_grad_(self.requires_grad)
        if getattr(self, "_is_param", False):  # a parameter made under FakeTensorMode is a marked FakeTensor
            copied._is_param = True
        memo[id(self)] = copied
    return memo[id(self)]


@contextlib.contextmanager
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[DeviceTraffic]:
    """The block runs with fake CUDA tensors; yields the traffic recorder (see the module docstring)."""
    hooks = _Hooks()
    real_register_hook = torch.Tensor.register_hook

    def register_hook(self: torch.Tensor, hook):
        if self.grad_fn is None:  # a leaf: keep autograd's own behaviour
            return real_register_hook(self, hook)
        hooks.registered.append((self, hook))
        return None

    # autocast and GradScaler take their CUDA paths (torch.cuda.is_available itself must stay False: tensor
    # factories would then ask the missing driver for a device)
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch, "Generator", LogicalGenerator)
    monkeypatch.setattr(sys.modules[__name__], "LOGICAL_DEVICES", {})
    monkeypatch.setattr(torch.Tensor, "backward", fake_backward(hooks))
    monkeypatch.setattr(torch.Tensor, "register_hook", register_hook)
    monkeypatch.setattr(torch.nn.Module, "_apply", _apply_by_replacing)
    monkeypatch.setattr(torch.Tensor, "__deepcopy__", _deepcopy_by_cloning)
    # FakeTensorMode's op cache is shared by every mode of the process; with the stand-ins above it crashed a later
    # test (a segfault building a network), so each block runs uncached and leaves nothing behind
    FakeTensorMode.cache_clear()
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    mode.cache_enabled = False
    traffic = DeviceTraffic()
    with mode, traffic:
        yield traffic
