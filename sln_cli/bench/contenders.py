"""The `sln` side of the benchmark: the real training pass, the hardware ceiling, and the pieces (augmentation,
EMA update, evaluation), each a callable that does a fixed amount of work and returns how much it did."""

from __future__ import annotations

import torch

from sln_cli.bench.hardware import synchronize
from sln_cli.config import Config
from sln_cli.data.augment import normalize
from sln_cli.data.batches import Augmentation, DeviceImages
from sln_cli.labels.trainset import TrainSet
from sln_cli.methods.sln import add_label_noise, soft_cross_entropy
from sln_cli.render.progress import TrainProgress
from sln_cli.training.devices import autocast, set_determinism
from sln_cli.training.epoch import evaluate, train_pass
from sln_cli.training.state import initial_state, place_splits


class SlnRun:
    """`sln_cli.training.epoch.train_pass` on a `State` and `Splits` from `sln_cli.training.state`:
    the very code `sln train`
    runs each epoch (data, augmentation, label noise, step, EMA, metrics), over `trainset`."""

    def __init__(self, trainset: TrainSet, warmup: TrainSet, config: Config, device: torch.device) -> None:
        self.config, self.device = config, device
        self.state = initial_state(trainset, config, device)
        self.splits = place_splits(trainset, config, device)
        # A shorter training split for the warm-up pass; its indices are a prefix of the real one's.
        self.warmup_images = place_splits(warmup, config, device).train
        self.progress = TrainProgress(1, quiet=True)
        self.epoch = 0
        self.row: dict = {}  # the last pass's metrics (DivideMix's labelled fraction sets its expected cost)
        self.forward = autocast(device, config.run.precision)

    def train_epoch(self, *, warmup: bool = False) -> int:
        """One `train_pass` over the split (steps × batch size images); returns the images trained on."""
        images = self.warmup_images if warmup else self.splits.train
        _sln_cudnn(self.device, self.config.run.deterministic)
        self.epoch += 1  # a fresh shuffle and fresh noise, as a new epoch gets
        self.row = train_pass(self.state, images, self.config, self.config.sln.sigma, self.epoch, self.device,
                              self.progress)
        synchronize(self.device)
        return len(images)

    def evaluate(self) -> int:
        """`sln_cli.training.epoch.evaluate` of the raw and the EMA network over the test split; returns forward
        images."""
        _sln_cudnn(self.device)
        models = [self.state.model, self.state.ema.module]
        evaluate(models, self.splits.test, self.splits.test_labels, batch_size=self.config.run.eval_batch_size,
                 forward=self.forward)
        synchronize(self.device)
        return len(models) * len(self.splits.test)

    @torch.inference_mode()
    def forward_only(self) -> int:
        """The same forward passes as `evaluate`, with nothing around them: what evaluation cannot beat."""
        _sln_cudnn(self.device)
        models = [self.state.model.eval(), self.state.ema.module.eval()]
        test = self.splits.test
        order = torch.arange(len(test), device=self.device)
        for batch, _ in test.batches(order, self.config.run.eval_batch_size):
            for model in models:
                with self.forward():
                    model(batch)
        synchronize(self.device)
        return len(models) * len(test)

    def ema_updates(self, count: int) -> int:
        """`count` calls of the weight-EMA update that follows each optimizer step."""
        for _ in range(count):
            self.state.ema.update()
        synchronize(self.device)
        return count


class CeilingRun:
    """Forward + backward + optimizer step on one resident, already normalised batch: the hardware's limit for this
    model, precision and layout (same model, optimizer and scaler as `SlnRun`; no data, no EMA, no metrics)."""

    def __init__(self, trainset: TrainSet, config: Config, device: torch.device) -> None:
        self.config, self.device = config, device
        state = initial_state(trainset, config, device)
        self.model, self.optimizer, self.scaler = state.model, state.optimizer, state.scaler
        dataset, batch_size = trainset.dataset, config.optim.batch_size
        assert dataset.train.images is not None, "the benchmark's dataset is in memory"
        self.images = normalize(dataset.train.images[:batch_size].to(device), dataset.mean, dataset.std,
                                channels_last=config.run.channels_last)  # (B, C, H, W)
        generator = torch.Generator(device=device).manual_seed(config.run.seed)
        self.targets = add_label_noise(state.targets[:batch_size], config.sln.sigma, generator)  # (B, K)
        self.forward = autocast(device, config.run.precision)

    def train_steps(self, steps: int) -> int:
        _sln_cudnn(self.device)
        self.model.train()
        for _ in range(steps):
            with self.forward():
                logits = self.model(self.images)
            loss = soft_cross_entropy(logits, self.targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        synchronize(self.device)
        return steps * len(self.images)


def augment_pass(images: DeviceImages, batch_size: int, generator: torch.Generator) -> int:
    """The training augmentation alone: batched crop + flip + normalise of every image of a resident split."""
    order = torch.randperm(len(images), generator=generator, device=generator.device)
    count = 0
    for batch, _ in images.batches(order, batch_size, augmentation=Augmentation(), generator=generator):
        count += len(batch)
    synchronize(images.images.device)
    return count


def _sln_cudnn(device: torch.device, deterministic: bool = True) -> None:
    # `sln train` follows run.deterministic (default on: deterministic cuDNN kernels); the reference autotunes.
    if device.type == "cuda":
        set_determinism(deterministic)
