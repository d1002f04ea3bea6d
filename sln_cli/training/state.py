"""The live state of a training run: the splits on the device, the networks, the optimizer and the targets;
how it is built from a config, and how it is saved to and restored from a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sln_cli.config import Config
from sln_cli.data import Dataset, Split
from sln_cli.data.batches import DeviceImages, FileImages
from sln_cli.data.sizing import input_size
from sln_cli.errors import SlnError
from sln_cli.labels.trainset import TrainSet
from sln_cli.methods import build_method
from sln_cli.methods.base import Method, MethodContext
from sln_cli.methods.sam import SharpnessAware
from sln_cli.models import build_model
from sln_cli.models.pair import NetworkPair
from sln_cli.rundir import runs
from sln_cli.training.devices import autocast, grad_scaler
from sln_cli.training.distributed import SINGLE, World
from sln_cli.training.ema import WeightEMA
from sln_cli.training.optim import new_optimizer

Images = DeviceImages | FileImages
PEER_SEED_OFFSET = 1_000_003  # co-teaching's and DivideMix's second network is initialised from seed + this


@dataclass
class Splits:
    """The splits on the device, with their labels as device tensors."""

    train: Images
    test: Images
    test_labels: Tensor
    val: Images | None = None
    val_labels: Tensor | None = None
    noisy_val: Images | None = None  # data.noisy_val: held out of `train`, scored on its noisy labels
    noisy_val_labels: Tensor | None = None
    noisy_val_clean: Tensor | None = None  # their true labels when known: a diagnostic, never a selection


@dataclass
class State:
    """Everything a checkpoint holds, live."""

    model: nn.Module
    ema: WeightEMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    targets: Tensor  # (N, K) float32: current per-sample targets (one-hot noisy labels until corrected)
    noisy: Tensor  # (N,) int64: the noisy labels as given
    clean: Tensor | None  # (N,) int64: true labels when known
    probs_sum: Tensor | None  # (N, K) float32: softmax summed over epochs (--record-probs)
    epoch: int = 0  # last completed epoch
    best: dict[str, Any] | None = None  # metrics row of the best validation epoch
    best_is_new: bool = False  # the last epoch improved on `best`: its weights go to best.pt
    compiled: nn.Module | None = None  # torch.compile of the training forward (run.compile)
    ddp: nn.Module | None = None  # under torchrun: the DistributedDataParallel wrapper of `model` that trains
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics rows so far, saved in the checkpoint
    method: Method = field(default_factory=Method)  # the training method (`sln_cli.methods`): loss and its state
    sam: SharpnessAware | None = None  # method.sam: the optimizer's second pass


def place_split(split: Split, dataset: Dataset, config: Config, device: torch.device, *,
                cache: bool = False) -> Images:
    """One split on the device: uint8 resident (in-memory datasets) or decoded by DataLoader workers."""
    # inputs stay fp32; autocast casts inside the network
    if split.images is not None:
        return DeviceImages(split.images.to(device), dataset.mean, dataset.std,
                            channels_last=config.run.channels_last, cache_plain=cache)
    data = config.data
    resize, crop = input_size(data, dataset)
    # gpu_decode says where to decode, not what: the workers' decode gives the same views (same seeds, same draws),
    # so a run made with it is evaluated, analysed or resumed on a CPU by the workers
    return FileImages(split, dataset.mean, dataset.std, device=device, resize=resize, crop=crop,
                      workers=data.workers, channels_last=config.run.channels_last,
                      gpu_decode=data.gpu_decode and device.type == "cuda")


def place_splits(trainset: TrainSet, config: Config, device: torch.device) -> Splits:
    dataset = trainset.dataset

    def place(split: Split, *, cache: bool) -> Images:
        return place_split(split, dataset, config, device, cache=cache)

    def labels(split) -> Tensor:
        return torch.as_tensor(np.asarray(split.labels), dtype=torch.int64, device=device)

    def tensor(values: np.ndarray | None) -> Tensor | None:
        return None if values is None else torch.as_tensor(values, dtype=torch.int64, device=device)

    val, held = dataset.val, trainset.noisy_val
    return Splits(
        train=place(dataset.train, cache=False), test=place(dataset.test, cache=True),
        test_labels=labels(dataset.test),
        val=None if val is None else place(val, cache=True), val_labels=None if val is None else labels(val),
        noisy_val=None if held is None else place(held.split, cache=True),
        noisy_val_labels=None if held is None else tensor(held.noisy),
        noisy_val_clean=None if held is None else tensor(held.clean),
    )


def initial_state(trainset: TrainSet, config: Config, device: torch.device, world: World = SINGLE) -> State:
    dataset = trainset.dataset
    torch.manual_seed(config.run.seed)  # initialisation
    model = _network(trainset, config, device)
    if config.method.name == "dividemix":  # its two networks train and evaluate as one model (the mean of logits)
        model = NetworkPair(model, _peer_network(trainset, config, device))
    ema = WeightEMA(model, decay=config.ema.decay)  # the training network and its EMA start equal
    method = _method(trainset, config, device, world)
    # co-teaching's peer joins the optimiser as a second parameter group: the same settings, its own momentum
    optimizer = new_optimizer(model, config.optim, device, method.networks())
    # a resolved config holds sam_rho whenever sam is on (catalog.apply_method)
    sam = SharpnessAware([model, *method.networks()], cast(float, config.method.sam_rho)) if config.method.sam else None
    noisy = torch.as_tensor(trainset.noisy, dtype=torch.int64, device=device)
    clean = None if trainset.clean is None else torch.as_tensor(trainset.clean, dtype=torch.int64, device=device)
    return State(
        model=model, ema=ema, optimizer=optimizer, scaler=grad_scaler(device, config.run.precision),
        targets=F.one_hot(noisy, dataset.num_classes).float(), noisy=noisy, clean=clean,
        probs_sum=torch.zeros(len(noisy), dataset.num_classes, device=device) if config.run.record_probs else None,
        method=method, sam=sam,
    )


def _network(trainset: TrainSet, config: Config, device: torch.device) -> nn.Module:
    dataset = trainset.dataset
    channels, size = image_shape(dataset, config)
    model = build_model(config.model.name, num_classes=dataset.num_classes, in_channels=channels,
                        image_size=size, weights=config.model.weights).to(device)
    return model.to(memory_format=torch.channels_last) if config.run.channels_last else model


def _peer_network(trainset: TrainSet, config: Config, device: torch.device) -> nn.Module:
    """A second network (co-teaching's peer, DivideMix's second): seeded apart from the model, global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed + PEER_SEED_OFFSET)
        return _network(trainset, config, device)


def _method(trainset: TrainSet, config: Config, device: torch.device, world: World) -> Method:
    def make_network() -> nn.Module:
        return _peer_network(trainset, config, device)

    dataset = trainset.dataset
    context = MethodContext(num_classes=dataset.num_classes, num_samples=len(trainset.noisy), device=device,
                            noisy=trainset.noisy, clean=trainset.clean, make_network=make_network,
                            forward=autocast(device, config.run.precision), world_size=world.size, rank=world.rank,
                            seed=config.run.seed, images=dataset.train.images, mean=dataset.mean, std=dataset.std,
                            padding=config.data.padding, flip=config.data.flip)
    return build_method(config.method, context)


def image_shape(dataset: Dataset, config: Config) -> tuple[int, int]:
    """(channels, side) of the network's input: the stored images', or the crop of a file-backed dataset."""
    images = dataset.train.images
    if images is not None:
        return images.shape[1], images.shape[-1]
    return 3, input_size(config.data, dataset)[1]


def to_checkpoint(state: State) -> dict[str, Any]:
    return {
        "epoch": state.epoch,
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(),
        "targets": state.targets,
        "probs_sum": state.probs_sum,
        # ELR's targets, co-teaching's peer (its momentum is in "optimizer"), SOP's u, v and their optimiser
        "method": state.method.state_dict(),
        "best": state.best,
        "torch_rng": torch.get_rng_state(),
        "metrics": state.history,  # the metrics.jsonl this checkpoint agrees with: resume rewrites it from here
    }


# Optimizer settings that choose an implementation for this machine, not hyperparameters of the run.
_KERNEL_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """`load_state_dict`, then this device's kernel flags back in every parameter group.

    load_state_dict restores the saved groups' `fused`/`foreach` too: a CPU checkpoint (foreach) resumed on CUDA
    would drop the fused kernel, and with fp16 fail at the first step, since the optimizer still tells the
    GradScaler it takes the scale itself ("Expected grad_scale and found_inf to be None").
    """
    optimizer.load_state_dict(saved)
    for group in optimizer.param_groups:
        for flag in _KERNEL_FLAGS:
            if flag in optimizer.defaults:
                group[flag] = optimizer.defaults[flag]


def restore(state: State, run_dir: Path, device: torch.device, world: World = SINGLE) -> None:
    """Every rank loads the checkpoint (on several nodes the run directory must be on a shared filesystem);
    rank 0 then makes metrics.jsonl agree with it, whatever a kill or a full disk left there."""
    path = run_dir / runs.CHECKPOINT
    if not path.is_file():
        if world.is_main:
            runs.truncate_metrics(run_dir, 0)  # killed before the first checkpoint: start over in place
        return
    saved = runs.load_torch(path, map_location=device)
    _check_checkpoint(saved, path, state)
    try:
        state.model.load_state_dict(saved["model"])
        state.ema.load_state_dict(saved["ema"])
        load_optimizer_state(state.optimizer, saved["optimizer"])
        state.method.load_state_dict(saved.get("method", {}))  # absent from checkpoints made before methods
        state.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"].cpu())  # loaded onto `device`; the CPU generator wants it back
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise SlnError(f"{path} does not fit this run's network or optimizer ({exc.__class__.__name__}); was the "
                       "run directory modified?") from None
    state.targets, state.epoch, state.best = saved["targets"], saved["epoch"], saved["best"]
    if state.probs_sum is not None and saved["probs_sum"] is not None:
        state.probs_sum = saved["probs_sum"]
    if world.is_main:
        if isinstance(saved.get("metrics"), list):
            runs.write_metrics(run_dir, saved["metrics"])
        else:  # a checkpoint from before checkpoints carried their metrics
            runs.truncate_metrics(run_dir, state.epoch)
    state.history = saved["metrics"] if isinstance(saved.get("metrics"), list) else runs.read_metrics(run_dir)


_CHECKPOINT_KEYS = {"epoch": int, "model": dict, "ema": dict, "optimizer": dict, "scaler": dict,
                    "targets": Tensor, "torch_rng": Tensor}


def _check_checkpoint(saved: Any, path: Path, state: State) -> None:
    """A checkpoint that unpickles but is not a whole sln checkpoint is a one-line error, not a KeyError."""
    if not isinstance(saved, dict):
        raise SlnError(f"{path} is not an sln checkpoint (it holds a {type(saved).__name__}); restore it or start "
                       "a new run")
    for key, kind in _CHECKPOINT_KEYS.items():
        if not isinstance(saved.get(key), kind) or (kind is int and isinstance(saved[key], bool)):
            raise SlnError(f"{path} lacks a valid `{key}`: it is not a whole sln checkpoint; restore it, or delete "
                           "it to train the run again from the start")
    if "best" not in saved or "probs_sum" not in saved:
        raise SlnError(f"{path} lacks `best` or `probs_sum`: it is not a whole sln checkpoint")
    if saved["targets"].shape != state.targets.shape:
        raise SlnError(f"the checkpoint {path} was made with another training set; resume with its own data")
