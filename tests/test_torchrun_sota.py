"""DivideMix and SOP/SOP+ under torchrun: the division two gloo ranks compute equals one process's, SOP's u and v
move as in one process at the global batch, and `torchrun --nproc_per_node=2` end to end (identical replicas,
method state included; a resume equal to the uninterrupted run)."""

import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from sln_cli.config import MethodConfig
from sln_cli.data.batches import Augmentation, DeviceImages
from sln_cli.methods import build_method
from sln_cli.methods.base import EpochPass, MethodContext
from sln_cli.models import build_model
from sln_cli.models.pair import NetworkPair
from sln_cli.training import distributed
from sln_cli.training.distributed import SINGLE, World
from sln_cli.training.step import EpochMetrics
from tests.conftest import untimed_metrics
from tests.test_distributed import _assert_same, _load, _torchrun

K, N = 3, 37  # an odd N: the two ranks' evaluation shards differ in length

# --------------------------------------------------------------------------------------------------
# DivideMix's co-divide on two gloo ranks against one process, same weights
# --------------------------------------------------------------------------------------------------

DIVIDEMIX = MethodConfig(name="dividemix", warmup_epochs=1, p_threshold=0.5, lambda_u=25.0, mixmatch_alpha=4.0,
                         sharpen_t=0.5, rampup_epochs=16, gmm_window=2, warmup_penalty=False)


def _division(world: World) -> dict[str, np.ndarray]:
    """Two epochs of `divide` (gmm_window 2: the second averages both) on fixed data and networks, in `world`."""
    data = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 8, 8), generator=data, dtype=torch.uint8)
    noisy = torch.randint(0, K, (N,), generator=data)
    torch.manual_seed(1)
    nets = (build_model("cnn", num_classes=K, in_channels=1, image_size=8),
            build_model("cnn", num_classes=K, in_channels=1, image_size=8))
    context = MethodContext(num_classes=K, num_samples=N, device=torch.device("cpu"), noisy=noisy.numpy(),
                            clean=None, make_network=lambda: nets[1], forward=contextlib.nullcontext,
                            world_size=world.size, rank=world.rank)
    method = build_method(DIVIDEMIX, context)
    step = dataclasses.make_dataclass("S", ["autocast"])(contextlib.nullcontext)
    train = DeviceImages(images, (0.5,), (0.25,))
    results = {}
    for epoch in (2, 3):
        with torch.no_grad():  # the networks change between divisions, as training would change them
            for net in nets:
                next(net.parameters()).mul_(1.1)
        run = EpochPass(step=step, model=NetworkPair(*nets), train=train, epoch=epoch, batch_size=8,
                        eval_batch_size=5, augmentation=Augmentation(padding=1, flip=False),
                        metrics=EpochMetrics(torch.device("cpu")), noisy=noisy, clean=noisy, progress=None,
                        generator=lambda purpose: torch.Generator().manual_seed(1), seed=0, world=world)
        probability, _ = method.divide(run, nets)
        results[f"probability-{epoch}"] = probability
        results[f"history-{epoch}"] = method.history.numpy().copy()
    return results


def _divide_on_rank(rank: int, size: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        np.savez(Path(out, f"division-{rank}.npz"), **_division(World(rank, size, rank)))
        torch.distributed.barrier()  # both ranks' collectives done before either tears the group down
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # spawning two interpreters takes several seconds
def test_two_ranks_divide_the_data_as_one_process_does(tmp_path):
    mp.start_processes(_divide_on_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    single = _division(SINGLE)
    ranks = [np.load(tmp_path / f"division-{rank}.npz") for rank in range(2)]
    for key, expected in single.items():
        # every rank holds the very same losses and division (rank 0's GMM, broadcast)
        assert np.array_equal(ranks[0][key], ranks[1][key]), key
        # ... equal to one process's: the eval-mode losses of each sample do not depend on which rank scored it
        # (only the batch composition differs: float32 rounding, hence the tolerance)
        np.testing.assert_allclose(ranks[0][key], expected, rtol=0, atol=1e-5, err_msg=key)
    assert 0 < (single["probability-3"] > 0.5).mean() < 1  # a division with both sides, not a constant


# --------------------------------------------------------------------------------------------------
# SOP's u and v: each rank steps its shard's rows, the changes are averaged over the ranks after the pass
# --------------------------------------------------------------------------------------------------

SOP = MethodConfig(name="sop", lr_u=10.0, lr_v=10.0)
SAMPLES, BATCH = 12, 3  # two steps per rank at a global batch of 2 x 3


def _sop_pass(world: World) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """u before, and u, v after one pass of u, v steps over fixed logits (no network) in `world`: each global
    batch of 2 x BATCH split between the ranks."""
    data = torch.Generator().manual_seed(3)
    logits = torch.randn(SAMPLES, K, generator=data)
    noisy = torch.randint(0, K, (SAMPLES,), generator=data)
    context = MethodContext(num_classes=K, num_samples=SAMPLES, device=torch.device("cpu"), noisy=noisy.numpy(),
                            clean=None, make_network=lambda: None, forward=contextlib.nullcontext,
                            world_size=world.size, rank=world.rank)
    method = build_method(SOP, context)
    with torch.no_grad():  # away from their 1e-8 initialisation, so that every term has a gradient
        method.u.copy_(0.5 * torch.randn(SAMPLES, 1, generator=data))
        method.v.copy_(0.5 * torch.randn(SAMPLES, K, generator=data))
    before = method.u.detach().clone()
    order = torch.randperm(SAMPLES, generator=data)
    global_batch = 2 * BATCH
    method.start_epoch(1)
    for start in range(0, SAMPLES, global_batch):
        index = distributed.shard(order[start:start + global_batch], world)  # the rank's part of the global batch
        loss = method(logits[index], F.one_hot(noisy[index], K).float(), index)
        method.optimizer.zero_grad()
        loss.backward()
        method.optimizer.step()
    if world.size > 1:
        method.end_pass(world)
    return before, method.u.detach().clone(), method.v.detach().clone()


def _sop_on_rank(rank: int, size: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        _, u, v = _sop_pass(World(rank, size, rank))
        torch.save({"u": u, "v": v}, Path(out, f"sop-{rank}.pt"))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_move_u_and_v_as_one_process_at_the_global_batch(tmp_path):
    mp.start_processes(_sop_on_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"sop-{rank}.pt", weights_only=True) for rank in range(2)]
    start_u, u, v = _sop_pass(SINGLE)  # one process, batches of 2 x BATCH: the mean over the global batch
    assert not torch.allclose(u, start_u, atol=1e-3)  # the pass moved u: the comparison below means something
    for saved in ranks:
        assert torch.equal(saved["u"], ranks[0]["u"]) and torch.equal(saved["v"], ranks[0]["v"])
        torch.testing.assert_close(saved["u"], u, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(saved["v"], v, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# torchrun end to end: replicas identical (u, v, the division included) and an exact resume
# --------------------------------------------------------------------------------------------------

TINY = ["--preset", "quickstart", "--train-limit", "200", "--test-limit", "100", "--set", "model.name=cnn",
        "--set", "optim.batch_size=50", "--quiet", "--device", "cpu"]


METHODS = {"dividemix": ["--method", "dividemix", "--set", "method.warmup_epochs=1", "--sigma", "0.5"],
           "sop-plus": ["--method", "sop-plus"]}


@pytest.fixture(scope="module", params=sorted(METHODS))
def method_runs(request, tmp_path_factory):
    """Two processes: 2 epochs, resumed to 3; and 3 epochs uninterrupted."""
    root = tmp_path_factory.mktemp(f"torchrun-{request.param}")
    args = [*TINY, *METHODS[request.param]]
    _torchrun(root, *args, "--epochs", "2", "--out", str(root / "part"), dump=root / "dump-2")
    _torchrun(root, "--resume", str(root / "part"), "--epochs", "3", "--quiet", dump=root / "dump-resumed")
    _torchrun(root, *args, "--epochs", "3", "--out", str(root / "full"), dump=root / "dump-full")
    return request.param, root


@pytest.mark.slow
def test_torchrun_replicas_agree_on_weights_and_per_sample_state(method_runs):
    name, root = method_runs
    for dump in ("dump-2", "dump-resumed", "dump-full"):
        ranks = [_load(root / dump / f"rank-{rank}.pt") for rank in range(2)]
        _assert_same(ranks[0], ranks[1])
        keys = {"dividemix": {"history", "probability"}, "sop-plus": {"sop_u", "sop_v"}}[name]
        assert keys <= ranks[0]["method"].keys()
        for key in keys:
            assert torch.equal(ranks[0]["method"][key], ranks[1]["method"][key]), (dump, key)
    if name == "sop-plus":  # epoch 3 moved every sample's u on one rank or the other, and rank 0 holds them all
        before, after = (_load(root / dump / "rank-0.pt")["method"]["sop_u"] for dump in ("dump-2", "dump-full"))
        assert (before != after).all()


@pytest.mark.slow
def test_a_resumed_torchrun_of_the_method_equals_the_uninterrupted_one(method_runs):
    name, root = method_runs
    assert [row["epoch"] for row in untimed_metrics(root / "part")] == [1, 2, 3]
    assert untimed_metrics(root / "part") == untimed_metrics(root / "full")
    _assert_same(_load(root / "part" / "final.pt"), _load(root / "full" / "final.pt"))
    resumed, full = (_load(root / run / "checkpoint.pt")["method"] for run in ("part", "full"))
    for key, value in full.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(resumed[key], value), key
    meta = json.loads((root / "full" / "meta.json").read_text())
    assert meta["world_size"] == 2
    if name == "dividemix":  # epochs 2 and 3 divided the data on both ranks alike
        rows = untimed_metrics(root / "full")
        assert rows[0]["labelled_fraction"] is None and 0 < rows[2]["labelled_fraction"] <= 1
        # the ranks shared the steps: each network's warm-up saw the 200 samples once, each MixMatch pass its
        # labelled set once (less fewer than 2 of its last global batch), not once per rank
        assert rows[0]["train_samples"] == 2 * 200
        for row in rows[1:]:
            assert 2 * row["labelled_fraction"] * 200 - 2 <= row["train_samples"] <= 2 * row["labelled_fraction"] * 200


def test_sop_plus_ranks_draw_their_own_strong_views_and_one_process_keeps_its_draws():
    def policy_seeds(world_size: int, rank: int) -> list[int]:
        context = MethodContext(num_classes=K, num_samples=4, device=torch.device("cpu"), noisy=np.arange(4) % K,
                                clean=None, make_network=lambda: None, forward=contextlib.nullcontext,
                                world_size=world_size, rank=rank, seed=5,
                                images=torch.zeros(4, 1, 8, 8, dtype=torch.uint8), mean=(0.5,), std=(0.25,))
        method = build_method(MethodConfig(name="sop-plus", lr_u=1.0, lr_v=1.0, ratio_consistency=0.9,
                                           ratio_balance=0.1), context)
        method.start_epoch(3)
        return [*torch.randint(0, 2**62, (3,), generator=method.policies).tolist(),
                *torch.randint(0, 2**62, (3,), generator=method.crops).tolist()]

    from sln_cli.training.epoch import epoch_generator

    single = policy_seeds(1, 0)
    unkeyed = torch.randint(0, 2**62, (3,), generator=epoch_generator(torch.device("cpu"), 5, 3,
                                                                       "sop-plus autoaugment")).tolist()
    assert single[:3] == unkeyed  # one process draws what it drew before torchrun was allowed
    assert policy_seeds(2, 0) != policy_seeds(2, 1)  # two ranks: different views of their different images
    assert policy_seeds(2, 0) != single
