"""Training on several processes under torchrun: this process's rank, the process group, the few collectives.

Without torchrun, or with one process, `detect()` gives `SINGLE` and every helper returns at once, so the
single-process loop runs exactly as it does without this module.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sln_cli.errors import SlnError
from sln_cli.training.devices import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes, as torchrun's RANK, WORLD_SIZE, LOCAL_RANK say."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank within this node: the GPU index this process takes

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def detect() -> World:
    """The world torchrun describes in the environment; `SINGLE` without torchrun or with one process."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE
    try:
        world = World(rank=int(os.environ["RANK"]), size=int(os.environ["WORLD_SIZE"]),
                      local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError) as exc:
        raise SlnError("WORLD_SIZE is set but RANK is missing or not a number; start multi-process runs "
                       "with torchrun, or unset WORLD_SIZE") from exc
    return world if world.size > 1 else SINGLE


def device_for(world: World, name: str, *, sync_batchnorm: bool = False) -> torch.device:
    """This process's device: under torchrun `auto`/`cuda` mean cuda:LOCAL_RANK, and `cpu` stays the CPU."""
    if world.size == 1:
        return resolve_device(name)  # run.sync_batchnorm has nothing to synchronise with one process
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        if sync_batchnorm:
            raise SlnError("run.sync_batchnorm needs CUDA GPUs; drop it on the CPU, where the BatchNorm "
                           "statistics are averaged across processes after every epoch instead")
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise SlnError(f"under torchrun each process takes the GPU cuda:LOCAL_RANK; use --device cuda, auto "
                       f"or cpu instead of {name}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise SlnError("device cuda is not available: no CUDA GPU found; use --device cpu")
    if world.local_rank >= count:
        raise SlnError(f"torchrun started more processes on this node than it has GPUs ({count}); "
                       f"use --nproc_per_node={count}")
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the block (nccl on CUDA, gloo on the CPU) and leave it however it ends."""
    if world.size == 1 or dist.is_initialized():  # one process, or a caller that owns the group already
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives then use this rank's GPU
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
        # Every rank's collectives finished before any rank tears the group down: a gloo worker thread still
        # holding work when its process exits aborts it ("terminate called without an active exception"), as
        # one CI run of the torchrun test here did.
        dist.barrier()
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# Sharding and the model wrapper
# --------------------------------------------------------------------------------------------------


def shard(order: Tensor, world: World, *, batch_size: int | None = None) -> Tensor:
    """This rank's part of `order`: `order[rank::size]`; with `batch_size`, every rank gets as many batches.

    Striding gives rank r the r-th image of every global batch of `size × batch_size`, so all ranks take
    the same number of steps (DDP needs that) and the last batches differ by at most one image. Only when
    the last global batch would hold fewer than `size` images (some rank would get none) are those images
    left out: fewer than `size`, a different few every epoch as the permutation changes; none is repeated.
    """
    if world.size == 1:
        return order
    if batch_size is not None:
        tail = order.numel() % (world.size * batch_size)
        if 0 < tail < world.size:
            order = order[:order.numel() - tail]
    return order[world.rank::world.size]


# Buffers are kept identical by `average_buffers` (or by SyncBatchNorm): DDP must not overwrite them with
# rank 0's at every forward. torch >= 2.13 renamed the flag; the old name still works but warns.
_NO_FORWARD_BUFFER_SYNC: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def wrap(model: nn.Module, world: World, device: torch.device, *, sync_batchnorm: bool) -> nn.Module | None:
    """The DistributedDataParallel wrapper the training forward goes through; None with one process.

    The model is changed in place (SyncBatchNorm layers share its parameters and buffers), so the weight
    EMA and the optimizer, built on `model`, keep tracking the very tensors DDP trains.
    """
    if world.size == 1:
        return None
    if sync_batchnorm:  # batch statistics over the global batch: the forward then matches one GPU at size × B
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert converted is model, "a bare BatchNorm layer as the whole model cannot be converted in place"
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **_NO_FORWARD_BUFFER_SYNC)


@torch.no_grad()
def average_buffers(modules: list[nn.Module], world: World) -> None:
    """Make every floating-point buffer (BatchNorm running statistics) of `modules` its mean over the ranks.

    Called once per epoch, not per step: DDP already keeps the parameters identical, each rank's running
    statistics only feed its own buffers, and both BatchNorm's update and the weight EMA are linear in
    them, so averaging at the end of the epoch gives what averaging after every step would, with no
    per-step collective. The buffers are then identical wherever they are used: evaluation, the EMA's
    label correction, checkpoints.
    """
    if world.size == 1:
        return
    buffers = [b for module in modules for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])  # one collective for all of them
    all_reduce_sum(flat, world).div_(world.size)
    for buffer, mean in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
        buffer.copy_(mean.view_as(buffer))


# --------------------------------------------------------------------------------------------------
# Collectives (no-ops with one process)
# --------------------------------------------------------------------------------------------------


def all_reduce_sum(tensor: Tensor, world: World) -> Tensor:
    """In place, the sum of `tensor` over the ranks, the same on every rank; returns `tensor`."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: Tensor, world: World) -> Tensor:
    """In place, the minimum of `tensor` over the ranks; returns `tensor`."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def broadcast(tensor: Tensor, world: World) -> Tensor:
    """In place, rank 0's `tensor` on every rank; returns `tensor`."""
    if world.size > 1:
        dist.broadcast(tensor, src=0)
    return tensor


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def broadcast_json(value: Any, world: World) -> Any:
    """Rank 0's `value` (anything JSON can hold) on every rank: sent as UTF-8 bytes, never pickled."""
    if world.size == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    data = json.dumps(value).encode() if world.is_main else b""
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(length, src=0)
    buffer = torch.zeros(int(length), dtype=torch.uint8, device=device)
    if world.is_main:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return json.loads(buffer.cpu().numpy().tobytes())


def from_main(world: World, make: Callable[[], T]) -> T:
    """`make()` run on rank 0 only; its JSON-able result, or the `SlnError` it raised, reaches every rank.

    So a user mistake found by rank 0 (say, a non-empty --out) stops every rank with the same message
    instead of leaving the others waiting for rank 0.
    """
    if world.size == 1:
        return make()
    result, error = None, None
    if world.is_main:
        try:
            result = make()
        except SlnError as exc:
            error = str(exc)
    result, error = broadcast_json([result, error], world)
    if error is not None:
        raise SlnError(error)
    return result


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block before the other ranks do (a download happens once, then everyone reads it)."""
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)
