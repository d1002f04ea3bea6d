"""DivideMix (Li, Socher & Hoi, ICLR 2020), as the official code trains it: LiJunnan1992/DivideMix
`Train_CIFAR.py` @ 39740b267147466bac0779de91d969909ab3b65f (functions named below are that file's).

Two networks (`NetworkPair`: `first`, `second`). Warm-up (`warmup`): each trains one pass of CE at twice the batch,
plus the negative entropy (`NegEntropy`) under asymmetric noise. Then every epoch (`eval_train`, `train`):
  1. co-divide: one eval-mode pass per network over the un-augmented training set gives per-sample CE losses,
     min-max normalised (averaged over the last `gmm_window` epochs); a 2-component GaussianMixture
     (max_iter=10, tol=1e-2, reg_covar=5e-4) gives each sample's clean posterior w, the component of smaller
     mean. The FIRST network's w divides the data for the SECOND and vice versa; labelled: w > p_threshold.
  2. MixMatch per network, the other one fixed in eval mode: co-refinement of labelled targets
     sharpen(w·y + (1 - w)·(p(x1) + p(x2))/2), co-guessing of unlabelled ones sharpen(mean of both networks
     on two augmentations), SLN's noise on the labelled targets (sln.sigma, this harness's addition), mixup with
     lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha), over the batch [x1, x2, u1, u2];
     loss = Lx (soft CE) + lambda_u·ramp·Lu (MSE of probabilities) + KL(uniform || mean prediction).
Only the GMM fit runs on the host: one copy of the (2, N) losses per epoch.
Under torchrun (`EpochPass.world`): the (2, N) losses are scored on shards and summed over the ranks, rank 0 fits
the GMMs and broadcasts the division, and every pass (warm-up and MixMatch) steps on this rank's shard of each global
batch through the network's own DDP wrapper; one process is the special case (the same draws, bit for bit).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sln_cli.errors import SlnError
from sln_cli.methods.base import Configured, EpochPass, MethodContext, probabilities
from sln_cli.methods.sln import add_label_noise
from sln_cli.models.pair import NetworkPair
from sln_cli.training import distributed
from sln_cli.training.distributed import SINGLE, World

# eval_train: GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)
GMM_SETTINGS = {"n_components": 2, "max_iter": 10, "tol": 1e-2, "reg_covar": 5e-4}


# --------------------------------------------------------------------------------------------------
# The formulas, one function each (tests check them against hand-computed cases)
# --------------------------------------------------------------------------------------------------


def normalise(losses: Tensor) -> Tensor:
    """Min-max normalisation of each row (eval_train); a constant row becomes zeros instead of 0/0."""
    low, high = losses.min(dim=-1, keepdim=True).values, losses.max(dim=-1, keepdim=True).values
    return (losses - low) / (high - low).clamp_min(1e-12)


def clean_probability(losses: np.ndarray, seed: int) -> np.ndarray:
    """Posterior of the smaller-mean component of a 2-component GMM fitted to the (N,) normalised losses."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    inputs = losses.reshape(-1, 1)
    gmm = GaussianMixture(**GMM_SETTINGS, random_state=seed)
    with warnings.catch_warnings():  # max_iter=10 is the official setting, not a failure to report
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(inputs)
    return gmm.predict_proba(inputs)[:, gmm.means_.argmin()]


def co_divide(probability: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled) sample indices of a division: w > p_threshold is labelled (pred = prob > p)."""
    labelled = probability > threshold
    return np.flatnonzero(labelled), np.flatnonzero(~labelled)


def sharpen(probs: Tensor, temperature: float) -> Tensor:
    """p^(1/T) / sum_k p_k^(1/T)."""
    powered = probs ** (1 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


def co_refine(labels: Tensor, probs: Tensor, weight: Tensor) -> Tensor:
    """w·onehot(y) + (1 - w)·p: the given label, trusted by the other network's clean posterior w (B,)."""
    weight = weight.view(-1, 1)
    return weight * labels + (1 - weight) * probs


def co_guess(*probs: Tensor) -> Tensor:
    """The mean of both networks' softmax on both augmentations of the unlabelled batch."""
    return torch.stack(probs).mean(dim=0)


def mixup_lambda(draw: float) -> float:
    """lambda' = max(lambda, 1 - lambda): the mixed sample stays closer to its own input."""
    return max(draw, 1 - draw)


def mix(inputs: Tensor, targets: Tensor, lam: float, permutation: Tensor) -> tuple[Tensor, Tensor]:
    """lambda·a + (1 - lambda)·a[perm] for the inputs and the targets alike."""
    return (lam * inputs + (1 - lam) * inputs[permutation], lam * targets + (1 - lam) * targets[permutation])


def semi_loss(logits_x: Tensor, targets_x: Tensor, logits_u: Tensor, targets_u: Tensor) -> tuple[Tensor, Tensor]:
    """SemiLoss: Lx = -mean_b sum_k t log softmax(z), Lu = mean over (b, k) of (softmax(z) - t)^2."""
    lx = -(F.log_softmax(logits_x.float(), dim=1) * targets_x).sum(dim=1).mean()
    if logits_u.shape[0] == 0:  # an empty unlabelled set (the official code would stop here)
        return lx, lx.new_zeros(())
    lu = ((probabilities(logits_u) - targets_u) ** 2).mean()
    return lx, lu


def prior_penalty(logits: Tensor) -> Tensor:
    """sum_k pi_k log(pi_k / mean_b p_bk), pi uniform: KL(uniform || the batch's mean prediction)."""
    mean = probabilities(logits).mean(dim=0)
    prior = torch.full_like(mean, 1 / mean.numel())
    return (prior * (prior / mean).log()).sum()


def negative_entropy(logits: Tensor) -> Tensor:
    """NegEntropy: mean_b sum_k p log p, the warm-up's penalty on confident predictions (asymmetric noise)."""
    p = probabilities(logits)
    return (p.log() * p).sum(dim=1).mean()


def unlabelled_weight(current: float, warmup_epochs: int, rampup_epochs: int, lambda_u: float) -> float:
    """linear_rampup: lambda_u · clip((current - warm-up) / ramp-up, 0, 1), current = epoch + step/steps (0-based)."""
    return lambda_u * float(np.clip((current - warmup_epochs) / rampup_epochs, 0.0, 1.0))


# --------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------


class DivideMix(Configured):
    def __init__(self, settings: Any, context: MethodContext) -> None:
        super().__init__(settings, context)
        self.history = torch.zeros(2, 0, context.num_samples, device=context.device)  # (2, W, N) normalised losses
        self.probability: Tensor | None = None  # (2, N) the last division's clean posteriors (for analyze issues)
        self.truly_clean = None if context.clean is None else context.noisy == context.clean  # (N,) for the AUC
        self.trainers: tuple[nn.Module, nn.Module] | None = None  # under torchrun: each network's DDP wrapper

    def _trainers(self, run: EpochPass, nets: tuple[nn.Module, nn.Module]) -> tuple[nn.Module, nn.Module]:
        """What each network's training forward goes through: the network, or under torchrun its own DDP wrapper
        (gradients averaged over the ranks; one wrapper per network, as each trains alone on its own steps)."""
        if run.world.size == 1:
            return nets
        if self.trainers is None:
            first, second = (distributed.wrap(net, run.world, run.noisy.device, sync_batchnorm=False) for net in nets)
            assert first is not None and second is not None  # wrap gives a wrapper with several ranks
            self.trainers = (first, second)
        return self.trainers

    def train_pass(self, run: EpochPass) -> dict[str, Any]:
        assert isinstance(run.model, NetworkPair), "dividemix trains a NetworkPair (state.initial_state)"
        nets = (run.model.first, run.model.second)
        if run.epoch <= self.settings.warmup_epochs:
            self._warm_up(run, nets)
            return {"labelled_fraction": None, "division_auc": None, "division_seconds": None, "gmm_seconds": None}
        return self._mixmatch_epoch(run, nets)

    # -- warm-up ------------------------------------------------------------------------------------

    def _warm_up(self, run: EpochPass, nets: tuple[nn.Module, nn.Module]) -> None:
        batch, n = 2 * run.batch_size, len(run.train)  # the warm-up loader's batch_size*2
        trainers = self._trainers(run, nets)
        number = 0
        for which, net in enumerate(nets):  # net1's whole pass, then net2's (as the official loop)
            net.train()
            order = torch.randperm(n, generator=run.generator(f"dividemix warm-up {which}"), device=run.noisy.device)
            order = distributed.shard(order, run.world, batch_size=batch)  # under torchrun: this rank's part
            if which == 0:
                run.progress.start_epoch(run.epoch, 2 * math.ceil(len(order) / batch))
            for images, index in run.train.batches(order, batch, augmentation=run.augmentation,
                                                   generator=run.step.noise):
                with run.step.autocast():
                    logits = trainers[which](images)  # (B, K)
                loss = F.cross_entropy(logits.float(), self.labels[index])
                if self.settings.warmup_penalty:
                    loss = loss + negative_entropy(logits)
                _sgd(run.step, loss)
                run.metrics.add(number, loss, logits, run.noisy[index], run.clean[index])
                run.progress.step(len(index), run.metrics.mean_loss)
                number += 1

    # -- co-divide ----------------------------------------------------------------------------------

    @torch.no_grad()
    def divide(self, run: EpochPass, nets: tuple[nn.Module, nn.Module]) -> tuple[np.ndarray, float]:
        """(2, N) clean posteriors, row i from network i's losses, and the seconds of the host-side GMM fits.

        Under torchrun each rank scores its shard of the dataset order into zeros and a sum over the ranks gathers
        the whole (2, N) losses on every rank (each entry comes from the one rank that scored it); rank 0 fits the
        GMMs and broadcasts the posteriors, so every rank divides the data as one process would.
        """
        n, device = len(run.train), run.noisy.device
        losses = torch.zeros(2, n, device=device)
        for net in nets:
            net.eval()
        order = distributed.shard(torch.arange(n, device=device), run.world)
        for images, index in run.train.batches(order, run.eval_batch_size):
            for which, net in enumerate(nets):  # un-augmented, as eval_loader (transform_test)
                with run.step.autocast():
                    logits = net(images)
                losses[which, index] = F.cross_entropy(logits.float(), self.labels[index], reduction="none")
        distributed.all_reduce_sum(losses, run.world)
        # the last gmm_window epochs' normalised losses (the official code averages 5 at 90% noise)
        self.history = torch.cat([self.history, normalise(losses)[:, None]], dim=1)[:, -self.settings.gmm_window:]
        inputs = self.history.mean(dim=1).cpu().numpy()  # (2, N): the epoch's one host copy
        started = time.perf_counter()
        if run.world.is_main:
            probability = np.stack([clean_probability(inputs[which], _seed(run.seed, run.epoch, "gmm", which))
                                    for which in (0, 1)])
        else:
            probability = np.zeros_like(inputs, dtype=np.float64)
        if run.world.size > 1:
            shared = torch.as_tensor(probability, dtype=torch.float64, device=device)
            probability = distributed.broadcast(shared, run.world).cpu().numpy()
        return probability, time.perf_counter() - started

    # -- MixMatch -----------------------------------------------------------------------------------

    def _mixmatch_epoch(self, run: EpochPass, nets: tuple[nn.Module, nn.Module]) -> dict[str, Any]:
        started = time.perf_counter()
        probability, gmm_seconds = self.divide(run, nets)
        division_seconds = time.perf_counter() - started
        self.probability = torch.as_tensor(probability, dtype=torch.float32, device=run.noisy.device)
        divisions = [co_divide(probability[which], self.settings.p_threshold) for which in (0, 1)]
        on_device = [tuple(torch.as_tensor(part, device=run.noisy.device) for part in division)
                     for division in divisions]  # the epoch's host-to-device copies, before its first step
        steps = sum(math.ceil(len(distributed.shard(torch.arange(len(labelled)), run.world,
                                                     batch_size=run.batch_size)) / run.batch_size)
                    for labelled, _ in divisions)  # this rank's steps
        run.progress.start_epoch(run.epoch, steps)
        self._trainers(run, nets)
        number = 0
        # co-divide: the first network trains on the second's division, then the second on the first's
        for which, (net, peer) in enumerate((nets, nets[::-1])):
            labelled, unlabelled = on_device[1 - which]
            number = self._train_network(run, net, peer, labelled, unlabelled, self.probability[1 - which], which,
                                         number)
            distributed.average_buffers([net], run.world)  # the peer of the next pass: the same on every rank
        return {"labelled_fraction": float(np.mean([len(labelled) for labelled, _ in divisions])) / len(run.train),
                "division_auc": _division_auc(probability, self.truly_clean), "division_seconds": division_seconds,
                "gmm_seconds": gmm_seconds}

    def _train_network(self, run: EpochPass, net: nn.Module, peer: nn.Module, labelled: Tensor,
                       unlabelled: Tensor, weight: Tensor, which: int, number: int) -> int:
        """One network's MixMatch pass over its labelled set (train), the peer fixed in eval mode.

        The training forward goes through the network's DDP wrapper under torchrun (`_trainers`). Under
        torchrun each rank takes its shard of every global batch of the labelled and of the unlabelled order (the
        same permutations on every rank) and the ramp-up counts global steps, so one process is the special case.
        """
        device, batch, settings, world = run.noisy.device, run.batch_size, self.settings, run.world
        trainer = net if self.trainers is None else self.trainers[which]
        net.train()
        peer.eval()
        shuffle = run.generator(f"dividemix shuffle {which}")
        lambdas = np.random.default_rng(_seed(run.seed, run.epoch, "mixup", which))
        order = labelled[torch.randperm(len(labelled), generator=shuffle, device=device)]
        order = distributed.shard(order, world, batch_size=batch)  # this rank's part of every global batch
        unlabelled_batches = _cycle(unlabelled, batch, shuffle, world)
        steps = len(labelled) // (world.size * batch) + 1  # num_iter, as the official ramp-up counts it
        for step_index, start in enumerate(range(0, len(order), batch)):
            index_x, index_u = order[start:start + batch], next(unlabelled_batches)
            x1, x2 = self._views(run, index_x), self._views(run, index_x)
            # an empty unlabelled set (every sample labelled): MixMatch on the labelled batch alone
            u1, u2 = (self._views(run, index_u), self._views(run, index_u)) if index_u.numel() else (x1[:0], x1[:0])
            targets_x, targets_u, logits_x = self._targets(run, net, peer, index_x, weight, x1, x2, u1, u2)
            targets_x = add_label_noise(targets_x, run.step.sigma, run.step.noise)  # SLN, after co-refinement
            lam = mixup_lambda(float(lambdas.beta(settings.mixmatch_alpha, settings.mixmatch_alpha)))
            inputs = torch.cat([x1, x2, u1, u2])
            targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
            permutation = torch.randperm(len(inputs), generator=run.step.noise, device=device)
            mixed_inputs, mixed_targets = mix(inputs, targets, lam, permutation)
            with run.step.autocast():
                logits = trainer(mixed_inputs)  # (2Bx + 2Bu, K)
            n_x = 2 * len(index_x)
            loss_x, loss_u = semi_loss(logits[:n_x], mixed_targets[:n_x], logits[n_x:], mixed_targets[n_x:])
            weight_u = unlabelled_weight(run.epoch - 1 + step_index / steps, settings.warmup_epochs,
                                         settings.rampup_epochs, settings.lambda_u)
            loss = loss_x + weight_u * loss_u + prior_penalty(logits)
            _sgd(run.step, loss)
            run.metrics.add(number, loss, logits_x, run.noisy[index_x], run.clean[index_x])
            run.progress.step(len(index_x), run.metrics.mean_loss)
            number += 1
        return number

    @torch.no_grad()
    def _targets(self, run: EpochPass, net: nn.Module, peer: nn.Module, index_x: Tensor, weight: Tensor,
                 x1: Tensor, x2: Tensor, u1: Tensor, u2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Co-guessed unlabelled targets, co-refined labelled targets (both sharpened), and net's logits on x1."""
        temperature = self.settings.sharpen_t
        with run.step.autocast():  # net is in train mode here, as in the official code (its BN statistics move)
            guesses = [probabilities(model(images)) for model in (net, peer) for images in (u1, u2)] if len(u1) else \
                [torch.zeros(0, self.num_classes, device=u1.device)]
            logits_x, logits_x2 = net(x1), net(x2)
        targets_u = sharpen(co_guess(*guesses), temperature)
        probs_x = (probabilities(logits_x) + probabilities(logits_x2)) / 2
        onehot = F.one_hot(self.labels[index_x], self.num_classes).float()
        targets_x = sharpen(co_refine(onehot, probs_x, weight[index_x]), temperature)
        return targets_x, targets_u, logits_x

    @staticmethod
    def _views(run: EpochPass, index: Tensor) -> Tensor:
        """One augmented view of the samples `index` (each call draws a new crop and flip)."""
        return next(iter(run.train.batches(index, len(index), augmentation=run.augmentation,
                                           generator=run.step.noise)))[0]

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "probability": self.probability}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        history = state.get("history")
        if not isinstance(history, Tensor) or history.dim() != 3 or history.shape[::2] != self.history.shape[::2]:
            raise SlnError("the checkpoint's DivideMix state does not fit this run; was the run directory modified?")
        self.history = history.to(self.history.device)
        probability = state.get("probability")
        self.probability = None if probability is None else probability.to(self.history.device)


def _sgd(step: Any, loss: Tensor) -> None:
    """Backward and step; only the trained network has gradients, so SGD leaves the other untouched."""
    step.optimizer.zero_grad(set_to_none=True)
    step.scaler.scale(loss).backward()
    step.scaler.step(step.optimizer)
    step.scaler.update()
    step.ema.update()


def _cycle(indices: Tensor, batch: int, generator: torch.Generator, world: World = SINGLE) -> Iterator[Tensor]:
    """Batches of a freshly shuffled `indices`, reshuffled whenever exhausted (the unlabelled loader's re-iter).

    Under torchrun this rank takes its share of every global batch of `world.size × batch` (`distributed.shard`:
    every rank as many batches, none empty; a last global batch too small to give each rank one sample is left
    out), so all ranks reshuffle at the same step with the same draws, and an unlabelled batch is empty on every
    rank or on none (SyncBatchNorm's collectives in the co-guess then match)."""
    while True:
        order = indices[torch.randperm(len(indices), generator=generator, device=indices.device)]
        order = distributed.shard(order, world, batch_size=batch)
        if len(order) == 0:
            yield order
            continue
        for start in range(0, len(order), batch):
            yield order[start:start + batch]


def _seed(*key: Any) -> int:
    """A host-side seed from (run seed, epoch, purpose, network): a resumed run draws what it drew before."""
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:4], "little")


def _division_auc(probability: np.ndarray, clean: np.ndarray | None) -> float | None:
    """AUROC of the clean posterior against the truth (official log: `AUC`), both networks averaged."""
    if clean is None or clean.all() or not clean.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(clean, row) for row in probability]))
