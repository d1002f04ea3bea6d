"""The training loop of SLN, SLN-MO and SLN-MO-LC (Chen et al., ICLR 2021), resumable and device-resident.

Every epoch: set the learning rate; from epoch `correction + 1` on, correct the targets with the EMA
network and stop the label noise; train one pass with fresh Gaussian noise on the targets; evaluate the
raw (SLN) and EMA (SLN-MO) networks; log one metrics line; checkpoint atomically. Under torchrun every
process runs this loop on its shard of each epoch (see `sln_cli.distributed`); rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sln_cli import distributed, runs
from sln_cli.config import Config, dump
from sln_cli.data.batches import Augmentation
from sln_cli.devices import autocast
from sln_cli.distributed import SINGLE, World
from sln_cli.errors import Interrupted, SlnError
from sln_cli.files import atomic_write, atomic_write_json, atomic_write_text
from sln_cli.labels import write_label_file
from sln_cli.losses import (
    add_label_noise,
    add_parameter_gradient_noise,
    correct_targets,
    logit_gradient_noise_hook,
    soft_cross_entropy,
)
from sln_cli.progress import TrainProgress
from sln_cli.state import Images, Splits, State, initial_state, place_splits, restore, to_checkpoint
from sln_cli.trainset import TrainSet, build_trainset

NO_BAD_STEP = torch.iinfo(torch.int64).max  # the first-non-finite-step marker of a pass where none was


def train(config: Config, *, preset: str | None = None, resume: Path | None = None, quiet: bool = False,
          overwrite: bool = False, console: Any = None) -> dict[str, Any]:
    """Train as `config` says; write the run directory; return the summary (also in summary.json).

    Under torchrun every process calls this and gets the same summary; only rank 0 writes and shows progress.
    """
    world = distributed.detect()
    device = distributed.device_for(world, config.run.device, sync_batchnorm=config.run.sync_batchnorm)
    with distributed.process_group(world, device):
        return _train(config, world, device, preset=preset, resume=resume, quiet=quiet, overwrite=overwrite,
                      console=console)


def _train(config: Config, world: World, device: torch.device, *, preset: str | None, resume: Path | None,
           quiet: bool, overwrite: bool, console: Any) -> dict[str, Any]:
    if config.run.cpu_threads > 0:
        torch.set_num_threads(config.run.cpu_threads)
    _make_deterministic(config.run.seed)
    with distributed.main_first(world) if config.data.download else contextlib.nullcontext():
        trainset = build_trainset(config.data, config.noise)  # a download happens once, on rank 0
    splits = place_splits(trainset, config, device)
    state = initial_state(trainset, config, device)
    if resume is not None:
        run_dir = resume
        restore(state, run_dir, device, world)  # every rank loads the checkpoint
    else:  # rank 0 names the directory (timestamps differ across ranks) and writes it
        made = distributed.from_main(
            world, lambda: str(_start_run_dir(config, preset, trainset, device, world, overwrite)))
        run_dir = Path(made)
    state.ddp = distributed.wrap(state.model, world, device, sync_batchnorm=config.run.sync_batchnorm)
    state.compiled = _compiled(state.model if state.ddp is None else state.ddp, config.run.compile, device)

    progress = TrainProgress(config.optim.epochs, quiet=quiet or not world.is_main, console=console)
    started = time.perf_counter()
    with progress:
        progress.log(f"run directory: {run_dir}  ({_describe(trainset, config, device, world)})")
        progress.start(state.epoch + 1)
        try:
            for epoch in range(state.epoch + 1, config.optim.epochs + 1):
                row = _run_epoch(state, splits, config, epoch, device, progress, world)
                _remember_best(state, row, has_val=splits.val is not None)
                state.epoch = epoch
                if world.is_main:
                    _save_epoch(state, run_dir, row, config)
                progress.end_epoch(row)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted during epoch {state.epoch + 1}; `sln train --resume {run_dir}` "
                              "continues from the last checkpoint") from None
    _dump_weights_for_tests(state, world)
    return distributed.from_main(world, lambda: _finish(state, run_dir, config, time.perf_counter() - started))


# --------------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------------


def _run_epoch(state: State, splits: Splits, config: Config, epoch: int, device: torch.device,
               progress: TrainProgress, world: World) -> dict[str, Any]:
    sln, optim = config.sln, config.optim
    # 1. learning rate: lr * gamma^(number of milestones already passed)
    lr = optim.lr * optim.lr_gamma ** sum(epoch > m for m in optim.lr_milestones)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    # 2. label correction (SLN-MO-LC): after epoch `correction`, sigma is 0 and targets are re-mixed
    correcting = sln.correction is not None and epoch > sln.correction
    sigma = 0.0 if correcting else sln.sigma
    row: dict[str, Any] = {"epoch": epoch}
    samples = _epoch_samples(state, config, epoch)  # None: the whole training set
    if correcting:
        generator = _generator(device, config.run.seed, epoch, "lc", *_rank_key(world))
        row.update(_correct_labels(state, splits.train, config, generator, world=world, samples=samples))
    # 3. one pass over the training set (under torchrun: this rank's shard of it)
    started = time.perf_counter()
    row.update(train_pass(state, splits.train, config, sigma, epoch, device, progress, world=world,
                          samples=samples))
    seconds = time.perf_counter() - started
    # 4. evaluate the raw network (SLN) and the EMA network (SLN-MO)
    row.update(_evaluate_both(state, splits, config, world))
    # images/s of all ranks together: each rank went through its shard in about `seconds`
    trained = len(splits.train) if samples is None else samples.numel()
    row.update(sigma=sigma, lr=lr, epoch_seconds=seconds, images_per_second=trained / seconds)
    return row


def _compiled(network: nn.Module, mode: str, device: torch.device) -> nn.Module | None:
    """`run.compile=compile`: torch.compile the training forward; on CUDA with CUDA graphs (reduce-overhead)."""
    if mode == "none":
        return None
    return torch.compile(network, mode="reduce-overhead" if device.type == "cuda" else "default", dynamic=False)


def _epoch_samples(state: State, config: Config, epoch: int) -> Tensor | None:
    """Clothing1M: every epoch trains on a fresh class-balanced draw of its noisy labels (official code)."""
    per_class = config.data.balanced_per_class
    if per_class is None:
        return None
    from sln_cli.data.clothing1m import balanced_indices

    rng = np.random.default_rng([config.run.seed, epoch])  # the same draw on every rank and on resume
    indices = balanced_indices(state.noisy.cpu().numpy(), per_class, rng)
    return torch.as_tensor(indices, dtype=torch.int64, device=state.noisy.device)


def train_pass(state: State, train: Images, config: Config, sigma: float, epoch: int, device: torch.device,
               progress: TrainProgress, *, world: World = SINGLE, samples: Tensor | None = None) -> dict[str, Any]:
    """One epoch of SGD on the (noised) soft targets; metrics accumulate on the device, read once at the end.

    Under torchrun each rank trains on its shard of the epoch through DDP, and the metrics, the non-finite
    flag and the recorded softmax are reduced over the ranks: every rank returns the same.
    """
    model, ema, optimizer, scaler = state.model, state.ema, state.optimizer, state.scaler
    network = state.ddp if state.ddp is not None else model  # DDP averages the gradients during backward
    sln, batch_size = config.sln, config.optim.batch_size
    forward = autocast(device, config.run.precision)
    shuffle = _generator(device, config.run.seed, epoch, "shuffle")  # the same permutation on every rank
    # augmentation, label and logit-gradient noise: each rank draws its own for its own images
    noise = _generator(device, config.run.seed, epoch, "noise", *_rank_key(world))
    # parameter-gradient noise lands after DDP's all-reduce: one draw shared by all ranks keeps them equal
    gradient_noise = noise if world.size == 1 else _generator(device, config.run.seed, epoch, "gradient noise")
    augmentation = Augmentation(padding=config.data.padding, flip=config.data.flip)
    parameters = [p for p in model.parameters() if p.requires_grad]
    # sums: loss * n, n, correct vs noisy, correct vs clean, mislabelled seen, mislabelled fitted to their label
    sums = torch.zeros(6, dtype=torch.float64, device=device)
    first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=device)
    seen = 0
    clean = state.clean if state.clean is not None else state.noisy
    probs = _epoch_probs(state, world)  # state.probs_sum itself with one process

    network.train()
    permutation = torch.randperm(len(train) if samples is None else samples.numel(), generator=shuffle, device=device)
    order = distributed.shard(permutation if samples is None else samples[permutation], world, batch_size=batch_size)
    progress.start_epoch(epoch, math.ceil(order.numel() / batch_size))
    for step, (images, index) in enumerate(train.batches(order, batch_size, augmentation=augmentation,
                                                          generator=noise)):
        targets = add_label_noise(state.targets[index], sigma, noise)  # (B, K), fresh noise every step
        with forward():
            # a compiled step has static shapes: a final partial batch goes through the eager network
            compiled = state.compiled is not None and len(index) == batch_size
            logits = (state.compiled if compiled else network)(images)  # (B, K)
        if sln.logit_grad_noise_sigma > 0:
            logits.register_hook(logit_gradient_noise_hook(sln.logit_grad_noise_sigma, len(index), noise))
        loss = soft_cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if sln.grad_noise_sigma > 0:
            scaler.unscale_(optimizer)
            add_parameter_gradient_noise(parameters, sln.grad_noise_sigma, gradient_noise)
        scaler.step(optimizer)
        scaler.update()
        ema.update()
        with torch.no_grad():
            predicted, noisy, true = logits.argmax(dim=1), state.noisy[index], clean[index]
            mislabelled = noisy != true
            sums[[0, 2, 3, 4, 5]] += torch.stack([
                loss.detach().double() * len(index), (predicted == noisy).sum(), (predicted == true).sum(),
                mislabelled.sum(), (mislabelled & (predicted == noisy)).sum(),
            ]).double()
            seen += len(index)  # counted on the host: no per-step host-to-device copy
            first_bad_step = torch.where(torch.isfinite(loss), first_bad_step, first_bad_step.clamp_max(step + 1))
            if probs is not None:
                probs.index_add_(0, index, torch.softmax(logits.float(), dim=1))
        progress.step(len(index), lambda s=sums, n=seen: (s[0] / n).item())

    sums[1] = seen
    _reduce_over_ranks(state, sums, first_bad_step, probs, world, sync_batchnorm=config.run.sync_batchnorm)
    totals = sums.tolist()  # the one host sync of the epoch
    if (bad := int(first_bad_step)) != NO_BAD_STEP:  # every rank has the same value: all stop together
        raise SlnError(f"the training loss became non-finite at epoch {epoch}, step {bad}; the last good "
                       "checkpoint is kept: lower the learning rate or sigma, or use --precision fp32")
    loss_sum, n, correct_noisy, correct_clean, mislabelled, memorized = totals
    known = state.clean is not None
    return {
        "train_samples": int(n),
        "train_loss": loss_sum / n,
        "train_acc_noisy": correct_noisy / n,
        "train_acc_clean": correct_clean / n if known else None,
        "memorized": memorized / mislabelled if known and mislabelled > 0 else None,
    }


def _epoch_probs(state: State, world: World) -> Tensor | None:
    """Where this pass adds its softmax: `probs_sum` itself, or under torchrun a zero tensor reduced after."""
    if state.probs_sum is None or world.size == 1:
        return state.probs_sum
    return torch.zeros_like(state.probs_sum)


def _reduce_over_ranks(state: State, sums: Tensor, first_bad_step: Tensor, probs: Tensor | None, world: World,
                       *, sync_batchnorm: bool) -> None:
    """End of a pass under torchrun: sum the metrics and softmax of all shards, agree on the first bad step,
    and average the BatchNorm buffers of the network and its EMA (unless SyncBatchNorm kept them equal)."""
    if world.size == 1:
        return
    distributed.all_reduce_sum(sums, world)
    distributed.all_reduce_min(first_bad_step, world)
    if probs is not None:
        state.probs_sum += distributed.all_reduce_sum(probs, world)  # each sample's softmax from its one rank
    if not sync_batchnorm:
        distributed.average_buffers([state.model, state.ema.module], world)


@torch.inference_mode()
def _correct_labels(state: State, train: Images, config: Config, generator: torch.Generator, *,
                    world: World = SINGLE, samples: Tensor | None = None) -> dict[str, Any]:
    """SLN-MO-LC: targets = w * onehot(noisy) + (1 - w) * EMA prediction, w the min-max normalised EMA loss.

    Under torchrun each rank scores its shard into zero tensors and a sum over the ranks assembles the
    whole set, so every rank computes the same new targets. With an epoch's draw of `samples`
    (Clothing1M), only those are corrected, starting from their one-hot labels as the official code does.
    """
    ema = state.ema.module.eval()
    forward = autocast(state.targets.device, config.run.precision)
    n = len(train)
    losses = torch.zeros(n, device=state.targets.device)
    probs = torch.zeros_like(state.targets)
    if samples is None:
        samples = torch.arange(n, device=state.targets.device)
    else:
        state.targets[samples] = F.one_hot(state.noisy[samples], state.targets.shape[1]).float()
    order = distributed.shard(torch.unique(samples), world)  # a sample drawn twice is scored once
    augmentation = Augmentation(config.data.padding, config.data.flip) if config.sln.correction_augment else None
    for images, index in train.batches(order, config.run.eval_batch_size, augmentation=augmentation,
                                       generator=generator):
        with forward():
            log_probs = F.log_softmax(ema(images).float(), dim=1)  # (B, K)
        losses[index] = -(state.targets[index] * log_probs).sum(dim=1)
        probs[index] = log_probs.exp()
    distributed.all_reduce_sum(losses, world)
    distributed.all_reduce_sum(probs, world)
    state.targets[samples] = correct_targets(losses[samples], state.noisy[samples], probs[samples],
                                             mix_with=config.sln.correction_target)
    if state.clean is None:
        return {"corrected_acc": None}
    return {"corrected_acc": (state.targets[samples].argmax(dim=1) == state.clean[samples]).float().mean().item()}


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


def _evaluate_both(state: State, splits: Splits, config: Config, world: World) -> dict[str, Any]:
    models = [state.model, state.ema.module]
    forward = autocast(splits.test_labels.device, config.run.precision)
    batch_size = config.run.eval_batch_size
    (loss, acc), (loss_ema, acc_ema) = evaluate(models, splits.test, splits.test_labels,
                                                batch_size=batch_size, forward=forward, world=world)
    row = {"test_loss": loss, "test_acc": acc, "test_loss_ema": loss_ema, "test_acc_ema": acc_ema}
    if splits.val is not None:
        (loss, acc), (loss_ema, acc_ema) = evaluate(models, splits.val, splits.val_labels,
                                                    batch_size=batch_size, forward=forward, world=world)
        row.update(val_loss=loss, val_acc=acc, val_loss_ema=loss_ema, val_acc_ema=acc_ema)
    return row


# --------------------------------------------------------------------------------------------------
# The run directory
# --------------------------------------------------------------------------------------------------


def _start_run_dir(config: Config, preset: str | None, trainset: TrainSet, device: torch.device,
                   world: World, overwrite: bool) -> Path:
    run_dir = runs.new_run_dir(config.run.out, preset, overwrite=overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / runs.CONFIG, dump(config))
    runs.write_meta(run_dir, device=str(device), seed=config.run.seed,
                    extra={"num_train": len(trainset.noisy), "num_test": len(trainset.dataset.test.labels),
                           "world_size": world.size})
    write_label_file(run_dir / "labels.csv", trainset.labels, trainset.manifest)
    return run_dir


def _describe(trainset: TrainSet, config: Config, device: torch.device, world: World) -> str:
    rate = None if trainset.clean is None else float((trainset.noisy != trainset.clean).mean())
    noise = "unknown noise" if rate is None else f"realised noise {rate:.1%}"
    where = str(device) if world.size == 1 else f"{world.size} processes on {device.type}"
    return (f"{config.data.dataset}: {len(trainset.noisy)} train / {len(trainset.dataset.test.labels)} test, "
            f"{noise}, {config.model.name}, sigma {config.sln.sigma}, {where}, {config.run.precision}")


# --------------------------------------------------------------------------------------------------
# Per-epoch files and results
# --------------------------------------------------------------------------------------------------


def _save_epoch(state: State, run_dir: Path, row: dict[str, Any], config: Config) -> None:
    """Rank 0 only: the metrics line, the resumable checkpoint and any kept weights of the epoch just done."""
    runs.append_metrics(run_dir, row)
    _keep_epoch_weights(state, run_dir, config.run.keep_checkpoints)  # before the checkpoint that names them
    if state.epoch % config.run.checkpoint_every == 0 or state.epoch == config.optim.epochs:
        runs.save_torch(run_dir / runs.CHECKPOINT, to_checkpoint(state))


def _remember_best(state: State, row: dict[str, Any], *, has_val: bool) -> None:
    """Model selection on the EMA network's validation accuracy, never on the test set."""
    if has_val and (state.best is None or row["val_acc_ema"] > state.best["val_acc_ema"]):
        state.best, state.best_is_new = dict(row), True


def _keep_epoch_weights(state: State, run_dir: Path, every: int) -> None:
    weights = {"model": state.model.state_dict(), "ema": state.ema.state_dict(), "epoch": state.epoch}
    if state.best_is_new:
        runs.save_torch(run_dir / runs.BEST, weights)
        state.best_is_new = False
    if every and state.epoch % every == 0:
        runs.save_torch(run_dir / "checkpoints" / f"epoch-{state.epoch:04d}.pt", weights)


def _dump_weights_for_tests(state: State, world: World) -> None:
    """Debug hook: with SLN_DEBUG_DUMP_WEIGHTS=DIR every rank saves its final weights and targets to
    DIR/rank-R.pt, so a test can check that all ranks ended with identical networks."""
    folder = os.environ.get("SLN_DEBUG_DUMP_WEIGHTS")
    if folder:
        runs.save_torch(Path(folder) / f"rank-{world.rank}.pt", {
            "model": state.model.state_dict(), "ema": state.ema.state_dict(), "targets": state.targets})


def _finish(state: State, run_dir: Path, config: Config, seconds: float) -> dict[str, Any]:
    runs.save_torch(run_dir / runs.FINAL, {"model": state.model.state_dict(), "ema": state.ema.state_dict(),
                                           "epoch": state.epoch})
    if state.probs_sum is not None:
        with atomic_write(run_dir / runs.PROBS, "wb") as f:
            # each row of softmax sums to one, so a row's total counts the times its sample was trained on
            seen = state.probs_sum.sum(dim=1, keepdim=True).clamp_min(1e-12)
            np.save(f, (state.probs_sum / seen).cpu().numpy())
    rows = runs.read_metrics(run_dir)
    summary = {
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "last": rows[-1] if rows else None,
        "best": state.best,
        "selection": "val_acc_ema" if state.best is not None else None,
        "sigma": config.sln.sigma,
        "seconds": seconds,
    }
    atomic_write_json(run_dir / runs.SUMMARY, summary)
    return summary


# --------------------------------------------------------------------------------------------------
# Randomness
# --------------------------------------------------------------------------------------------------


def _generator(device: torch.device, *key: Any) -> torch.Generator:
    """A generator seeded by (seed, epoch, purpose): an epoch's randomness does not depend on earlier
    epochs, so a resumed run draws exactly what the uninterrupted run drew."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return generator


def _rank_key(world: World) -> tuple[Any, ...]:
    """Added to the key of the generators whose draws must differ across ranks; empty with one process."""
    return () if world.size == 1 else ("rank", world.rank)


def _make_deterministic(seed: int) -> None:
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False

