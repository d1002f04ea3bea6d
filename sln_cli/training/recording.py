"""The averaged softmax a run records (`run.record_probs`, probs.npy: the input of `corrupt --mode dependent`), and
the optimiser the official instance-dependent recipe re-creates every epoch.

Two ways of recording (`run.record_probs_mode`), summed into `State.probs_sum` and divided at the end by each row's
total (the number of times the sample was seen):
- `batch` (cheap, sln's original): the train-mode softmax of each training batch, before its update;
- `eval` (the official recipe, chenpf1025/IDN `cifar10_gen_dependent.py`): after every epoch, an eval-mode pass over
  the whole training set in dataset order, with the training augmentation as its loader applies it; the sum over
  epochs divided by the number of epochs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sln_cli.config import Config, OptimConfig
from sln_cli.data.batches import Augmentation
from sln_cli.training import distributed
from sln_cli.training.devices import autocast
from sln_cli.training.distributed import SINGLE, World
from sln_cli.training.optim import new_optimizer

if TYPE_CHECKING:
    from sln_cli.training.state import Images, State

MODES = ("batch", "eval")


def records_batches(config: Config) -> bool:
    """Whether the training pass adds each batch's softmax (the `batch` mode)."""
    return config.run.record_probs and config.run.record_probs_mode == "batch"


@torch.inference_mode()
def record_eval_pass(state: State, train: Images, config: Config, generator: torch.Generator, *,
                     world: World = SINGLE) -> None:
    """The `eval` mode, once per epoch: add the eval-mode softmax of every training sample, augmented as in training.

    Under torchrun each rank scores its shard of the dataset order and the sums are reduced over the ranks.
    """
    if state.probs_sum is None or config.run.record_probs_mode != "eval":
        return
    model = state.model.eval()  # BatchNorm uses its running statistics; no dropout
    forward = autocast(state.probs_sum.device, config.run.precision)
    probs = state.probs_sum if world.size == 1 else torch.zeros_like(state.probs_sum)
    order = distributed.shard(torch.arange(len(train), device=state.probs_sum.device), world)  # dataset order
    augmentation = Augmentation(padding=config.data.padding, flip=config.data.flip)
    for images, index in train.batches(order, config.run.eval_batch_size, augmentation=augmentation,
                                       generator=generator):
        with forward():
            logits = model(images)  # (B, K)
        probs.index_add_(0, index, torch.softmax(logits.float(), dim=1))
    if world.size > 1:
        state.probs_sum += distributed.all_reduce_sum(probs, world)


def reset_optimizer(state: State, optim: OptimConfig, device: torch.device) -> None:
    """Start an epoch with a fresh optimiser when the config asks for it (the learning rate is set right after)."""
    if optim.reset_each_epoch:
        state.optimizer = new_optimizer(state.model, optim, device, state.method.networks())

