"""Device choice and the CUDA-only paths, proven without a GPU: the CPU versions of the same kernels, fake streams,
fake CUDA tensors (tests/fakecuda.py). Each test reproduces a bug a GPU user would have hit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sln_cli import config as config_lib
from sln_cli.cli import app
from sln_cli.data import Split
from sln_cli.data.batches import Augmentation, FileImages
from sln_cli.errors import SlnError
from sln_cli.training import devices
from tests.fakecuda import CUDA, fake_cuda

runner = CliRunner()
TINY = {"data": {"dataset": "digits", "train_limit": 64, "test_limit": 32}, "model": {"name": "mlp"},
        "optim": {"batch_size": 32, "epochs": 1}, "run": {"device": "cpu"}}


def _tiny_config(**run: object) -> config_lib.Config:
    tree = json.loads(json.dumps(TINY))
    tree["run"].update(run)
    return config_lib.resolve(tree)


# --------------------------------------------------------------------------------------------------
# Resume on another device: the optimizer's kernel flags (item 2)
# --------------------------------------------------------------------------------------------------


def test_a_checkpoint_of_the_foreach_kernel_resumes_into_the_fused_one_under_the_grad_scaler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU fp16 run (foreach SGD) resumed where the fused kernel is used (CUDA): CPU fused SGD and the CPU
    GradScaler are the same code paths as on CUDA; without the fix the first step raises
    "Expected grad_scale and found_inf to be None"."""
    from sln_cli.labels.trainset import build_trainset
    from sln_cli.rundir import runs
    from sln_cli.training import state

    config = _tiny_config(precision="fp16")
    trainset = build_trainset(config.data, config.noise)
    cpu = torch.device("cpu")
    saved = state.initial_state(trainset, config, cpu)
    assert saved.optimizer.defaults["foreach"] is True
    runs.save_torch(tmp_path / runs.CHECKPOINT, state.to_checkpoint(saved))

    from sln_cli.training import optim

    monkeypatch.setattr(optim, "optimizer_kernel", lambda device: {"fused": True})  # what CUDA gets
    resumed = state.initial_state(trainset, config, cpu)
    state.restore(resumed, tmp_path, cpu)
    group = resumed.optimizer.param_groups[0]
    assert group["fused"] is True and not group["foreach"]
    assert resumed.scaler.is_enabled()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = resumed.model(torch.randn(4, 1, 8, 8)).float().logsumexp(dim=1).mean()
    resumed.scaler.scale(loss).backward()
    resumed.scaler.step(resumed.optimizer)  # raised before the fix
    resumed.scaler.update()


# --------------------------------------------------------------------------------------------------
# cuda:N becomes the current device (item 9); IEEE fp32 in the analyses (item 8); compile mode (item 6)
# --------------------------------------------------------------------------------------------------


def test_an_explicit_gpu_becomes_the_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]
    devices.resolve_device("cpu")
    devices.resolve_device("cuda")  # no index: the current device is already the one meant
    assert chosen == [torch.device("cuda", 1)]


def _precisions() -> dict[str, str]:
    return {name: backend.fp32_precision for name, backend in zip(devices._FP32_SWITCHES, devices._fp32_switches(),
                                                                   strict=False)}


def test_ieee_fp32_switches_off_tf32_everywhere_and_restores_it() -> None:
    before = _precisions()
    assert before["cudnn.conv"] == "tf32"  # torch's default: cuDNN convolutions in TF32
    with devices.ieee_fp32():
        assert set(_precisions().values()) == {"ieee"}
    assert _precisions() == before


def test_hessian_vector_products_and_the_analyses_run_in_ieee_fp32(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from sln_cli.analyze import hessian
    from sln_cli.analyze import workflow as commands

    seen = []

    def loss(model, batch):
        seen.append(torch.backends.cudnn.conv.fp32_precision)
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

    model = torch.nn.Linear(3, 2)
    hessian.hessian_operator(model, [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))], loss)(torch.randn(8))
    assert seen and set(seen) == {"ieee"}

    def stop(*args, **kwargs):
        seen.append(torch.backends.cudnn.conv.fp32_precision)
        raise SlnError("stop here")

    seen.clear()
    monkeypatch.setattr(commands, "load_run", stop)
    target = SimpleNamespace(run_dir=tmp_path, name="run")
    monkeypatch.setattr(commands, "one_target", lambda *args: target)
    monkeypatch.setattr(commands, "resolve_targets", lambda *args, **kwargs: [target])
    monkeypatch.setattr(commands, "check_datasets", lambda targets: None)
    for analysis in (commands.analyze_confidence, commands.analyze_landscape):
        with pytest.raises(SlnError, match="stop here"):
            analysis("run" if analysis is commands.analyze_confidence else ["run"], device="cpu")
    assert seen == ["ieee", "ieee"]
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"


@pytest.mark.parametrize(("device", "world_size", "mode"), [
    ("cuda", 1, "reduce-overhead"),  # one GPU: CUDA graphs
    ("cuda", 4, "default"),  # DDP: BatchNorm's buffer updates skip CUDA graphs, SyncBatchNorm breaks them
    ("cpu", 1, "default"),
])
def test_the_compile_mode_uses_cuda_graphs_only_on_one_gpu(device: str, world_size: int, mode: str) -> None:
    assert devices.compile_mode(torch.device(device), world_size=world_size) == mode


# --------------------------------------------------------------------------------------------------
# File-backed splits: the seed draw's device (item 5), gpu_decode runs on a CPU (item 7), nvJPEG's stream (item 4)
# --------------------------------------------------------------------------------------------------


def test_the_epoch_seed_is_drawn_on_the_generator_device_not_the_order_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU generator with CUDA indices (the GPU test did this) fails on CUDA: "Expected a 'cuda' device type for
    generator". On fake CUDA the traffic recorder flags a generator used for another device's draw."""

    class NoLoader:
        items: list = []

    monkeypatch.setattr(FileImages, "_loader", lambda self, train, batch_size: (NoLoader(), []))
    split = Split(labels=np.zeros(4, np.int64), files=tuple(tmp_path / f"{i}.jpg" for i in range(4)))
    with fake_cuda(monkeypatch) as traffic:
        images = FileImages(split, (0.5,) * 3, (0.25,) * 3, device=CUDA, resize=8, crop=8, workers=0)
        order = torch.arange(4, device=CUDA)
        for generator in (torch.Generator().manual_seed(1), torch.Generator(device="cuda").manual_seed(2)):
            list(images.batches(order, 2, augmentation=Augmentation(), generator=generator))
    assert "generator" not in traffic.count()


def test_a_run_trained_with_gpu_decode_is_evaluated_and_resumed_on_a_cpu(tmp_path: Path) -> None:
    from tests.synthetic import write_imagefolder

    root = write_imagefolder(tmp_path / "images", n_train=6, n_test=3, size=(12, 12))
    run = tmp_path / "run"
    common = ["--set", "data.dataset=imagefolder", "--data-dir", str(root), "--set", "model.name=mlp",
              "--set", "data.resize=12", "--set", "data.crop=8", "--set", "data.workers=0",
              "--set", "noise.mode=none", "--set", "optim.batch_size=6", "--device", "cpu", "--quiet"]
    result = runner.invoke(app, ["train", *common, "--set", "data.gpu_decode=true", "--epochs", "1", "--out", str(run)])
    assert result.exit_code == 0, result.output  # on a CPU the workers decode: the same images
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(run), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output


def test_gpu_decoding_waits_on_its_own_stream_and_hands_its_images_to_the_current_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The order of the stream operations around torchvision's nvJPEG decode, with recording stand-ins."""
    import torchvision.io

    from sln_cli.data import files

    log: list[tuple] = []

    class Stream:
        def __init__(self, name: str) -> None:
            self.name = name

        def wait_stream(self, other: Stream) -> None:
            log.append(("wait", self.name, other.name))

    main, current = Stream("main"), ["main"]

    class Image:
        def record_stream(self, stream: Stream) -> None:
            log.append(("record", stream.name))

    class StreamContext:
        def __init__(self, stream: Stream) -> None:
            self.stream = stream

        def __enter__(self) -> None:
            current.append(self.stream.name)

        def __exit__(self, *exc) -> None:
            current.pop()

    def decode_jpeg(datas, mode, device):
        log.append(("decode on", current[-1]))
        return [Image() for _ in datas]

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: main)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: Stream("side"))
    monkeypatch.setattr(torch.cuda, "stream", StreamContext)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode_jpeg)
    monkeypatch.setattr(files, "_DECODE_STREAMS", {})
    images = files.decode_jpegs_on_cuda([torch.zeros(3, dtype=torch.uint8)] * 2, CUDA)
    assert len(images) == 2
    assert log == [("decode on", "side"), ("wait", "main", "side"), ("record", "main"), ("record", "main")]


# --------------------------------------------------------------------------------------------------
# The logit-gradient noise under a GradScaler (item 1)
# --------------------------------------------------------------------------------------------------


def _noise_on_the_gradient(scaler: torch.amp.GradScaler) -> torch.Tensor:
    """What `sln.logit_grad_noise_sigma=0.5` adds to a linear network's unscaled weight gradient in one real
    `sgd_step` (lr 0, so the gradient stays readable): the gradient with noise minus the gradient without."""
    import contextlib

    from sln_cli.training.ema import WeightEMA
    from sln_cli.training.step import Step, sgd_step

    grads = []
    for sigma in (0.5, 0.0):
        torch.manual_seed(0)
        network = torch.nn.Linear(6, 4)
        optimizer = torch.optim.SGD(network.parameters(), lr=0.0)
        step = Step(optimizer=optimizer, scaler=scaler, ema=WeightEMA(network), autocast=contextlib.nullcontext,
                    sigma=0.0, noise=torch.Generator().manual_seed(7), logit_grad_noise_sigma=sigma)
        images, targets = torch.randn(8, 6), torch.eye(4)[torch.arange(8) % 4]
        sgd_step(step, network, images, targets, torch.arange(8))
        grads.append(network.weight.grad.clone())  # unscaled by scaler.step
    return grads[0] - grads[1]


def test_the_logit_gradient_noise_keeps_its_size_under_the_grad_scaler() -> None:
    """The CPU GradScaler is the CUDA one's code: with a scale of 65,536, the noise added to the scaled gradient
    was unscaled with it, 65,536 times too weak. Scaled with the loss, it is what fp32 without a scaler adds."""
    plain = _noise_on_the_gradient(torch.amp.GradScaler("cpu", enabled=False))
    scaled = _noise_on_the_gradient(torch.amp.GradScaler("cpu", init_scale=2.0**16))
    assert plain.abs().mean() > 1e-3  # the noise is there
    torch.testing.assert_close(scaled, plain, rtol=1e-4, atol=1e-7)  # before the fix: scaled == plain / 65,536


# --------------------------------------------------------------------------------------------------
# run.deterministic (item 10) and the compile mode under torchrun (item 6)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def restore_determinism():
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[:2]
    torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])


@pytest.mark.parametrize("deterministic", [True, False])
def test_run_deterministic_chooses_cudnn_benchmark_or_deterministic_kernels(
        deterministic: bool, restore_determinism: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from sln_cli.training import train

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    config = _tiny_config(deterministic=deterministic)
    assert _tiny_config().run.deterministic is True  # exact resume is the default promise

    def stop(*args, **kwargs):
        raise SlnError("stop after the switches")

    monkeypatch.setattr(train, "build_trainset", stop)
    with pytest.raises(SlnError, match="stop after"):
        train.train(config, quiet=True)
    assert torch.backends.cudnn.deterministic is deterministic
    assert torch.backends.cudnn.benchmark is not deterministic
    assert torch.are_deterministic_algorithms_enabled() is deterministic
    assert ("CUBLAS_WORKSPACE_CONFIG" in __import__("os").environ) is deterministic


def test_a_run_saved_before_a_new_config_key_still_resumes() -> None:
    from sln_cli.training.resume import check_changes as _check_resume_changes

    saved = config_lib.to_dict(_tiny_config())
    del saved["run"]["deterministic"]  # a config.yaml written before the key existed
    _check_resume_changes(saved, _tiny_config())
    _check_resume_changes(saved, _tiny_config(deterministic=False))  # how, not what: may change on resume
    with pytest.raises(SlnError, match="cannot change run.precision"):
        _check_resume_changes(saved, _tiny_config(precision="bf16"))


@pytest.mark.parametrize(("world_size", "mode"), [(1, "reduce-overhead"), (2, "default")])
def test_training_compiles_without_cuda_graphs_under_ddp(monkeypatch: pytest.MonkeyPatch, world_size: int,
                                                         mode: str) -> None:
    from sln_cli.training import train
    from sln_cli.training.distributed import World

    modes = []
    monkeypatch.setattr(torch, "compile", lambda network, mode, dynamic: modes.append(mode) or network)
    train._compiled(torch.nn.Linear(2, 2), "compile", torch.device("cuda", 0), World(rank=0, size=world_size))
    assert modes == [mode]
