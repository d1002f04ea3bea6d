"""Multi-process training: sharding and the no-op single-process helpers, the collectives on two gloo
processes, and `torchrun --nproc_per_node=2 -m sln_cli train` end to end (one run directory, identical
replicas, a resume equal to the uninterrupted run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from sln_cli.config import load_yaml, resolve
from sln_cli.errors import SlnError
from sln_cli.labels.trainset import build_trainset
from sln_cli.models import build_model
from sln_cli.training import distributed
from sln_cli.training.devices import autocast
from sln_cli.training.distributed import SINGLE, World
from sln_cli.training.epoch import evaluate
from sln_cli.training.state import place_splits
from tests.conftest import untimed_metrics

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Sharding and the single-process helpers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch_size", "size"),
                         [(200, 50, 2), (201, 50, 2), (250, 50, 2), (7, 2, 3), (10, 4, 3), (1001, 128, 8)])
def test_training_shards_are_disjoint_take_equal_steps_and_drop_fewer_than_world_size(n, batch_size, size):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [distributed.shard(order, World(rank, size, rank), batch_size=batch_size) for rank in range(size)]
    taken = torch.cat(shards)
    assert taken.unique().numel() == taken.numel()  # no image twice
    assert len({-(-len(s) // batch_size) for s in shards}) == 1  # every rank the same number of steps
    assert all(len(s) > 0 for s in shards)
    tail = n % (size * batch_size)
    dropped = tail if 0 < tail < size else 0
    assert taken.numel() == n - dropped
    assert set(taken.tolist()) == set(order[:n - dropped].tolist())  # only the permutation's last few are left
    for rank, s in enumerate(shards):  # rank r holds the r-th image of every global batch
        assert torch.equal(s, order[:n - dropped][rank::size])


def test_evaluation_shards_cover_everything_once():
    order = torch.arange(11)
    shards = [distributed.shard(order, World(rank, 3, rank)) for rank in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(11))


def test_one_process_is_untouched():
    order = torch.randperm(10)
    assert distributed.shard(order, SINGLE, batch_size=3) is order
    tensor = torch.arange(3.0)
    assert distributed.all_reduce_sum(tensor, SINGLE) is tensor and tensor.tolist() == [0.0, 1.0, 2.0]
    assert distributed.broadcast_json({"a": 1}, SINGLE) == {"a": 1}
    assert distributed.from_main(SINGLE, lambda: "made") == "made"
    assert distributed.wrap(nn.Linear(2, 2), SINGLE, torch.device("cpu"), sync_batchnorm=True) is None
    with distributed.main_first(SINGLE), distributed.process_group(SINGLE, torch.device("cpu")):
        pass


def test_the_world_comes_from_torchrun_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.detect() == SINGLE
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert distributed.detect() == SINGLE
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.detect() == World(rank=3, size=4, local_rank=1) and not distributed.detect().is_main
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(SlnError, match="torchrun"):
        distributed.detect()


@pytest.mark.parametrize(("name", "sync", "message"), [
    ("cuda:1", False, "cuda:LOCAL_RANK"),
    ("mps", False, "cuda:LOCAL_RANK"),
    ("cpu", True, "sync_batchnorm needs CUDA"),
])
def test_devices_that_cannot_work_under_torchrun_are_refused(name, sync, message):
    with pytest.raises(SlnError, match=message):
        distributed.device_for(World(1, 2, 1), name, sync_batchnorm=sync)


def test_cpu_ranks_share_the_cpu():
    assert distributed.device_for(World(1, 2, 1), "cpu") == torch.device("cpu")
    assert distributed.device_for(SINGLE, "cpu", sync_batchnorm=True) == torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# The collectives on two gloo processes
# --------------------------------------------------------------------------------------------------


def _collectives(rank: int, size: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    world = World(rank, size, rank)
    try:
        results: dict = {}
        results["json"] = distributed.broadcast_json({"rank": rank, "x": [1.5, None]}, world)
        results["sum"] = distributed.all_reduce_sum(torch.tensor([rank + 1.0]), world).item()
        results["min"] = distributed.all_reduce_min(torch.tensor([10 - rank]), world).item()

        def fail() -> str:
            raise SlnError("rank 0 refused")

        try:
            distributed.from_main(world, fail)
        except SlnError as exc:
            results["error"] = str(exc)
        bn = nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(rank))
        bn.num_batches_tracked.fill_(7 + rank)  # integer buffers are left alone
        distributed.average_buffers([bn], world)
        results["mean"], results["tracked"] = bn.running_mean.tolist(), int(bn.num_batches_tracked)
        Path(out, f"{rank}.json").write_text(json.dumps(results))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # spawning two interpreters takes several seconds
def test_collectives_agree_on_two_gloo_processes(tmp_path):
    mp.start_processes(_collectives, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        results = json.loads((tmp_path / f"{rank}.json").read_text())
        assert results["json"] == {"rank": 0, "x": [1.5, None]}  # rank 0's value everywhere
        assert results["sum"] == 3.0 and results["min"] == 9
        assert results["error"] == "rank 0 refused"  # rank 1 stops with rank 0's message
        assert results["mean"] == [0.5, 0.5] and results["tracked"] == 7 + rank


# --------------------------------------------------------------------------------------------------
# torchrun end to end
# --------------------------------------------------------------------------------------------------

TINY = ["--preset", "quickstart", "--train-limit", "200", "--test-limit", "100", "--set", "model.name=cnn",
        "--set", "optim.batch_size=50", "--set", "sln.correction=1", "--record-probs", "--quiet", "--device", "cpu"]


def _torchrun(cwd: Path, *args: str, dump: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    # every rank saves its final weights and targets to `dump` (tests/torchrun_dump.py wraps `sln train`)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               str(ROOT / "tests" / "torchrun_dump.py"), str(dump), "train", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _assert_same(a: dict, b: dict) -> None:
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)


@pytest.fixture(scope="module")
def torchrun_runs(tmp_path_factory):
    """Two processes: 2 epochs into the default runs/ folder, resumed to 3; and 3 epochs uninterrupted."""
    root = tmp_path_factory.mktemp("torchrun")
    _torchrun(root, *TINY, "--epochs", "2", dump=root / "dump-2")
    (part,) = (root / "runs").iterdir()
    dump_2 = {rank: _load(root / "dump-2" / f"rank-{rank}.pt") for rank in range(2)}
    metrics_2 = untimed_metrics(part)
    _torchrun(root, "--resume", str(part), "--epochs", "3", "--quiet", dump=root / "dump-resumed")
    _torchrun(root, *TINY, "--epochs", "3", "--out", str(root / "full"), dump=root / "dump-full")
    return root, part, dump_2, metrics_2


@pytest.mark.slow
def test_torchrun_writes_one_run_directory_and_ends_with_identical_replicas(torchrun_runs):
    root, part, dump_2, metrics_2 = torchrun_runs
    assert [p.name for p in (root / "runs").iterdir()] == [part.name]  # rank 1 named no directory of its own
    assert [row["epoch"] for row in metrics_2] == [1, 2]
    assert json.loads((part / "meta.json").read_text())["world_size"] == 2
    _assert_same(dump_2[0], dump_2[1])  # BatchNorm buffers (averaged) and the EMA included
    assert any("running_mean" in key for key in dump_2[0]["model"])  # the CNN has BatchNorm buffers to check


@pytest.mark.slow
def test_a_resumed_torchrun_equals_the_uninterrupted_one(torchrun_runs):
    root, part, _, _ = torchrun_runs
    assert [row["epoch"] for row in untimed_metrics(part)] == [1, 2, 3]
    assert untimed_metrics(part) == untimed_metrics(root / "full")
    assert "corrected_acc" in untimed_metrics(part)[2]  # epoch 3 corrected the labels (sharded, then summed)
    _assert_same(_load(part / "final.pt"), _load(root / "full" / "final.pt"))
    for dump in ("dump-resumed", "dump-full"):
        ranks = [_load(root / dump / f"rank-{rank}.pt") for rank in range(2)]
        _assert_same(ranks[0], ranks[1])
        assert torch.equal(ranks[0]["targets"], ranks[1]["targets"])
    _assert_same(_load(root / "dump-full" / "rank-1.pt"), _load(root / "full" / "final.pt"))


@pytest.mark.slow
def test_torchrun_metrics_cover_every_sample(torchrun_runs):
    root, _, _, _ = torchrun_runs
    run = root / "full"
    probs = np.load(run / "probs.npy")  # each sample's softmax comes from the one rank that trained on it
    assert probs.shape == (200, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    config = resolve(load_yaml(run / "config.yaml"))
    trainset = build_trainset(config.data, config.noise)
    splits = place_splits(trainset, config, torch.device("cpu"))
    final = _load(run / "final.pt")
    models = []
    for part in ("model", "ema"):
        model = build_model("cnn", num_classes=10, in_channels=1, image_size=8)
        model.load_state_dict(final[part])
        models.append(model)
    (loss, acc), (loss_ema, acc_ema) = evaluate(models, splits.test, splits.test_labels, batch_size=64,
                                                forward=autocast(torch.device("cpu"), "fp32"))
    last = untimed_metrics(run)[-1]  # the two ranks' evaluation shards, summed, equal one pass over the whole test set
    assert last["test_acc"] == acc and last["test_acc_ema"] == acc_ema
    assert last["test_loss"] == pytest.approx(loss, rel=1e-5) and last["test_loss_ema"] == pytest.approx(loss_ema,
                                                                                                         rel=1e-5)
