"""SOP and SOP+ (Liu, Zhu, Qu & You, "Robust Training under Label Noise by Over-parameterization", ICML 2022).

Checked against the official code, shengliu66/SOP at commit 4d991cedf1fafec98f858a213ccc31e52318a77f:
`model/loss.py` (`overparametrization_loss.forward`: every term below), `train.py` (u, v's own SGD: lr_u, lr_v,
no momentum, no weight decay, no schedule; init N(0, 1e-8²) from `config_cifar100.json` `reparam_arch`),
`trainer/trainer.py` (one forward of weak and strong views concatenated; u, v stepped, then the network).
Per sample i with given one-hot label y_i, u_i (1 number) and v_i (K numbers):
  s_i = clamp(u_i² y_i, 0, 1) − clamp(v_i² (1 − y_i), 0, 1)                                (U_square − V_square)
  q_i = clamp(normalize₁(clamp(softmax(z_i) + u_i² y_i − sg(v_i² (1 − y_i)), 1e-4)), 1e-4, 1)   (prediction)
  L = mean_i −Σ_k t_ik log q_ik  +  (1/B) Σ_i ‖onehot(argmax z_i) + s_i − t_i‖²                 (CE + MSE_loss)
SOP+ adds ratio_balance · (−Σ_k (1/K) log clamp(mean_i q_ik, 1e-4, 1))                        (balance_kl)
and ratio_consistency · mean_i KL(sg(softmax(z_i)) ‖ softmax(z'_i)), z' the strong view's logits (consistency_loss).
t_i is the target the step passes: the one-hot given label, plus SLN's noise when sln.sigma > 0 (where y_i is a
target: the CE and the MSE's target); the masks that place u on the given class and v on the others stay y_i.
Under torchrun each rank steps the u, v rows of its shard and `end_pass` averages the changes over the ranks (see
there); SOP+'s balance term takes the mean prediction of the rank's own batch, as the official code takes its one
process's batch (`model/loss.py` @ 9a3fd24073fd4d0877e848e46e9b827d14c7fccb: `torch.mean(prediction, dim=0)`;
`trainer/trainer.py` @ 7abd9761ed0fda4112e58e2e038bf029ae7a47cb: one device, no DistributedDataParallel).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sln_cli.data.augment import channel_constants
from sln_cli.data.strong import strong_views
from sln_cli.errors import SlnError
from sln_cli.methods.base import Configured, MethodContext, probabilities
from sln_cli.training import distributed
from sln_cli.training.distributed import World

EPS = 1e-4  # the official clamps and normalisation epsilon
INIT_STD = 1e-8  # u, v ~ N(0, 1e-8²): config_cifar100.json reparam_arch.args (mean 0, std 1e-8)
SEED_OFFSET = 2_000_003  # u, v's initialisation draws from seed + this, apart from the network's


def sop_terms(logits: Tensor, targets: Tensor, labels: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(the CE term, the MSE term, the prediction q (B, K)) of `overparametrization_loss.forward`.

    logits (B, K); targets t (B, K); labels y (B, K) one-hot given labels; u (B, 1) and v (B, K) of the batch.
    """
    u_square = (u ** 2 * labels).clamp(0, 1)  # (B, K): u_i² on the given class only
    v_square = (v ** 2 * (1 - labels)).clamp(0, 1)  # (B, K): v_i² on the other classes
    prediction = (probabilities(logits) + u_square - v_square.detach()).clamp_min(EPS)  # v: no CE gradient
    prediction = F.normalize(prediction, p=1, eps=EPS).clamp(EPS, 1.0)
    hard = F.one_hot(logits.detach().argmax(dim=1), logits.shape[1]).float()  # soft_to_hard: no gradient
    mse = F.mse_loss(hard + u_square - v_square, targets, reduction="sum") / len(targets)
    cross_entropy = -(targets * prediction.log()).sum(dim=1).mean()
    return cross_entropy, mse, prediction


def balance(prediction: Tensor) -> Tensor:
    """KL(uniform ‖ mean prediction) up to a constant: −Σ_k (1/K) log clamp(mean_i q_ik, 1e-4, 1)."""
    mean = prediction.mean(dim=0).clamp(EPS, 1.0)
    return -(mean.log() / prediction.shape[1]).sum()


def consistency(weak: Tensor, strong: Tensor) -> Tensor:
    """mean_i KL(sg(softmax(weak_i)) ‖ softmax(strong_i)): the weak view's prediction is the fixed target."""
    target = probabilities(weak).detach()
    return F.kl_div(F.log_softmax(strong.float(), dim=1), target, reduction="none").sum(dim=1).mean()


class SparseOverParameterization(Configured):
    """`sop`: the network plus per-sample u (N, 1) and v (N, K), trained by their own SGD."""

    def __init__(self, settings: Any, context: MethodContext) -> None:
        super().__init__(settings, context)
        generator = torch.Generator().manual_seed(context.seed + SEED_OFFSET)
        n, k = context.num_samples, context.num_classes  # the training set this run trains on
        self.u = nn.Parameter(torch.empty(n, 1).normal_(0.0, INIT_STD, generator=generator).to(context.device))
        self.v = nn.Parameter(torch.empty(n, k).normal_(0.0, INIT_STD, generator=generator).to(context.device))
        # train.py: {u: lr_u}, {v: lr_v}, momentum 0, weight decay 0 (optimizer_overparametrization)
        self.optimizer = torch.optim.SGD([{"params": [self.u], "lr": settings.lr_u},
                                          {"params": [self.v], "lr": settings.lr_v}],
                                         lr=settings.lr_u, momentum=0.0, weight_decay=0.0)
        self.strong_logits: Tensor | None = None  # SOP+: the strong views' logits of the current batch
        self.world_size = context.world_size
        self.before_pass: Tensor | None = None  # under torchrun: u and v as the pass started, (N, 1 + K)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer]

    # Under torchrun each rank steps u and v on its own shard's samples only, with no per-step collective (a dense
    # all-reduce of their gradients would move N × (K + 1) numbers every step). A pass visits each sample on one
    # rank, so the rows a rank changed are its own; `end_pass` adds up the changes of all ranks and divides them by
    # the number of ranks: with plain SGD (no momentum, no decay) that is the update of the gradient averaged over
    # the ranks, as DDP averages the network's, so u and v move as in one process at the global batch.

    def start_epoch(self, epoch: int) -> None:
        if self.world_size > 1:
            self.before_pass = torch.cat([self.u.detach(), self.v.detach()], dim=1).clone()

    def end_pass(self, world: World) -> None:
        if self.before_pass is None:
            return
        with torch.no_grad():
            change = torch.cat([self.u, self.v], dim=1) - self.before_pass  # (N, 1 + K): this rank's rows only
            updated = self.before_pass + distributed.all_reduce_sum(change, world) / world.size
            self.u.copy_(updated[:, :1])
            self.v.copy_(updated[:, 1:])
        self.before_pass = None

    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        labels = F.one_hot(self.labels[index], self.num_classes).float()
        cross_entropy, mse, prediction = sop_terms(logits, targets, labels, self.u[index], self.v[index])
        return cross_entropy + mse + self._extra(logits, prediction)

    def _extra(self, logits: Tensor, prediction: Tensor) -> Tensor | float:
        return 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"sop_u": self.u.detach(), "sop_v": self.v.detach(), "sop_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.u.copy_(state["sop_u"])
            self.v.copy_(state["sop_v"])
        self.optimizer.load_state_dict(state["sop_optimizer"])


class SparseOverParameterizationPlus(SparseOverParameterization):
    """`sop-plus`: SOP on one forward of the weak and the strong views, with the consistency and balance terms."""

    def __init__(self, settings: Any, context: MethodContext) -> None:
        super().__init__(settings, context)
        if context.images is None:
            raise SlnError("method sop-plus makes its strong views from images held in memory (CIFAR, digits); "
                           "use method sop on file-backed datasets")
        if len(context.images) != context.num_samples:
            raise SlnError(f"method sop-plus was given {len(context.images)} images for {context.num_samples} "
                           "training labels")
        self.images = context.images.to(context.device)  # (N, C, H, W) uint8, indexed like u and v
        self.constants = channel_constants(context.mean, context.std, context.device)
        self.padding, self.flip, self.seed, self.device = context.padding, context.flip, context.seed, context.device
        self.rank = context.rank
        self.strong: Tensor | None = None
        self.start_epoch(1)

    def start_epoch(self, epoch: int) -> None:
        from sln_cli.training.epoch import epoch_generator  # epoch imports the methods: imported when used

        super().start_epoch(epoch)
        # each epoch's views depend only on (seed, epoch): a resumed run draws what the uninterrupted one drew;
        # under torchrun each rank draws its own for its own images (no key added with one process)
        ranked = () if self.world_size == 1 else ("rank", self.rank)
        self.crops = epoch_generator(self.device, self.seed, epoch, "sop-plus strong view", *ranked)
        self.policies = epoch_generator(torch.device("cpu"), self.seed, epoch, "sop-plus autoaugment", *ranked)

    def start_step(self, index: Tensor) -> None:
        if self.settings.ratio_consistency == 0:  # as the official trainer: no strong view without its term
            self.strong = None
            return
        seed = int(torch.randint(0, 2**62, (1,), generator=self.policies))  # a CPU draw: no device sync
        self.strong = strong_views(self.images[index], seed, self.crops, self.constants, padding=self.padding,
                                   flip=self.flip)  # (B, C, H, W) float32

    def forward(self, network: nn.Module, images: Tensor) -> Tensor:
        if self.strong is None:
            return network(images)
        strong = self.strong.to(images.dtype)
        if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
            strong = strong.contiguous(memory_format=torch.channels_last)
        logits = network(torch.cat([images, strong]))  # (2B, K): one forward, BatchNorm over both views
        weak, self.strong_logits = logits.chunk(2)
        return weak

    def _extra(self, logits: Tensor, prediction: Tensor) -> Tensor | float:
        extra = self.settings.ratio_balance * balance(prediction) if self.settings.ratio_balance > 0 else 0.0
        if self.settings.ratio_consistency > 0:
            assert self.strong_logits is not None, "forward ran the strong views (start_step drew them)"
            extra = extra + self.settings.ratio_consistency * consistency(logits, self.strong_logits)
        return extra
