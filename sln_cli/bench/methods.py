"""`sln bench --methods`: images/s of `sln train`'s training pass for every method against CE, side by side.

Two settings: the quick start (digits, small CNN, one whole epoch per round) and WRN-28-2 on CIFAR-10-shaped
images (a few steps of batch 128 per round). The methods run in alternating rounds, as the other contenders
of `sln bench`, so drift on a shared machine hits them alike; each reports its median.
"""

from __future__ import annotations

import functools
import statistics
from typing import Any

import torch

from sln_cli import methods, presets
from sln_cli.bench.contenders import SlnRun
from sln_cli.bench.training import _alternate, bench_dataset, trainset_of
from sln_cli.config import resolve
from sln_cli.labels.trainset import build_trainset
from sln_cli.methods import catalog
from sln_cli.training.devices import resolve_device

# every registered method, CE first (the reference), then CE with SAM
VARIANTS = ("ce", *(name for name in catalog.METHODS if name != "ce"), "ce+sam")
# DivideMix's warm-up is the first (untimed) pass, so every timed pass is a division plus MixMatch epoch
DIVIDEMIX_TIMED = ["method.warmup_epochs=1"]


def benchmark_methods(*, device: str = "auto", steps: int = 2, rounds: int = 3, variants: tuple[str, ...] = VARIANTS,
                      wrn: bool = True, quickstart: bool = True, console: Any = None) -> dict[str, Any]:
    """{setting: {variant: {"images_per_second", "vs_ce", "per_round"}}} for the quick start and WRN-28-2."""
    torch_device = resolve_device(device)
    settings = {"quickstart": _quickstart(torch_device, variants)} if quickstart else {}
    if wrn:
        settings["wrn-28-2"] = _wrn(torch_device, variants, steps)
    result: dict[str, Any] = {"device": str(torch_device), "threads": torch.get_num_threads(), "rounds": rounds,
                              "wrn_steps": steps if wrn else None, "settings": {}}
    for name, runs in settings.items():
        rates = _alternate({variant: (functools.partial(run.train_epoch, warmup=True), run.train_epoch)
                            for variant, run in runs.items()}, rounds, console)
        medians = {variant: statistics.median(values) for variant, values in rates.items()}
        result["settings"][name] = {
            variant: {"images_per_second": round(median, 1), "vs_ce": round(median / medians["ce"], 3),
                      "per_round": [round(value, 1) for value in rates[variant]]}
            for variant, median in medians.items()}
        if "dividemix" in runs:
            fraction = runs["dividemix"].row["labelled_fraction"]
            result["settings"][name]["dividemix"] |= {"labelled_fraction": round(fraction, 3),
                                                      "expected_vs_ce": round(dividemix_expected_factor(fraction), 3)}
    return result


def dividemix_expected_factor(labelled_fraction: float) -> float:
    """DivideMix's images/s as a multiple of CE's, from passes alone (a backward costs about two forwards).

    Per epoch of N images CE runs N forward+backward passes: 3N forward-equivalents. DivideMix runs an eval
    forward of both networks over all N (2N), then, for each network, steps over its labelled set (f·N images)
    with as many unlabelled ones: 4 co-guessing and 2 co-refining forwards per labelled image, and 4 mixed
    images forward+backward (12): 2·18·f·N. So the factor is 3 / (36 f + 2); 0.13 at f = 0.6.
    """
    return 3 / (36 * labelled_fraction + 2)


def _flags(variant: str) -> dict[str, Any]:
    method = variant.removesuffix("+sam")
    return {"method.name": method, "method.sam": variant.endswith("+sam") or None}


def _overrides(variant: str) -> list[str]:
    return DIVIDEMIX_TIMED if variant == "dividemix" else []


def _quickstart(device: torch.device, variants: tuple[str, ...]) -> dict[str, SlnRun]:
    runs = {}
    for variant in variants:
        config = resolve(presets.load("quickstart"), [f"run.device={device.type}", *_overrides(variant)],
                         _flags(variant))
        trainset = build_trainset(config.data, config.noise)
        config = methods.settle(config, trainset.noisy, trainset.clean, manifest=trainset.labels.manifest,
                                    replaced=trainset.labels.source_index)  # co-teaching's forget rate, DivideMix's
        runs[variant] = SlnRun(trainset, trainset, config, device)  # warm-up: one whole epoch
    return runs


def _wrn(device: torch.device, variants: tuple[str, ...], steps: int) -> dict[str, SlnRun]:
    batch = 128
    dataset, _ = bench_dataset(None, train_size=steps * batch, test_size=batch, seed=0)
    trainset, warm = trainset_of(dataset), trainset_of(dataset, batch)
    runs = {}
    for variant in variants:
        forget = ["method.forget_rate=0.4"] if variant == "coteaching" else []  # the synthetic labels are clean
        config = resolve(presets.load("cifar10-sym"), [f"run.device={device.type}", *forget, *_overrides(variant)],
                         _flags(variant))
        config = methods.settle(config, trainset.noisy, trainset.clean)
        runs[variant] = SlnRun(trainset, warm, config, device)
    return runs


def render(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    settings = result["settings"]
    table = Table("method", *(f"{name} img/s" for name in settings), *(f"× CE ({name})" for name in settings),
                  title=f"training pass per method ({result['device']}, {result['threads']} thread(s), "
                        f"median of {result['rounds']} alternating rounds)")
    for variant in next(iter(settings.values())):
        table.add_row(variant, *(f"{s[variant]['images_per_second']:.1f}" for s in settings.values()),
                      *(f"{s[variant]['vs_ce']:.2f}" for s in settings.values()))
    console.print(table)
    for name, runs in settings.items():
        if "expected_vs_ce" in runs.get("dividemix", {}):
            entry = runs["dividemix"]
            console.print(f"dividemix ({name}): × CE expected from its passes {entry['expected_vs_ce']:.2f} at "
                          f"labelled fraction {entry['labelled_fraction']:.2f}; measured {entry['vs_ce']:.2f}",
                          highlight=False)
