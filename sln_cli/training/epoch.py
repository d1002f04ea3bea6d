"""The passes of one training epoch over the data: SGD steps, label correction, evaluation.

`train_pass` runs `sln_cli.training.step.sgd_step` over the epoch's batches and keeps the bookkeeping out of it:
the compiled-or-eager choice per batch, the metrics, the recorded softmax, the reduction over torchrun's ranks.
Every pass draws from generators keyed by (seed, epoch, purpose), so a resumed run repeats its draws.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sln_cli.config import Config
from sln_cli.data.batches import Augmentation
from sln_cli.errors import NonFiniteLoss
from sln_cli.methods.base import EpochPass, Method
from sln_cli.methods.sln import correct_labels  # noqa: F401 (SLN-MO-LC's pass: sln_cli.methods.sln)
from sln_cli.render.progress import TrainProgress
from sln_cli.training import distributed
from sln_cli.training.devices import autocast
from sln_cli.training.distributed import SINGLE, World
from sln_cli.training.recording import records_batches
from sln_cli.training.state import Images, Splits, State
from sln_cli.training.step import EpochMetrics, Step, sgd_step


def train_pass(state: State, train: Images, config: Config, sigma: float, epoch: int, device: torch.device,
               progress: TrainProgress, *, world: World = SINGLE, samples: Tensor | None = None) -> dict[str, Any]:
    """One epoch of SGD steps on the (noised) targets; metrics accumulate on the device, read once at the end.

    The loss is the run's method, `state.method` (built from the config; tests put another there). Under
    torchrun each rank trains on its shard of the epoch through DDP, and the metrics, the non-finite flag and
    the recorded softmax are reduced over the ranks: every rank returns the same.
    """
    step = _step(state, config, sigma, epoch, device, world)
    eager = state.ddp if state.ddp is not None else state.model  # DDP averages the gradients during backward
    batch_size = config.optim.batch_size
    augmentation = Augmentation(padding=config.data.padding, flip=config.data.flip)
    shuffle = epoch_generator(device, config.run.seed, epoch, "shuffle")  # the same permutation on every rank
    permutation = torch.randperm(len(train) if samples is None else samples.numel(), generator=shuffle, device=device)
    order = distributed.shard(permutation if samples is None else samples[permutation], world, batch_size=batch_size)
    metrics = EpochMetrics(device)
    clean = state.clean if state.clean is not None else state.noisy
    # in-batch recording (run.record_probs_mode=batch): state.probs_sum itself with one process
    probs = _epoch_probs(state, world) if records_batches(config) else None

    if step.method.rescores(epoch):
        rescore_pass(state.model, train, config, step.method, device,
                     epoch_generator(device, config.run.seed, epoch, "rescore"))
    eager.train()
    step.method.start_epoch(epoch)
    own = step.method.train_pass(EpochPass(
        step=step, model=state.model, train=train, epoch=epoch, batch_size=batch_size,
        eval_batch_size=config.run.eval_batch_size, augmentation=augmentation, metrics=metrics, noisy=state.noisy,
        clean=clean, progress=progress, seed=config.run.seed, world=world,
        generator=lambda purpose: epoch_generator(device, config.run.seed, epoch, purpose)))
    if own is not None:  # the method ran its own steps (DivideMix)
        return _pass_results(state, metrics, probs, epoch, world, sync_batchnorm=config.run.sync_batchnorm) | own
    progress.start_epoch(epoch, math.ceil(order.numel() / batch_size))
    batches = train.batches(order, batch_size, augmentation=augmentation, generator=step.noise)
    for number, (images, index) in enumerate(batches):
        # a compiled step has static shapes: a final partial batch goes through the eager network
        network = state.compiled if state.compiled is not None and len(index) == batch_size else eager
        logits, batch_loss = sgd_step(step, network, images, state.targets[index], index)
        metrics.add(number, batch_loss, logits, state.noisy[index], clean[index])
        if probs is not None:
            with torch.no_grad():
                probs.index_add_(0, index, torch.softmax(logits.float(), dim=1))
        progress.step(len(index), metrics.mean_loss)
    return _pass_results(state, metrics, probs, epoch, world, sync_batchnorm=config.run.sync_batchnorm)


def _step(state: State, config: Config, sigma: float, epoch: int, device: torch.device, world: World) -> Step:
    """The epoch's step: the state's optimizer, EMA, method and SAM, and generators drawn for this epoch."""
    seed, ranked = config.run.seed, rank_key(world)
    # augmentation, label and logit-gradient noise: each rank draws its own for its own images
    noise = epoch_generator(device, seed, epoch, "noise", *ranked)
    # parameter-gradient noise lands after DDP's all-reduce: one draw shared by all ranks keeps them equal
    shared = noise if world.size == 1 else epoch_generator(device, seed, epoch, "gradient noise")
    return Step(
        optimizer=state.optimizer, scaler=state.scaler, ema=state.ema,
        autocast=autocast(device, config.run.precision), sigma=sigma, noise=noise, sam=state.sam,
        method=state.method,
        grad_clip=config.optim.grad_clip,
        grad_noise_sigma=config.sln.grad_noise_sigma, logit_grad_noise_sigma=config.sln.logit_grad_noise_sigma,
        gradient_noise=shared, parameters=[p for p in state.model.parameters() if p.requires_grad],
    )


def _pass_results(state: State, metrics: EpochMetrics, probs: Tensor | None, epoch: int, world: World, *,
                  sync_batchnorm: bool) -> dict[str, Any]:
    """End of a pass: reduce over the ranks, stop on a non-finite loss, name the metrics of the row."""
    _reduce_over_ranks(state, probs, world, sync_batchnorm=sync_batchnorm)
    totals = metrics.totals(world)
    if totals["first_bad_step"] is not None:  # every rank has the same value: all stop together
        raise NonFiniteLoss(f"the training loss became non-finite at epoch {epoch}, step {totals['first_bad_step']}; "
                            "lower the learning rate or sigma, or use --precision fp32")
    sums = cast(dict[str, float], totals)  # only first_bad_step is ever None
    n, mislabelled, known = sums["samples"], sums["mislabelled"], state.clean is not None
    return {
        "train_samples": int(n),
        "train_loss": sums["loss_sum"] / n,
        "train_acc_noisy": sums["correct_noisy"] / n,
        "train_acc_clean": sums["correct_clean"] / n if known else None,
        "memorized": sums["memorized"] / mislabelled if known and mislabelled > 0 else None,
    }


def _epoch_probs(state: State, world: World) -> Tensor | None:
    """Where this pass adds its softmax: `probs_sum` itself, or under torchrun a zero tensor reduced after."""
    if state.probs_sum is None or world.size == 1:
        return state.probs_sum
    return torch.zeros_like(state.probs_sum)


def _reduce_over_ranks(state: State, probs: Tensor | None, world: World, *, sync_batchnorm: bool) -> None:
    """End of a pass under torchrun: sum the softmax of all shards and average the BatchNorm buffers of the
    network and its EMA (unless SyncBatchNorm kept them equal)."""
    if world.size == 1:
        return
    state.method.end_pass(world)  # per-sample state each rank changed on its shard (SOP's u, v), made equal
    if probs is not None:
        assert state.probs_sum is not None  # _epoch_probs gives probs only when the state records them
        state.probs_sum += distributed.all_reduce_sum(probs, world)  # each sample's softmax from its one rank
    if not sync_batchnorm:
        distributed.average_buffers([state.model, state.ema.module], world)


@torch.inference_mode()
def rescore_pass(model: nn.Module, train: Images, config: Config, method: Method, device: torch.device,
                 generator: torch.Generator) -> None:
    """A method's scoring pass before the epoch's steps (truncated GCE's weights): the network in eval mode over
    the whole training set with the training augmentation, as the reference code's `trainloader` pass."""
    model.eval()
    forward = autocast(device, config.run.precision)
    augmentation = Augmentation(config.data.padding, config.data.flip)
    order = torch.arange(len(train), device=device)
    for images, index in train.batches(order, config.run.eval_batch_size, augmentation=augmentation,
                                       generator=generator):
        with forward():
            logits = model(images)  # (B, K)
        method.rescore(logits, index)


@torch.inference_mode()
def evaluate(models: list[nn.Module], images: Images, labels: Tensor, *, batch_size: int,
             forward: Any, world: World = SINGLE) -> list[tuple[float, float]]:
    """(mean cross-entropy, accuracy) of each model on one split, in one pass over its batches.

    Under torchrun each rank evaluates a shard and the sums are reduced: every rank returns the same.
    """
    for model in models:
        model.eval()
    sums = torch.zeros(len(models), 2, dtype=torch.float64, device=labels.device)
    order = distributed.shard(torch.arange(len(images), device=labels.device), world)
    for batch, index in images.batches(order, batch_size):
        target = labels[index]
        for i, model in enumerate(models):
            with forward():
                logits = model(batch).float()
            sums[i, 0] += F.cross_entropy(logits, target, reduction="sum")
            sums[i, 1] += (logits.argmax(dim=1) == target).sum()
    distributed.all_reduce_sum(sums, world)
    return [(loss / len(images), correct / len(images)) for loss, correct in sums.tolist()]


def evaluate_both(state: State, splits: Splits, config: Config, world: World) -> dict[str, Any]:
    models = [state.model, state.ema.module]
    forward = autocast(splits.test_labels.device, config.run.precision)
    batch_size = config.run.eval_batch_size
    (loss, acc), (loss_ema, acc_ema) = evaluate(models, splits.test, splits.test_labels,
                                                batch_size=batch_size, forward=forward, world=world)
    row: dict[str, Any] = {"test_loss": loss, "test_acc": acc, "test_loss_ema": loss_ema, "test_acc_ema": acc_ema}
    if splits.val is not None:
        assert splits.val_labels is not None  # set together (place_splits)
        (loss, acc), (loss_ema, acc_ema) = evaluate(models, splits.val, splits.val_labels,
                                                    batch_size=batch_size, forward=forward, world=world)
        row.update(val_loss=loss, val_acc=acc, val_loss_ema=loss_ema, val_acc_ema=acc_ema)
    if splits.noisy_val is not None:
        row.update(evaluate_noisy_val(models, splits, batch_size=batch_size, forward=forward, world=world))
    return row


@torch.inference_mode()
def evaluate_noisy_val(models: list[nn.Module], splits: Splits, *, batch_size: int, forward: Any,
                       world: World = SINGLE) -> dict[str, float | None]:
    """The raw and EMA networks on the noisy validation split, batched like the test pass: loss and accuracy
    against the noisy labels (what selection may use) and, when known, accuracy against the true ones."""
    images, noisy, clean = splits.noisy_val, splits.noisy_val_labels, splits.noisy_val_clean
    assert images is not None and noisy is not None  # called only with a noisy validation split
    for model in models:
        model.eval()
    sums = torch.zeros(len(models), 3, dtype=torch.float64, device=noisy.device)  # loss, noisy hits, clean hits
    order = distributed.shard(torch.arange(len(images), device=noisy.device), world)
    for batch, index in images.batches(order, batch_size):
        for i, model in enumerate(models):
            with forward():
                logits = model(batch).float()
            predicted = logits.argmax(dim=1)
            sums[i, 0] += F.cross_entropy(logits, noisy[index], reduction="sum")
            sums[i, 1] += (predicted == noisy[index]).sum()
            if clean is not None:
                sums[i, 2] += (predicted == clean[index]).sum()
    distributed.all_reduce_sum(sums, world)
    row: dict[str, float | None] = {}
    for suffix, (loss, hits, clean_hits) in zip(("", "_ema"), sums.tolist(), strict=True):
        row |= {f"noisy_val_loss{suffix}": loss / len(images), f"noisy_val_acc{suffix}": hits / len(images),
                f"noisy_val_clean_acc{suffix}": None if clean is None else clean_hits / len(images)}
    return row


def epoch_samples(state: State, config: Config, epoch: int) -> Tensor | None:
    """Clothing1M: every epoch trains on a fresh class-balanced draw of its noisy labels (official code)."""
    per_class = config.data.balanced_per_class
    if per_class is None:
        return None
    from sln_cli.data.clothing1m import balanced_indices

    rng = np.random.default_rng([config.run.seed, epoch])  # the same draw on every rank and on resume
    indices = balanced_indices(state.noisy.cpu().numpy(), per_class, rng)
    return torch.as_tensor(indices, dtype=torch.int64, device=state.noisy.device)


# --------------------------------------------------------------------------------------------------
# Randomness
# --------------------------------------------------------------------------------------------------


def epoch_generator(device: torch.device, *key: Any) -> torch.Generator:
    """A generator seeded by (seed, epoch, purpose): an epoch's randomness does not depend on earlier
    epochs, so a resumed run draws exactly what the uninterrupted run drew."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return generator


def rank_key(world: World) -> tuple[Any, ...]:
    """Added to the key of the generators whose draws must differ across ranks; empty with one process."""
    return () if world.size == 1 else ("rank", world.rank)
