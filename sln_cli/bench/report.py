"""Tables for `sln bench` results (the `--json` output holds the same numbers)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from sln_cli.config import Config

_CONTENDERS = ("reference", "sln_fp32", "sln_fp32_nchw", "sln_fast", "ceiling_fp32", "ceiling_fast")
_FP32 = "fp32+channels_last" if Config().run.channels_last else "fp32"  # the layout `sln train` uses by default
_LEGEND = ("reference: the official loop re-created; sln: `sln train`'s training pass (data, augmentation, step, "
           "EMA); ceiling: forward + backward + step on one resident batch; CL: channels-last.")


def render_training(result: dict[str, Any], console: Console) -> None:
    """Throughput per contender with its ratios, then the pieces, then what it ran on."""
    reference = result["reference_ips"]
    fast = result["fast_precision"]
    table = Table(title=f"training: {result['model']}, batch {result['batch_size']}, {result['data']}")
    table.add_column("contender")
    table.add_column("precision")
    for column in ("images/s", "× ref", "× ceiling", "rounds"):
        table.add_column(column, justify="right")
    ceilings = {"sln_fp32": "ceiling_fp32", "sln_fast": "ceiling_fast"}
    for name in _CONTENDERS:
        ips = result[f"{name}_ips"]
        precision = fast if name.endswith("fast") else "fp32" if name in ("reference", "sln_fp32_nchw") else _FP32
        versus_ceiling = f"{ips / result[ceilings[name] + '_ips']:.2f}" if name in ceilings else ""
        table.add_row(name, _short(precision), f"{ips:,.1f}", f"{ips / reference:.2f}", versus_ceiling,
                      " ".join(f"{value:,.0f}" for value in result["per_round"][name]))
    if "sln_fast_nondeterministic_ips" in result:  # run.deterministic=false beside the default
        ips = result["sln_fast_nondeterministic_ips"]
        table.add_row("sln_fast_nondet", _short(fast), f"{ips:,.1f}", f"{ips / reference:.2f}", "",
                      " ".join(f"{value:,.0f}" for value in result["per_round"]["sln_fast_nondeterministic"]))
    console.print(table)
    console.print(_LEGEND, markup=False, highlight=False)
    if "nondeterministic/deterministic" in result:
        console.print(f"run.deterministic=false: {result['nondeterministic/deterministic']:.2f}x the images/s of "
                      "the default (deterministic) sln_fast", markup=False, highlight=False)

    pieces = Table(title="pieces (median of rounds)")
    pieces.add_column("piece")
    pieces.add_column("sln", justify="right")
    pieces.add_column("official", justify="right")
    pieces.add_column("unit")
    pieces.add_row("augment + normalise", f"{result['augment_ips']:,.0f}", f"{result['reference_augment_ips']:,.0f}",
                   "images/s")
    pieces.add_row("EMA update", f"{result['ema_update_ms']:.2f}", f"{result['reference_ema_update_ms']:.2f}",
                   "ms/step")
    pieces.add_row(f"evaluation ({_short(result['eval_precision'])} / fp32)",
                   f"{result['eval_seconds_per_epoch']:.1f}", f"{result['reference_eval_seconds_per_epoch']:.1f}",
                   "s/epoch")
    pieces.add_row(f"its forward passes alone ({_short(result['eval_precision'])})",
                   f"{result['eval_forward_seconds_per_epoch']:.1f}", "", "s/epoch")
    console.print(pieces)
    scaled = "" if result["eval_images_measured"] == result["eval_epoch_images"] else (
        f", measured on {result['eval_images_measured']} and scaled")
    console.print(
        f"evaluation: both networks over {result['eval_epoch_images']:,} test images{scaled}.\n"
        f"{result['device']}\nfast precision: {fast} ({result['fast_precision_why']}); {result['steps']} steps "
        f"per contender and round after {result['warmup_steps']} warm-up, {result['rounds']} alternating rounds; "
        f"load average {_load(result)}; {result['seconds']:.0f} s",
        markup=False, highlight=False,
    )
    for warning in result.get("warnings", []):
        console.print(f"warning: {warning}", markup=False, highlight=False, style="yellow")


def render_pipeline(result: dict[str, Any], console: Console) -> None:
    """Images/s per core of each Clothing1M input pipeline, and the GPU decode when there was one."""
    table = Table(title=f"Clothing1M input pipeline: {result['images']} synthetic JPEGs of about "
                        f"{result['image_size']} pixels → {result['crop']}×{result['crop']} crops")
    for column in ("pipeline", "images/s per core", "× official"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    official = result["official_ips_per_core"]
    rows = (
        ("official (PIL, per sample)", "official_ips_per_core"),
        ("ours (decode_jpeg, uint8)", "ours_ips_per_core"),
        ("ours on the resized cache", "ours_cached_ips_per_core"),
        ("building the cache, once", "cache_build_ips_per_core"),
    )
    for label, key in rows:
        table.add_row(label, f"{result[key]:,.1f}", f"{result[key] / official:.2f}")
    if result.get("gpu_ips") is not None:
        table.add_row("ours, decoded on the GPU (whole GPU)", f"{result['gpu_ips']:,.0f}", "")
    console.print(table)
    console.print(
        "official: PIL decode, Resize(256), RandomCrop(224), flip, ToTensor, Normalize, one image at a time; ours: "
        "torchvision.io.decode_jpeg, resize/crop/flip on uint8, one uint8 batch normalised on the device; the cache "
        f"holds the images resized to a shorter side of {result['resize']} (`sln cache`).\n"
        f"{result['device']}{'; GPU ' + result['gpu'] if result.get('gpu') else ''}; one thread per measurement; "
        f"load average {_load(result)}",
        markup=False, highlight=False,
    )


def _short(precision: str) -> str:
    return precision.replace("+channels_last", "+CL")


def _load(result: dict[str, Any]) -> str:
    before, after = result.get("load_average_before"), result.get("load_average_after")
    if before is None:
        return "unknown"
    return f"{before[0]:.2f} before, {after[0]:.2f} after" if after else f"{before[0]:.2f}"
