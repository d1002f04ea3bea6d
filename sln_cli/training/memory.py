"""Before training: the peak memory of model × input × batch, estimated on the meta device, against the device's free
memory; a run that would not fit is refused with one line naming a batch size (or input size) that does.

Autograd's saved activations of one sample are counted by running the network on the meta device (no memory, no
compute) and scaled by the batch; the parameters count four times (weights, gradients, SGD momentum, the EMA copy);
evaluation (no grad) needs the largest layer's input and output per sample. Measured against the real peak in
docs/own-data.md ("The memory guard").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sln_cli.errors import SlnError

HEADROOM = 0.7  # refuse beyond this share of free memory: measured peaks are 0.84-1.31× the estimate (own-data.md)
GIB = 2**30


@dataclass(frozen=True)
class Estimate:
    """Bytes: what does not grow with the batch, and what one sample adds in training and in evaluation."""
    fixed: int
    per_train_sample: int
    per_eval_sample: int

    def peak(self, batch_size: int, eval_batch_size: int) -> int:
        return self.fixed + max(batch_size * self.per_train_sample, eval_batch_size * self.per_eval_sample)


def estimate(model_name: str, *, num_classes: int, channels: int, side: int) -> Estimate:
    """Count parameters, saved activations and the widest layer of `model_name` on a channels×side×side input."""
    from sln_cli.models import build_model

    with torch.device("meta"):
        model = build_model(model_name, num_classes=num_classes, in_channels=channels, image_size=side)
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    # batches 2 and 3 (BatchNorm refuses one sample on a 1×1 map): their difference leaves out what autograd
    # saves once per batch (the weights of conv/linear layers)
    saved_2, widest_2, logits_2 = _forward_on_meta(model, channels, side, batch=2)
    saved_3, widest_3, logits_3 = _forward_on_meta(model, channels, side, batch=3)
    per_saved, per_widest = saved_3 - saved_2, widest_3 - widest_2
    input_bytes = channels * side * side * 4  # the normalised fp32 batch (uint8 copies are negligible)
    gradient_of_outputs = 2 * per_widest  # backward holds an output's gradient beside its input's
    return Estimate(fixed=4 * parameters + 2 * buffers + saved_2 - 2 * per_saved,
                    per_train_sample=per_saved + input_bytes + gradient_of_outputs + (logits_3 - logits_2),
                    per_eval_sample=per_widest + input_bytes)


def _forward_on_meta(model: torch.nn.Module, channels: int, side: int, *, batch: int) -> tuple[int, int, int]:
    """Bytes autograd saves for backward, the largest input + output of one layer, and the logits' bytes."""
    saved = [0]
    widest = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    def layer_io(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        tensors = [t for t in (*inputs, output) if isinstance(t, torch.Tensor)]
        widest[0] = max(widest[0], sum(t.numel() * t.element_size() for t in tensors))

    hooks = [m.register_forward_hook(layer_io) for m in model.modules() if not list(m.children())]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            logits = model(torch.empty(batch, channels, side, side, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return saved[0], widest[0], logits.numel() * 4


def free_bytes(device: torch.device) -> int | None:
    """Memory this process may still take: CUDA's free memory, or the host's available memory (and cgroup limit)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None  # mps: no reliable figure
    available = _meminfo_available()
    limit = _cgroup_room()
    known = [value for value in (available, limit) if value is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """cgroup v2: memory.max minus memory.current of this process's group (containers, Slurm jobs)."""
    try:
        group = Path("/proc/self/cgroup").read_text().strip().split("::")[-1]
        folder = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((folder / "memory.current").read_text())
    except (OSError, ValueError, IndexError):
        return None


def check_fits(model_name: str, *, num_classes: int, channels: int, side: int, batch_size: int,
               eval_batch_size: int, device: torch.device, file_backed: bool) -> Estimate | None:
    """Raise a one-line SlnError when the estimated peak exceeds HEADROOM of the device's free memory."""
    try:
        found = estimate(model_name, num_classes=num_classes, channels=channels, side=side)
    except SlnError:
        raise
    except Exception:  # noqa: BLE001 - a network the meta device cannot run: no estimate, and training decides
        return None
    free = free_bytes(device)
    if free is None:
        return found
    budget = HEADROOM * free
    peak = found.peak(batch_size, eval_batch_size)
    if peak <= budget:
        return found
    advice = _advice(found, budget, batch_size=batch_size, eval_batch_size=eval_batch_size, side=side,
                     file_backed=file_backed)
    raise SlnError(
        f"training {model_name} on {side}×{side} inputs at batch {batch_size} (evaluation batch {eval_batch_size}) "
        f"needs about {peak / GIB:.1f} GiB (estimated) but {device} has {free / GIB:.1f} GiB free; {advice} "
        "(or skip this check with --set run.memory_check=false)")


def _advice(found: Estimate, budget: float, *, batch_size: int, eval_batch_size: int, side: int,
            file_backed: bool) -> str:
    room = budget - found.fixed
    if room <= 0:
        return "the model alone does not fit: use a smaller model or another device"
    fixes = []
    train_fit = _power_of_two_at_most(room / found.per_train_sample)
    if batch_size * found.per_train_sample > room:
        fixes.append(f"--set optim.batch_size={train_fit}" if train_fit >= 1 else None)
    eval_fit = _power_of_two_at_most(room / found.per_eval_sample)
    if eval_batch_size * found.per_eval_sample > room and eval_fit >= 1:
        fixes.append(f"--set run.eval_batch_size={eval_fit}")
    advice = "use " + " ".join(fix for fix in fixes if fix) if any(fixes) else ""
    if file_backed:  # activations grow with the square of the side
        scale = math.sqrt(room / max(batch_size * found.per_train_sample, eval_batch_size * found.per_eval_sample))
        fitting = max(8, int(side * scale) // 8 * 8)
        sizes = f"--set data.resize={fitting} --set data.crop={fitting}"
        advice = f"{advice}, or smaller inputs: {sizes}" if advice else f"use smaller inputs: {sizes}"
    return advice or "use a smaller batch or another device"


def _power_of_two_at_most(value: float) -> int:
    return 0 if value < 1 else 2 ** int(math.log2(value))
