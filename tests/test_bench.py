"""`sln bench`: the whole benchmark through the CLI on a tiny configuration, the official-loop re-creation (EMA,
targets, transforms), the precision choice, and the Clothing1M pipelines."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from sln_cli.bench import hardware
from sln_cli.bench.pipeline import (
    CROP,
    RESIZE,
    decode,
    load_batch,
    load_batch_gpu,
    official_transform,
    random_crop_flip,
    resize_shorter,
    synthetic_jpegs,
)
from sln_cli.bench.reference import OfficialCifar, OfficialEMA, official_targets, official_transforms
from sln_cli.cli import app
from sln_cli.data.augment import crop_flip, normalize
from sln_cli.models import build_model
from sln_cli.training.ema import WeightEMA
from tests.synthetic import write_cifar10

runner = CliRunner()
TINY = ["--steps", "2", "--rounds", "1", "--device", "cpu", "--json"]
REQUIRED = ("reference_ips", "sln_fp32_ips", "sln_fast_ips", "ceiling_fp32_ips", "ceiling_fast_ips", "augment_ips",
            "ema_update_ms", "eval_seconds_per_epoch")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


@pytest.fixture(autouse=True)
def tiny_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sln bench` on a small CNN at batch 16 with 8 test images (the published figures use the defaults: WRN-28-2,
    batch 128), through the settings' defaults: sln has no option for it."""
    from sln_cli.bench import training

    @dataclasses.dataclass(frozen=True)
    class Tiny(training.BenchSettings):
        batch_size: int = 16
        model: str = "cnn"
        eval_images: int | None = 8

    monkeypatch.setattr(training, "BenchSettings", Tiny)


def _bench(*args: str) -> dict:
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("real_data", [False, True], ids=["synthetic", "cifar10-layout"])
def test_bench_reports_every_figure(tmp_path: Path, real_data: bool) -> None:
    args = ["--data-dir", str(write_cifar10(tmp_path, n_train=40, n_test=10))] if real_data else []
    result = _bench(*TINY, *args)
    for key in REQUIRED + ("sln_fp32_nchw_ips", "reference_eval_seconds_per_epoch", "eval_forward_seconds_per_epoch"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["fast_precision"] in ("bf16+channels_last", "fp32+channels_last")
    assert result["device"].startswith("cpu")
    assert ("CIFAR-10 from" in result["data"]) == real_data
    assert all(len(rounds) == 1 for rounds in result["per_round"].values())
    ratio = result["ratios"]["sln_fast/reference"]
    assert ratio == pytest.approx(result["sln_fast_ips"] / result["reference_ips"], rel=0.01)


def test_sln_contenders_run_the_real_training_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from sln_cli.bench import contenders

    calls: list[tuple[str, bool, int]] = []
    real = contenders.train_pass

    def counting(state, train, config, *args, **kwargs):
        calls.append((config.run.precision, config.run.channels_last, len(train)))
        return real(state, train, config, *args, **kwargs)

    monkeypatch.setattr(contenders, "train_pass", counting)
    _bench(*TINY)
    # fp32, fp32 + channels-last and the fast setting: one warm-up pass (1 step) and one measured pass (2 steps)
    assert len(calls) == 2 * len({(p, c) for p, c, _ in calls}) >= 4
    assert sorted({n for _, _, n in calls}) == [16, 32]


def test_determinism_is_compared_on_request_and_by_default_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run.deterministic=false` beside the default: a real training pass with that config, its own row and ratio;
    on a CPU (no cuDNN) only when asked for."""
    from sln_cli.bench import contenders

    seen: list[bool] = []
    real = contenders.train_pass

    def recording(state, train, config, *args, **kwargs):
        seen.append(config.run.deterministic)
        return real(state, train, config, *args, **kwargs)

    monkeypatch.setattr(contenders, "train_pass", recording)
    assert "sln_fast_nondeterministic_ips" not in _bench(*TINY) and False not in seen
    result = _bench(*TINY, "--compare-determinism")
    assert seen.count(False) == 2  # one warm-up and one measured pass, with run.deterministic=false
    ratio = result["nondeterministic/deterministic"]
    assert ratio == pytest.approx(result["sln_fast_nondeterministic_ips"] / result["sln_fast_ips"], rel=0.01)
    table = runner.invoke(app, ["bench", *[a for a in TINY if a != "--json"], "--compare-determinism"])
    assert table.exit_code == 0 and "sln_fast_nondet" in table.stdout and "run.deterministic=false" in table.stdout


@pytest.mark.parametrize("rounds, load, expected", [
    ({"sln_fast": [100.0, 101.0]}, [0.1, 0.1, 0.1], 0),
    ({"sln_fast": [100.0, 200.0]}, [0.1, 0.1, 0.1], 1),
    ({"sln_fast": [100.0, 200.0]}, [1.8, 1.0, 0.5], 2),
])
def test_busy_machines_are_flagged(rounds: dict, load: list[float], expected: int) -> None:
    from sln_cli.bench.training import TRAINING, _warnings

    rates = {name: [50.0, 50.0] for name in TRAINING} | rounds
    assert len(_warnings(rates, load)) == expected


def test_bench_refuses_more_steps_than_images(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "--steps", "9", "--device", "cpu",
                                 "--data-dir", str(write_cifar10(tmp_path, n_train=40, n_test=10))])
    assert result.exit_code == 1
    assert "lower --steps" in result.output


def test_bench_refuses_unknown_pipeline() -> None:
    result = runner.invoke(app, ["bench", "--pipeline", "imagenet"])
    assert result.exit_code == 1
    assert "clothing1m" in result.output


# --------------------------------------------------------------------------------------------------
# The official loop, re-created
# --------------------------------------------------------------------------------------------------


def test_official_ema_is_the_weight_ema_formula() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=3, image_size=32)
    ema_model = copy.deepcopy(model)
    ours = WeightEMA(model, decay=0.999)
    official = OfficialEMA(model, ema_model, alpha=0.999)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # moves the BatchNorm running statistics and counters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in ema_model.state_dict().items()}
    official.step()
    ours.update()
    after, now, mine = ema_model.state_dict(), model.state_dict(), ours.state_dict()
    floats = [k for k, v in now.items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats)  # BatchNorm buffers are averaged too
    for k in floats:
        torch.testing.assert_close(after[k], 0.999 * before[k] + 0.001 * now[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(after[k], mine[k], rtol=0, atol=1e-6)
    for k in set(now) - set(floats):  # num_batches_tracked: the official loop leaves the EMA's untouched
        assert torch.equal(after[k], before[k])


def test_official_targets_are_host_one_hot_plus_gaussian_noise() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (4000,))
    exact = official_targets(labels, 10, 0.0, torch.device("cpu"))
    assert torch.equal(exact, F.one_hot(labels, 10).float())
    noisy = official_targets(labels, 10, 0.5, torch.device("cpu"))
    residual = (noisy - exact).flatten()  # 40,000 draws of N(0, 0.5²)
    assert noisy.shape == (4000, 10) and noisy.dtype == torch.float32
    assert abs(residual.mean().item()) < 4 * 0.5 / math.sqrt(residual.numel())  # 4 standard errors
    assert residual.std().item() == pytest.approx(0.5, rel=0.03)


def test_official_transforms_match_our_normalisation_and_crop_distribution() -> None:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8))
    plain = OfficialCifar(images, np.zeros(3, dtype=np.int64), official_transforms(MEAN, STD, train=False))
    for i in range(3):
        torch.testing.assert_close(plain[i][0], normalize(images[i:i + 1], MEAN, STD)[0], rtol=0, atol=1e-6)
    # Every augmented sample is one of the 9 × 9 × 2 crops/flips our batched augmentation draws from.
    augmented = OfficialCifar(images[:1], np.zeros(1, dtype=np.int64), official_transforms(MEAN, STD, train=True))
    offsets = torch.cartesian_prod(torch.arange(9), torch.arange(9), torch.tensor([0, 1]))  # (162, 3)
    candidates = normalize(crop_flip(images[:1].expand(len(offsets), -1, -1, -1), offsets[:, 0], offsets[:, 1],
                                     offsets[:, 2].bool(), padding=4), MEAN, STD)
    torch.manual_seed(0)
    for _ in range(10):
        sample = augmented[0][0]
        assert ((candidates - sample).abs().amax(dim=(1, 2, 3)) < 1e-5).any()


@pytest.mark.parametrize("flags, expected", [({"avx512_bf16", "avx512f"}, "bf16"), ({"avx2"}, "fp32")])
def test_fast_precision_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    chosen = hardware.fastest_precision(torch.device("cpu"))
    assert chosen.precision == expected and chosen.channels_last
    assert chosen.label == f"{expected}+channels_last"


# --------------------------------------------------------------------------------------------------
# Clothing1M pipelines
# --------------------------------------------------------------------------------------------------


def test_pipeline_bench_reports_per_core_figures() -> None:
    result = _bench("--pipeline", "clothing1m", "--images", "2", "--device", "cpu", "--json")
    for key in ("official_ips_per_core", "ours_ips_per_core", "ours_cached_ips_per_core", "cache_build_ips_per_core"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["gpu_ips"] is None  # --device cpu: no GPU decode


def test_our_decode_and_resize_match_the_official_pil_pipeline(tmp_path: Path) -> None:
    from PIL import Image
    from torchvision import transforms

    (path,) = synthetic_jpegs(tmp_path, 1, size=(500, 600))
    ours = resize_shorter(decode(path), RESIZE)  # (3, H', W') uint8
    with Image.open(path) as image:
        official = transforms.Resize(RESIZE)(image.convert("RGB"))
    reference = torch.from_numpy(np.array(official)).permute(2, 0, 1)
    assert ours.shape == reference.shape and min(ours.shape[1:]) == RESIZE
    difference = (ours.float() - reference.float()).abs()
    assert difference.mean().item() < 0.1 and difference.max().item() <= 4  # both libjpeg-turbo; resamplers round apart


def test_random_crop_flip_returns_a_window_of_the_image() -> None:
    image = torch.arange(3 * 20 * 30).reshape(3, 20, 30)
    generator = torch.Generator().manual_seed(0)
    flips = 0
    for _ in range(40):
        window = random_crop_flip(image, 8, generator)
        flipped = bool(window[0, 0, 0] > window[0, 0, 1])
        flips += flipped
        plain = window.flip(-1) if flipped else window
        top, left = divmod(int(plain[0, 0, 0]), 30)
        assert torch.equal(plain, image[:, top:top + 8, left:left + 8])
    assert 8 <= flips <= 32  # Binomial(40, 1/2): outside this range with probability < 1e-4


def test_load_batch_gives_uint8_crops(tmp_path: Path) -> None:
    paths = synthetic_jpegs(tmp_path, 3, size=(260, 300))
    batch = load_batch(paths, torch.Generator().manual_seed(0))
    assert batch.shape == (3, 3, CROP, CROP) and batch.dtype == torch.uint8
    assert official_transform()  # builds with the official constants


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_matches_the_cpu_decode(tmp_path: Path) -> None:
    paths = synthetic_jpegs(tmp_path, 4)
    cpu = load_batch(paths, torch.Generator().manual_seed(0)).float()
    gpu = load_batch_gpu(paths, torch.Generator().manual_seed(0), torch.device("cuda")).float().cpu()
    assert (cpu - gpu).abs().mean().item() < 2.0  # nvJPEG and libjpeg-turbo round apart


@pytest.mark.parametrize(("request_", "message"), [
    ({"threads": 0}, "--threads must be at least 1"),
    ({"pipeline": "imagenet"}, "--pipeline knows only clothing1m"),
    ({"pipeline": "clothing1m", "images": 0}, "--images must be at least 1"),
])
def test_the_bench_dispatch_checks_its_request_for_library_callers(request_: dict, message: str) -> None:
    from sln_cli.bench.dispatch import BenchRequest, run
    from sln_cli.errors import SlnError

    with pytest.raises(SlnError, match=message):
        run(BenchRequest(**request_))
