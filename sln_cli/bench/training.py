"""`sln bench`: training throughput of `sln` against a re-creation of the official loop and the hardware ceiling.

Every contender gets the same device, model, batch size and images. They run in alternating rounds (A B C A B C
…), so that drift on a shared machine hits them all alike, and each reports the median of its rounds.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sln_cli.bench import hardware
from sln_cli.bench.contenders import CeilingRun, SlnRun, augment_pass
from sln_cli.bench.reference import OfficialCifar, ReferenceRun, official_loader, official_transforms
from sln_cli.config import Config
from sln_cli.data import Dataset, Split, load_dataset
from sln_cli.data.batches import DeviceImages
from sln_cli.errors import SlnError
from sln_cli.labels.labelfile import NoisyLabels
from sln_cli.labels.trainset import TrainSet
from sln_cli.models import build_model
from sln_cli.training.devices import resolve_device

EVAL_EPOCH_IMAGES = 10_000  # evaluation cost is reported per epoch of the CIFAR test set, both networks
CPU_STEPS, GPU_STEPS = 2, 50  # default steps per contender and round: a few minutes on a 2-core CPU
CPU_EVAL_IMAGES = 256  # test images evaluated per round on a CPU (scaled to EVAL_EPOCH_IMAGES in the report)
EMA_UPDATES = 10  # EMA updates per measurement
# Official dataset.py normalisation for CIFAR-10, used by the synthetic stand-in as well.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)

TRAINING = ("reference", "sln_fp32", "sln_fp32_nchw", "sln_fast", "ceiling_fp32", "ceiling_fast")
NONDETERMINISTIC = "sln_fast_nondeterministic"  # sln_fast with run.deterministic=false (measured on CUDA)

Work = tuple[Callable[[], int], Callable[[], int]]  # (warm-up, measured): each returns the units it processed


@dataclass(frozen=True)
class BenchSettings:
    device: str = "auto"
    data_dir: Path | None = None  # a CIFAR-10 folder (python layout); synthetic images when None
    steps: int | None = None  # training steps per contender and round (None: CPU_STEPS or GPU_STEPS)
    rounds: int = 5  # short alternating rounds: drift on a shared machine hits every contender alike
    warmup_steps: int = 1
    batch_size: int = 128  # the official CIFAR batch size
    model: str = "wrn-28-2"  # the official CIFAR network; `cnn` keeps tests fast
    eval_images: int | None = None  # test images per evaluation (None: CPU_EVAL_IMAGES, or 10,000 on a GPU)
    sigma: float = 1.0  # SLN label-noise std of every contender
    seed: int = 0
    # also measure sln_fast with run.deterministic=false (cuDNN autotuning, any-order float atomics);
    # None: on CUDA only, where the switch changes the kernels (a CPU has no cuDNN)
    nondeterministic: bool | None = None


def benchmark_training(settings: BenchSettings, *, console: Any = None) -> dict[str, Any]:
    """Measure every contender and piece in alternating rounds; return the medians, ratios and hardware."""
    device = resolve_device(settings.device)
    gpu = device.type == "cuda"
    steps = settings.steps if settings.steps is not None else (GPU_STEPS if gpu else CPU_STEPS)
    eval_images = settings.eval_images if settings.eval_images is not None else (
        EVAL_EPOCH_IMAGES if gpu else CPU_EVAL_IMAGES)
    _check(settings, steps, eval_images)
    fast = hardware.fastest_precision(device)
    load_before = hardware.load_average()
    started = time.perf_counter()

    dataset, source = bench_dataset(settings.data_dir, train_size=steps * settings.batch_size,
                                    test_size=eval_images, seed=settings.seed)
    work, aliases = _measurements(settings, dataset, device, fast, steps)
    rates = _alternate(work, settings.rounds, console)
    rates.update({name: rates[same] for name, same in aliases.items()})

    result = _summarise(rates, fast, eval_images=len(dataset.test))
    result["warnings"] = _warnings(rates, load_before)
    result.update(
        device=hardware.describe(device), model=settings.model, batch_size=settings.batch_size, data=source,
        steps=steps, warmup_steps=settings.warmup_steps, rounds=settings.rounds, fast_precision_why=fast.why,
        load_average_before=load_before, load_average_after=hardware.load_average(),
        seconds=round(time.perf_counter() - started, 1),
    )
    return result


def bench_dataset(data_dir: Path | None, *, train_size: int, test_size: int, seed: int) -> tuple[Dataset, str]:
    """`train_size` training and `test_size` test images: the real CIFAR-10 ones from `data_dir`, else random."""
    if data_dir is None:
        generator = torch.Generator().manual_seed(seed)
        n = train_size + test_size
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)  # (N, 3, 32, 32)
        labels = torch.randint(0, 10, (n,), generator=generator).numpy().astype(np.int64)
        train, test = Split(labels[:train_size], images[:train_size]), Split(labels[train_size:], images[train_size:])
        classes = tuple(f"class-{k}" for k in range(10))
        return Dataset("cifar10", classes, train, test, None, CIFAR10_MEAN, CIFAR10_STD), "synthetic CIFAR-10 shapes"
    dataset = load_dataset("cifar10", data_dir)
    if train_size > len(dataset.train):
        raise SlnError(f"--steps asks for {train_size} training images but {data_dir} holds {len(dataset.train)}; "
                       "lower --steps")
    assert dataset.train.images is not None and dataset.test.images is not None, "CIFAR-10 loads in memory"
    test_index = np.sort(np.random.default_rng(seed).permutation(len(dataset.test))[:test_size])
    train = Split(dataset.train.labels[:train_size], dataset.train.images[:train_size])
    test = Split(dataset.test.labels[test_index], dataset.test.images[torch.from_numpy(test_index)])
    return dataclasses.replace(dataset, train=train, test=test, val=None), f"CIFAR-10 from {data_dir}"


def trainset_of(dataset: Dataset, size: int | None = None) -> TrainSet:
    """A clean-label `TrainSet` over the first `size` training images (all when None)."""
    if size is not None:
        assert dataset.train.images is not None, "an in-memory dataset"
        dataset = dataclasses.replace(dataset, train=Split(dataset.train.labels[:size], dataset.train.images[:size]))
    labels = dataset.train.labels
    return TrainSet(dataset=dataset, noisy=labels, clean=labels, labels=NoisyLabels(labels, labels, None, {}),
                    train_indices=np.arange(len(labels)), test_indices=np.arange(len(dataset.test)))


def config_for(settings: BenchSettings, device: torch.device, precision: hardware.RunPrecision,
               channels_last: bool) -> Config:
    """The defaults of `sln train` with the benchmark's model, batch size, sigma, precision and layout."""
    base = Config()
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, name=settings.model),
        optim=dataclasses.replace(base.optim, batch_size=settings.batch_size),
        sln=dataclasses.replace(base.sln, sigma=settings.sigma),
        run=dataclasses.replace(base.run, device=str(device), precision=precision, channels_last=channels_last,
                                seed=settings.seed),
    )


# --------------------------------------------------------------------------------------------------
# The contenders and pieces, and the rounds
# --------------------------------------------------------------------------------------------------


def _measurements(settings: BenchSettings, dataset: Dataset, device: torch.device, fast: hardware.Precision,
                  steps: int) -> tuple[dict[str, Work], dict[str, str]]:
    """name -> (warm-up, measured work), each returning how many images (or EMA updates) it processed; and the
    names that are the same measurement as another (without bf16, the fast setting is sln_fp32's)."""
    batch, warm = settings.batch_size, settings.warmup_steps
    trainset, warm_trainset = trainset_of(dataset), trainset_of(dataset, warm * batch)
    # sln_fp32 uses `sln train`'s default layout; sln_fp32_nchw the reference's, to show what the layout buys
    settings_of: dict[str, tuple[hardware.RunPrecision, bool]]
    settings_of = {"fp32": ("fp32", Config().run.channels_last), "fp32_nchw": ("fp32", False),
                   "fast": (fast.precision, fast.channels_last)}
    configs = {key: config_for(settings, device, *key) for key in set(settings_of.values())}
    sln_runs = {key: SlnRun(trainset, warm_trainset, config, device) for key, config in configs.items()}
    ceilings = {key: CeilingRun(trainset, configs[key], device) for key in {settings_of["fp32"], settings_of["fast"]}}
    reference, train_images = _reference(settings, dataset, device, total_steps=warm + settings.rounds * steps)
    fast_run = sln_runs[settings_of["fast"]]
    augment_generator = torch.Generator(device=device).manual_seed(settings.seed)
    augment_batches = iter(official_loader(train_images, device, batch_size=batch, shuffle=True,
                                           num_samples=batch * (1 + settings.rounds) * steps))

    def sln(run: SlnRun) -> Work:
        return (lambda: run.train_epoch(warmup=True)), run.train_epoch

    def ceiling(run: CeilingRun) -> Work:
        return (lambda: run.train_steps(warm)), (lambda: run.train_steps(steps))

    def twice(work: Callable[[], int]) -> Work:
        return work, work

    work: dict[str, Work] = {"reference": ((lambda: reference.train_steps(warm)),
                                           (lambda: reference.train_steps(steps)))}
    aliases: dict[str, str] = {}
    builders: tuple[tuple[str, dict[Any, Any], Callable[[Any], Work]], ...] = (
        ("sln", sln_runs, sln), ("ceiling", ceilings, ceiling))
    for kind, runs, build in builders:
        measured: dict[tuple[str, bool], str] = {}
        for suffix, key in settings_of.items():
            name = f"{kind}_{suffix}"
            if name not in TRAINING:
                continue
            if key in measured:
                aliases[name] = measured[key]
            else:
                measured[key] = name
                work[name] = build(runs[key])
    if settings.nondeterministic if settings.nondeterministic is not None else device.type == "cuda":
        config = configs[settings_of["fast"]]
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, deterministic=False))
        work[NONDETERMINISTIC] = sln(SlnRun(trainset, warm_trainset, config, device))
    fast_train = fast_run.splits.train
    assert isinstance(fast_train, DeviceImages), "the benchmark's CIFAR-10 is in memory"
    work.update({
        "augment": twice(lambda: augment_pass(fast_train, batch, augment_generator)),
        "reference_augment": twice(lambda: _drain(augment_batches, steps)),
        "ema_update": twice(lambda: fast_run.ema_updates(EMA_UPDATES)),
        "reference_ema_update": twice(lambda: reference.ema_steps(EMA_UPDATES)),
        "eval": twice(fast_run.evaluate),
        "eval_forward": twice(fast_run.forward_only),
        "reference_eval": twice(reference.evaluate),
    })
    return work, aliases


def _reference(settings: BenchSettings, dataset: Dataset, device: torch.device, *,
               total_steps: int) -> tuple[ReferenceRun, OfficialCifar]:
    """The official loop over the same images, and its training dataset (per-sample transforms)."""
    mean, std, batch = dataset.mean, dataset.std, settings.batch_size
    assert dataset.train.images is not None and dataset.test.images is not None, "an in-memory dataset"
    train = OfficialCifar(dataset.train.images, dataset.train.labels, official_transforms(mean, std, train=True))
    test = OfficialCifar(dataset.test.images, dataset.test.labels, official_transforms(mean, std, train=False))
    torch.manual_seed(settings.seed)
    model = build_model(settings.model, num_classes=dataset.num_classes, in_channels=3, image_size=32)
    run = ReferenceRun(
        model, official_loader(train, device, batch_size=batch, shuffle=True, num_samples=batch * total_steps),
        official_loader(test, device, batch_size=batch, shuffle=False),
        num_classes=dataset.num_classes, sigma=settings.sigma, lr=Config().optim.lr, device=device,
    )
    return run, train


def _drain(batches: Any, steps: int) -> int:
    return sum(len(next(batches)[0]) for _ in range(steps))


def _alternate(work: dict[str, Work], rounds: int,
               console: Any) -> dict[str, list[float]]:
    """Warm every measurement up once, then run them in turn `rounds` times; the rate of each (units/s) per round."""
    from sln_cli.render.progress import progress_bar

    rates: dict[str, list[float]] = {name: [] for name in work}
    hidden = console is None or not console.is_terminal
    progress = progress_bar(console, remaining=False, transient=True, disable=hidden)
    with progress:
        task = progress.add_task("bench warm-up", total=len(work) * (rounds + 1))
        for name, (warm_up, _) in work.items():
            progress.update(task, description=f"bench warm-up: {name}")
            warm_up()
            progress.advance(task)
        for round_number in range(1, rounds + 1):
            for name, (_, measured) in work.items():
                progress.update(task, description=f"bench round {round_number}/{rounds}: {name}")
                started = time.perf_counter()
                count = measured()
                rates[name].append(count / (time.perf_counter() - started))
                progress.advance(task)
    return rates


def _summarise(rates: dict[str, list[float]], fast: hardware.Precision, *, eval_images: int) -> dict[str, Any]:
    median = {name: statistics.median(values) for name, values in rates.items()}
    epoch_forwards = 2 * EVAL_EPOCH_IMAGES  # both networks over the test set

    def ratio(a: str, b: str) -> float:
        return round(median[a] / median[b], 3)

    result: dict[str, Any] = {f"{name}_ips": round(median[name], 2) for name in TRAINING}
    result.update(
        fast_precision=fast.label,
        augment_ips=round(median["augment"], 1),
        reference_augment_ips=round(median["reference_augment"], 1),
        ema_update_ms=round(1000 / median["ema_update"], 3),
        reference_ema_update_ms=round(1000 / median["reference_ema_update"], 3),
        eval_seconds_per_epoch=round(epoch_forwards / median["eval"], 2),
        eval_forward_seconds_per_epoch=round(epoch_forwards / median["eval_forward"], 2),
        reference_eval_seconds_per_epoch=round(epoch_forwards / median["reference_eval"], 2),
        eval_precision=fast.label,
        eval_images_measured=eval_images,
        eval_epoch_images=EVAL_EPOCH_IMAGES,
        ratios={
            "sln_fp32/reference": ratio("sln_fp32", "reference"),
            "sln_fp32_nchw/reference": ratio("sln_fp32_nchw", "reference"),
            "sln_fast/reference": ratio("sln_fast", "reference"),
            "sln_fp32/ceiling_fp32": ratio("sln_fp32", "ceiling_fp32"),
            "sln_fast/ceiling_fast": ratio("sln_fast", "ceiling_fast"),
            "eval/eval_forward": round(median["eval_forward"] / median["eval"], 3),  # time ratio
        },
        **_nondeterministic(median),
        # units per second of every round: images (training, augmentation, evaluation) or EMA updates
        per_round={name: [round(value, 2) for value in values] for name, values in rates.items()},
    )
    return result


def _nondeterministic(median: dict[str, float]) -> dict[str, Any]:
    """What `run.deterministic=false` buys: its images/s and its ratio to sln_fast (deterministic), when measured."""
    if NONDETERMINISTIC not in median:
        return {}
    return {f"{NONDETERMINISTIC}_ips": round(median[NONDETERMINISTIC], 2),
            "nondeterministic/deterministic": round(median[NONDETERMINISTIC] / median["sln_fast"], 3)}


def _warnings(rates: dict[str, list[float]], load_before: list[float] | None) -> list[str]:
    """Signs that other work competed for the device: the figures then understate it, and ratios are less sure."""
    found = []
    if load_before is not None and load_before[0] > 0.5:
        threads = torch.get_num_threads()
        hint = " (--threads 1 gives steadier per-core figures on a shared machine)" if threads > 1 else ""
        found.append(f"the load average was {load_before[0]:.2f} before the benchmark started: other processes "
                     f"competed for the cores{hint}")
    spread = {name: max(rates[name]) / min(rates[name]) for name in TRAINING if min(rates[name]) > 0}
    worst = max(spread, key=lambda name: spread[name], default=None)
    if worst is not None and spread[worst] > 1.3:
        found.append(f"{worst}'s rounds differ by {spread[worst]:.1f}×: the machine was not quiet; more --rounds "
                     "make the medians steadier")
    return found


def _check(settings: BenchSettings, steps: int, eval_images: int) -> None:
    problems = [f"{flag} must be at least 1, got {value}" for flag, value in
                (("--steps", steps), ("--rounds", settings.rounds), ("warmup steps", settings.warmup_steps),
                 ("batch size", settings.batch_size), ("evaluation images", eval_images)) if value < 1]
    if settings.warmup_steps > steps:
        problems.append(f"warmup steps ({settings.warmup_steps}) must not exceed --steps ({steps})")
    if problems:
        raise SlnError("; ".join(problems))
