"""The training loop of SLN, SLN-MO and SLN-MO-LC (Chen et al., ICLR 2021), resumable and device-resident.

Every epoch: set the learning rate; from epoch `correction + 1` on, correct the targets with the EMA
network and stop the label noise; train one pass with fresh Gaussian noise on the targets; evaluate the
raw (SLN) and EMA (SLN-MO) networks; log one metrics line; checkpoint atomically. Under torchrun every
process runs this loop on its shard of each epoch (see `sln_cli.training.distributed`); rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from sln_cli import methods
from sln_cli.config import Config, OptimConfig, dump
from sln_cli.errors import Interrupted, NonFiniteLoss, SlnError
from sln_cli.labels import noisy_val
from sln_cli.labels.labelfile import write_label_file
from sln_cli.labels.trainset import TrainSet, build_trainset
from sln_cli.methods.sln import correct_labels, sln_schedule
from sln_cli.render.progress import TrainProgress
from sln_cli.rundir import runs
from sln_cli.rundir.files import atomic_write, atomic_write_json, atomic_write_text
from sln_cli.rundir.keep import keep_state
from sln_cli.training import distributed, memory
from sln_cli.training.devices import compile_mode, set_determinism
from sln_cli.training.distributed import SINGLE, World
from sln_cli.training.epoch import epoch_generator, epoch_samples, evaluate_both, rank_key, train_pass
from sln_cli.training.recording import record_eval_pass, reset_optimizer
from sln_cli.training.state import Splits, State, image_shape, initial_state, place_splits, restore, to_checkpoint
from sln_cli.training.tensorboard import open_logger, require_tensorboard

EpochHook = Callable[[dict[str, Any]], None]


def train(config: Config, *, preset: str | None = None, resume: Path | None = None, quiet: bool = False,
          overwrite: bool = False, console: Any = None, on_epoch: EpochHook | None = None) -> dict[str, Any]:
    """Train as `config` says; write the run directory; return the summary (also in summary.json).

    Under torchrun every process calls this and gets the same summary; only rank 0 writes and shows progress.
    `on_epoch(row)` runs after each epoch's files are written (`sln tune` reports to its pruner there; an exception
    it raises stops the run, which stays resumable).
    """
    world = distributed.detect()
    device = distributed.device_for(world, config.run.device, sync_batchnorm=config.run.sync_batchnorm)
    with distributed.process_group(world, device):
        return _train(config, world, device, preset=preset, resume=resume, quiet=quiet, overwrite=overwrite,
                      console=console, on_epoch=on_epoch)


def _train(config: Config, world: World, device: torch.device, *, preset: str | None, resume: Path | None,
           quiet: bool, overwrite: bool, console: Any, on_epoch: EpochHook | None = None) -> dict[str, Any]:
    if config.run.tensorboard:
        require_tensorboard()  # before any file is written
    if config.run.cpu_threads > 0:
        torch.set_num_threads(check_threads(config.run.cpu_threads))
    torch.manual_seed(config.run.seed)
    set_determinism(config.run.deterministic)
    with distributed.main_first(world) if config.data.download else contextlib.nullcontext():
        trainset = build_trainset(config.data, config.noise)  # a download happens once, on rank 0
    config = methods.settle(config, trainset.noisy, trainset.clean, manifest=trainset.labels.manifest,
                            replaced=trainset.labels.source_index)
    splits = place_splits(trainset, config, device)
    if config.run.memory_check:
        _check_memory(trainset, config, device)  # before the model exists: refused in one line, not killed
    state = initial_state(trainset, config, device, world)
    with contextlib.ExitStack() as held:  # rank 0 holds the run's lock until this run ends, however it ends
        def take_run_dir() -> str:  # rank 0 names the directory (timestamps differ across ranks) and writes it
            run_dir = resume if resume is not None else runs.run_dir_path(config.run.out, preset)
            held.enter_context(runs.holding_run(run_dir, new=resume is None, overwrite=overwrite))
            if resume is None:
                _start_run_dir(run_dir, config, trainset, device, world)
            return str(run_dir)

        run_dir = Path(distributed.from_main(world, take_run_dir))
        if resume is not None:
            held_out = None if trainset.noisy_val is None else trainset.noisy_val.indices
            noisy_val.check_recorded(run_dir, held_out)  # a resumed or branched run holds out the same samples
            restore(state, run_dir, device, world)  # every rank loads the checkpoint
        return _train_epochs(state, splits, trainset, config, world, device, run_dir, quiet=quiet, console=console,
                             on_epoch=on_epoch)


def _train_epochs(state: State, splits: Splits, trainset: TrainSet, config: Config, world: World,
                  device: torch.device, run_dir: Path, *, quiet: bool, console: Any,
                  on_epoch: EpochHook | None = None) -> dict[str, Any]:
    state.ddp = distributed.wrap(state.model, world, device, sync_batchnorm=config.run.sync_batchnorm)
    state.compiled = _compiled(state.model if state.ddp is None else state.ddp, config.run.compile, device, world)

    progress = TrainProgress(config.optim.epochs, quiet=quiet or not world.is_main, console=console)
    board = open_logger(run_dir, enabled=config.run.tensorboard and world.is_main, first_epoch=state.epoch + 1)
    started = time.perf_counter()
    with progress:
        progress.log(f"run directory: {run_dir}  ({_describe(trainset, config, device, world)})")
        progress.start(state.epoch + 1)
        try:
            for epoch in range(state.epoch + 1, config.optim.epochs + 1):
                epoch_started = time.perf_counter()
                row = run_epoch(state, splits, config, epoch, device, progress, world)
                # the epoch's whole wall time (correction, training, recording, evaluation): `sln report`'s cost
                row.update(wall_seconds=time.perf_counter() - epoch_started, devices=world.size)
                _remember_best(state, row, selection_key(config, has_val=splits.val is not None))
                state.epoch = epoch
                if world.is_main:
                    _save_epoch(state, run_dir, row, config)
                    board.log_epoch(row)
                progress.end_epoch(row)
                if on_epoch is not None:
                    on_epoch(row)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted during epoch {state.epoch + 1}; `sln train --resume {run_dir}` "
                              "continues from the last checkpoint") from None
        except NonFiniteLoss as exc:
            kept = f"the last checkpoint in {run_dir} is kept" if (run_dir / runs.CHECKPOINT).is_file() \
                else f"no epoch finished, so {run_dir} holds no checkpoint"
            raise NonFiniteLoss(f"{exc}; {kept}") from None
    board.finish({"raw": state.model, "ema": state.ema.module}, splits.test, splits.test_labels, epoch=state.epoch,
                 batch_size=config.run.eval_batch_size)
    return distributed.from_main(world, lambda: _finish(state, run_dir, config, time.perf_counter() - started,
                                                        len(splits.noisy_val) if splits.noisy_val is not None else 0,
                                                        devices=world.size))


# --------------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------------


def run_epoch(state: State, splits: Splits, config: Config, epoch: int, device: torch.device,
              progress: TrainProgress, world: World = SINGLE) -> dict[str, Any]:
    """One epoch of the method, in the paper's order; returns its metrics row."""
    optim = config.optim
    # 1. learning rate: lr * gamma^(number of milestones already passed), or the cosine schedule; on a fresh
    # optimiser if the recipe says so
    reset_optimizer(state, optim, device)
    lr = learning_rate(optim, epoch)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    # 2. label correction (SLN-MO-LC): after epoch `correction`, sigma is 0 and targets are re-mixed
    sigma, correcting = sln_schedule(config.sln, epoch)
    row: dict[str, Any] = {"epoch": epoch}
    samples = epoch_samples(state, config, epoch)  # None: the whole training set
    if correcting:
        generator = epoch_generator(device, config.run.seed, epoch, "lc", *rank_key(world))
        row.update(correct_labels(state, splits.train, config, generator, world=world, samples=samples))
    # 3. one pass over the training set (under torchrun: this rank's shard of it)
    started = time.perf_counter()
    row.update(train_pass(state, splits.train, config, sigma, epoch, device, progress, world=world,
                          samples=samples))
    seconds = time.perf_counter() - started
    # the official IDN recipe's probability recording: an eval-mode pass over the (augmented) training set
    record_eval_pass(state, splits.train, config, epoch_generator(device, config.run.seed, epoch, "probs",
                                                                  *rank_key(world)), world=world)
    # 4. evaluate the raw network (SLN) and the EMA network (SLN-MO)
    row.update(evaluate_both(state, splits, config, world))
    # images/s of all ranks together: each rank went through its shard in about `seconds`
    trained = len(splits.train) if samples is None else samples.numel()
    row.update(sigma=sigma, lr=lr, epoch_seconds=seconds, images_per_second=trained / seconds)
    return row


FORCE_THREADS = "SLN_FORCE_THREADS"  # =1: allow run.cpu_threads above this machine's cores (oversubscription)


def check_threads(threads: int) -> int:
    """run.cpu_threads, at most this machine's cores (those this process may use) unless $SLN_FORCE_THREADS=1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads > cores and os.environ.get(FORCE_THREADS) != "1":
        raise SlnError(f"run.cpu_threads={threads} is more than the {cores} cores this process may use; give at "
                       f"most {cores}, or set {FORCE_THREADS}=1 to oversubscribe on purpose")
    return threads


def learning_rate(optim: OptimConfig, epoch: int) -> float:
    """The network's learning rate in `epoch` (from 1): step decay at the milestones, or cosine annealing as torch's
    CosineAnnealingLR(T_max=epochs, eta_min=lr_min) stepped once per epoch (the official SOP recipe)."""
    lr = optim.lr * optim.lr_gamma ** sum(epoch > m for m in optim.lr_milestones)
    if optim.lr_schedule == "cosine":
        lr = optim.lr_min + (lr - optim.lr_min) * (1 + math.cos(math.pi * (epoch - 1) / optim.epochs)) / 2
    return lr


def _check_memory(trainset: TrainSet, config: Config, device: torch.device) -> None:
    dataset = trainset.dataset
    channels, side = image_shape(dataset, config)
    memory.check_fits(config.model.name, num_classes=dataset.num_classes, channels=channels, side=side,
                      batch_size=config.optim.batch_size, eval_batch_size=config.run.eval_batch_size, device=device,
                      file_backed=dataset.train.images is None)


def _compiled(network: nn.Module, mode: str, device: torch.device, world: World = SINGLE) -> nn.Module | None:
    """`run.compile=compile`: torch.compile the training forward; CUDA graphs on one GPU (`devices.compile_mode`)."""
    if mode == "none":
        return None
    return cast(nn.Module, torch.compile(network, mode=compile_mode(device, world_size=world.size), dynamic=False))


# --------------------------------------------------------------------------------------------------
# The run directory
# --------------------------------------------------------------------------------------------------


def _start_run_dir(run_dir: Path, config: Config, trainset: TrainSet, device: torch.device, world: World) -> None:
    """The files a new run starts with, in the directory `runs.holding_run` claimed."""
    if trainset.noisy_val is not None:  # before config.yaml, which makes the directory a run a resume accepts
        noisy_val.write(run_dir, trainset.noisy_val.indices)
    atomic_write_text(run_dir / runs.CONFIG, dump(config))
    runs.write_meta(run_dir, device=str(device), seed=config.run.seed,
                    extra={"num_train": len(trainset.noisy), "num_test": len(trainset.dataset.test.labels),
                           "world_size": world.size, "input_side": image_shape(trainset.dataset, config)[1],
                           "num_noisy_val": 0 if trainset.noisy_val is None else len(trainset.noisy_val.noisy)})
    write_label_file(run_dir / "labels.csv", trainset.labels)


def _describe(trainset: TrainSet, config: Config, device: torch.device, world: World) -> str:
    rate = None if trainset.clean is None else float((trainset.noisy != trainset.clean).mean())
    noise = "unknown noise" if rate is None else f"realised noise {rate:.1%}"
    where = str(device) if world.size == 1 else f"{world.size} processes on {device.type}"
    held = "" if trainset.noisy_val is None else f" + {len(trainset.noisy_val.noisy)} noisy val held out"
    side = image_shape(trainset.dataset, config)[1]
    return (f"{config.data.dataset}: {len(trainset.noisy)} train{held} / {len(trainset.dataset.test.labels)} test, "
            f"{noise}, {config.model.name} on {side}×{side}, {_method(config)}, {where}, {config.run.precision}")


def _method(config: Config) -> str:
    """`method gce (gce_q=0.7)`, `sigma 0.5` for SLN, `+ SAM (rho 0.05)`."""
    method = config.method
    name = f"sigma {config.sln.sigma}" if method.name == "sln" else f"method {method.name}"
    if settings := {k: v for k, v in methods.settings_of(method).items() if k != "sam_rho"}:
        name += f" ({', '.join(f'{k}={v}' for k, v in settings.items())})"
    if method.name != "sln" and config.sln.sigma > 0:
        name += f", sigma {config.sln.sigma}"
    return name + (f", SAM rho {method.sam_rho}" if method.sam else "")


# --------------------------------------------------------------------------------------------------
# Per-epoch files and results
# --------------------------------------------------------------------------------------------------


def _save_epoch(state: State, run_dir: Path, row: dict[str, Any], config: Config) -> None:
    """Rank 0 only: any kept weights, the resumable checkpoint, then the metrics line of the epoch just done.

    In that order, a failure (a kill, a full disk) never leaves a metrics line ahead of the checkpoint; the
    checkpoint holds the metrics rows it agrees with, and `--resume` rewrites metrics.jsonl from them."""
    state.history.append(row)
    _keep_epoch_weights(state, run_dir, config.run.keep_checkpoints)  # before the checkpoint that names them
    keep_state(state.epoch, run_dir, config.run.keep_state_at, lambda: to_checkpoint(state))  # LC runs start there
    if state.epoch % config.run.checkpoint_every == 0 or state.epoch == config.optim.epochs:
        runs.save_torch(run_dir / runs.CHECKPOINT, to_checkpoint(state))
    runs.append_metrics(run_dir, row)


def selection_key(config: Config, *, has_val: bool) -> str | None:
    """The metric best.pt is selected on, never the test set: the dataset's own validation split (EMA network),
    else the noisy validation split held out of training (`data.noisy_val`, EMA network unless asked)."""
    if has_val:
        return "val_acc_ema"
    if config.data.noisy_val is not None:
        return "noisy_val_acc_ema" if config.data.noisy_val_select == "ema" else "noisy_val_acc"
    return None


def _remember_best(state: State, row: dict[str, Any], key: str | None) -> None:
    """The first epoch of the highest `key` so far becomes `best` (its weights go to best.pt)."""
    if key is not None and (state.best is None or row[key] > state.best[key]):
        state.best, state.best_is_new = dict(row), True


def _keep_epoch_weights(state: State, run_dir: Path, every: int) -> None:
    weights = {"model": state.model.state_dict(), "ema": state.ema.state_dict(), "epoch": state.epoch}
    if state.best_is_new:
        runs.save_torch(run_dir / runs.BEST, weights)
        state.best_is_new = False
    if every and state.epoch % every == 0:
        runs.save_torch(run_dir / "checkpoints" / f"epoch-{state.epoch:04d}.pt", weights)


def _wall_seconds(rows: list[dict[str, Any]]) -> float | None:
    """The sum of the epochs' wall times, or None when an epoch predates their recording."""
    if not rows or any(not isinstance(row.get("wall_seconds"), int | float) for row in rows):
        return None
    return float(sum(row["wall_seconds"] for row in rows))


def _finish(state: State, run_dir: Path, config: Config, seconds: float, held_out: int, *,
            devices: int = 1) -> dict[str, Any]:
    runs.save_torch(run_dir / runs.FINAL, {"model": state.model.state_dict(), "ema": state.ema.state_dict(),
                                           "epoch": state.epoch})
    if state.probs_sum is not None:
        with atomic_write(run_dir / runs.PROBS, "wb") as f:
            # each row of softmax sums to one, so a row's total counts the times its sample was trained on
            seen = state.probs_sum.sum(dim=1, keepdim=True).clamp_min(1e-12)
            np.save(f, (state.probs_sum / seen).cpu().numpy())
    rows = runs.read_metrics(run_dir)
    wall = _wall_seconds(rows)
    summary = {
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "last": rows[-1] if rows else None,
        "best": state.best,
        "selection": selection_key(config, has_val=state.best is not None and "val_acc_ema" in state.best)
        if state.best is not None else None,
        "noisy_val": None if config.data.noisy_val is None else
        {"samples": held_out, "seed": config.data.noisy_val_seed},
        "sigma": config.sln.sigma,
        "method": config.method.name,
        "method_names": {weights: methods.display_name(config, weights) for weights in ("raw", "ema")},
        "seconds": seconds,
        # what the run cost over all its sessions (resumes included): the epochs' wall time, times the processes
        "wall_seconds": wall,
        "devices": devices,
        "device_hours": None if wall is None else wall * devices / 3600,
    }
    atomic_write_json(run_dir / runs.SUMMARY, summary)
    return summary


