"""Clothing1M input pipeline: images/s per core of the official per-sample pipeline against ours, on synthetic JPEGs
of Clothing1M's sizes (about 500×600), on the originals and on the one-time resized cache (`sln cache`).

Official (noise_clothing1m_train.py): PIL decode → Resize(256) → RandomCrop(224) → RandomHorizontalFlip → ToTensor →
Normalize, one image at a time. Ours, `sln train`'s own functions (`sln_cli.data.files`): `torchvision.io.decode_jpeg`
→ resize and crop/flip on uint8 tensors → one uint8 batch, normalised on the device (on a GPU the decode itself runs
there too).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sln_cli.bench import hardware
from sln_cli.data.augment import normalize
from sln_cli.data.files import decode_batch, read_bytes, resize_shorter, train_view
from sln_cli.data.files import decode_image as decode
from sln_cli.data.files import random_crop_flip as random_crop_flip  # re-exported: the benchmark's pipeline pieces
from sln_cli.training.devices import resolve_device

CLOTHING1M_MEAN, CLOTHING1M_STD = (0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214)  # official script
RESIZE, CROP = 256, 224  # official Resize(256), RandomCrop(224)
BATCH_SIZE = 32  # official Clothing1M batch size
SIZE = (500, 600)  # width × height around which the synthetic images vary (±10%), as Clothing1M's photos


def benchmark_pipeline(*, images: int = 64, device: str = "auto", seed: int = 0,
                       size: tuple[int, int] = SIZE) -> dict[str, Any]:
    """Write `images` synthetic JPEGs into a temporary folder and time every pipeline over them."""
    from sln_cli.data.cache import build_cache

    target = resolve_device(device)
    load_before = hardware.load_average()
    with tempfile.TemporaryDirectory(prefix="sln-bench-") as folder:
        root = Path(folder)
        originals = synthetic_jpegs(root / "original", images, size=size, seed=seed)
        cached = [root / "cache" / path.relative_to(root / "original") for path in originals]
        generator = torch.Generator().manual_seed(seed)
        with _one_thread():
            resize_shorter(decode(originals[0]), RESIZE)  # imports torchvision's transforms outside the timing
            started = time.perf_counter()
            build_cache(root / "original", root / "cache", shorter_side=RESIZE, workers=0, quiet=True)
            cache_ips = len(originals) / (time.perf_counter() - started)
            rates = _alternate({
                "official": lambda: _official(originals),
                "ours": lambda: _ours(originals, target, generator),
                "cached": lambda: _ours(cached, target, generator),
            }, len(originals))
        gpu_ips = None
        if target.type == "cuda":
            gpu_ips = _alternate({"gpu": lambda: _gpu(originals, target, generator)}, len(originals))["gpu"]
    return {
        "device": hardware.describe(torch.device("cpu")),
        "gpu": None if gpu_ips is None else torch.cuda.get_device_name(target),
        "images": images, "image_size": f"{size[0]}×{size[1]}", "resize": RESIZE, "crop": CROP,
        "official_ips_per_core": round(rates["official"], 1), "ours_ips_per_core": round(rates["ours"], 1),
        "ours_cached_ips_per_core": round(rates["cached"], 1), "cache_build_ips_per_core": round(cache_ips, 1),
        "gpu_ips": None if gpu_ips is None else round(gpu_ips, 1),
        "load_average_before": load_before, "load_average_after": hardware.load_average(),
    }


def synthetic_jpegs(folder: Path, count: int, *, size: tuple[int, int] = SIZE, seed: int = 0,
                    quality: int = 90) -> list[Path]:
    """`count` photo-like JPEGs (smooth colour fields plus grain, so they compress like photos, not like noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        width, height = (int(side * rng.uniform(0.9, 1.1)) for side in size)
        coarse = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).resize((width, height),
                                                                                        Image.Resampling.BICUBIC)
        grain = rng.normal(0, 6, (height, width, 3))
        pixels = np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)  # H×W×3
        path = folder / f"{i // 100:03d}" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path, format="JPEG", quality=quality)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------------
# The pipelines
# --------------------------------------------------------------------------------------------------


def official_transform() -> Any:
    """noise_clothing1m_train.py's train_transform (torchvision's classic transforms on PIL images)."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(RESIZE), transforms.RandomCrop(CROP), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(CLOTHING1M_MEAN, CLOTHING1M_STD),
    ])


def load_batch(paths: Sequence[Path], generator: torch.Generator, *, resize: int = RESIZE, crop: int = CROP) -> Tensor:
    """Ours on the CPU, as `sln train`'s workers do it: decode, resize, crop and flip each image as uint8, then collate
    one (B, 3, crop, crop) uint8 batch."""
    return torch.stack([train_view(decode(path), resize=resize, crop=crop, generator=generator) for path in paths])


def load_batch_gpu(paths: Sequence[Path], generator: torch.Generator, device: torch.device, *,
                   resize: int = RESIZE, crop: int = CROP) -> Tensor:
    """Ours with a GPU (`gpu_decode`): one batched `decode_jpeg(..., device="cuda")`, then resize/crop/flip there."""
    decoded = decode_batch([read_bytes(path) for path in paths], paths, device=device)
    return torch.stack([train_view(image, resize=resize, crop=crop, generator=generator) for image in decoded])


def _official(paths: Sequence[Path]) -> None:
    from PIL import Image

    transform = official_transform()
    for batch in _chunks(paths):
        images = []
        for path in batch:
            with Image.open(path) as image:
                images.append(transform(image.convert("RGB")))  # dataset.py: Image.open(impath).convert("RGB")
        torch.stack(images)  # the DataLoader's collate


def _ours(paths: Sequence[Path], device: torch.device, generator: torch.Generator) -> None:
    for batch in _chunks(paths):
        normalize(load_batch(batch, generator).to(device), CLOTHING1M_MEAN, CLOTHING1M_STD)  # (B, 3, 224, 224)
    hardware.synchronize(device)


def _gpu(paths: Sequence[Path], device: torch.device, generator: torch.Generator) -> None:
    for batch in _chunks(paths):
        normalize(load_batch_gpu(batch, generator, device), CLOTHING1M_MEAN, CLOTHING1M_STD)
    hardware.synchronize(device)


def _chunks(paths: Sequence[Path]) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), BATCH_SIZE):
        yield paths[start:start + BATCH_SIZE]


def _alternate(work: dict[str, Any], count: int, rounds: int = 3) -> dict[str, float]:
    """Images/s of each pipeline: one warm-up pass each, then `rounds` alternating passes, the best of them (other
    processes on a shared machine only ever slow a pass down)."""
    for run in work.values():
        run()
    best = dict.fromkeys(work, float("inf"))
    for _ in range(rounds):
        for name, run in work.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: count / seconds for name, seconds in best.items()}


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Per-core figures: torch's intra-op pool (resize, normalise) limited to one thread, as PIL already is."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
