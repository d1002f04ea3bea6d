"""Post-training analysis of a model: confidence statistics, Hessian spectrum and loss landscape.

One signature everywhere: an analyzer takes `model: nn.Module`, `batches: Sequence[Batch]` (a fixed list of
`(inputs, labels)` pairs already on the model's device) and `loss_fn: LossFn = cross_entropy_loss`, where
`loss_fn(model, batch)` returns the mean loss of that batch as a scalar tensor. A loss over several batches
is their mean weighted by batch size, i.e. the mean over all samples, whatever the batch sizes are.
Models are analysed in eval mode (BatchNorm uses its running statistics, dropout is off) and get their
train/eval flags back afterwards. The submodules are imported by path (`sln_cli.analyze.hessian`, ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from sln_cli.errors import SlnError

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs float, labels or targets), first dimension = samples
LossFn = Callable[[nn.Module, Batch], torch.Tensor]  # mean loss of one batch, a scalar tensor


def cross_entropy_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the model's logits against integer labels: the default `LossFn`."""
    inputs, labels = batch
    return nn.functional.cross_entropy(model(inputs), labels)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then give each its own train/eval flag back."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.train(training)


def batch_weights(batches: Sequence[Batch]) -> list[float]:
    """Each batch's share of the samples, so that a weighted sum of batch means is the mean over samples."""
    if len(batches) == 0:
        raise SlnError("no batches to analyse; pass at least one (inputs, labels) batch")
    sizes = [int(batch[0].shape[0]) for batch in batches]
    if min(sizes) <= 0:
        raise SlnError("an analysis batch is empty; drop empty batches before analysing")
    return [size / sum(sizes) for size in sizes]


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs the analyses perturb or differentiate, in `named_parameters` order."""
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    if not named:
        raise SlnError("the model has no trainable parameters to analyse; unfreeze them first")
    return named


def mean_loss(model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn = cross_entropy_loss) -> float:
    """The sample-weighted mean loss over `batches`, in eval mode and without building a graph."""
    weights = batch_weights(batches)
    with evaluation_mode(model), torch.no_grad():
        return sum(weight * float(loss_fn(model, batch)) for weight, batch in zip(weights, batches, strict=True))
