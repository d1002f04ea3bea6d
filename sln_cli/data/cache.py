"""A one-time cache of a file-backed dataset (Clothing1M, imagefolder) with every image's shorter side resized to 256.

The cache mirrors the source folder (same relative paths and names; annotation lists and other files copied), so
`sln train --data-dir CACHE` reads it unchanged: the training Resize(256) then has nothing left to do and decoding
reads about a quarter of the pixels. Each file is written atomically and existing ones are skipped: a build resumes.
The cache folder is marked as sln's; a build never writes into a non-empty folder it did not make.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sln_cli.data.imagefolder import IMAGE_SUFFIXES
from sln_cli.errors import SlnError
from sln_cli.rundir.files import atomic_write
from sln_cli.rundir.locks import LOCK, lock_directory
from sln_cli.rundir.ownership import MARKER, claim_new_directory, is_owned

if TYPE_CHECKING:
    from PIL import Image

SHORTER_SIDE = 256  # the official Clothing1M Resize(256)
JPEG_QUALITY = 95


def build_cache(source: Path, out: Path, *, shorter_side: int = SHORTER_SIDE, quality: int = JPEG_QUALITY,
                workers: int = 0, quiet: bool = False, console: Any = None) -> dict[str, Any]:
    """Mirror `source` into `out` with images resized; `workers` processes (0: this one); returns counts."""
    source, out = Path(source).expanduser(), Path(out).expanduser()
    _check(source, out, shorter_side, quality, workers)
    if not is_owned(out, "cache"):  # a new or empty folder; a cache sln marked is resumed, anything else refused
        if out.is_dir() and any(name != MARKER for name in os.listdir(out)):
            raise SlnError(f"{out} is not empty and is not a cache sln built, so sln will not write into it; "
                           "choose a new --out")
        claim_new_directory(out, "cache", overwrite=False)
    with lock_directory(out, what="cache"):  # one build at a time in a cache
        return _build(source, out, shorter_side=shorter_side, quality=quality, workers=workers, quiet=quiet,
                      console=console)


def _build(source: Path, out: Path, *, shorter_side: int, quality: int, workers: int, quiet: bool,
           console: Any) -> dict[str, Any]:
    started = time.perf_counter()
    files = [relative for relative in _walk(source) if relative.name not in (MARKER, LOCK)]
    todo = [relative for relative in files if not (out / relative).exists()]
    cache_one = functools.partial(_cache_relative, source, out, shorter_side=shorter_side, quality=quality)
    counts = {"resized": 0, "copied": 0}
    with _progress(len(todo), quiet=quiet, console=console) as advance:
        if workers == 0:
            outcomes: Iterator[str] = map(cache_one, todo)
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            outcomes = pool.map(cache_one, todo, chunksize=16)
        try:
            for outcome in outcomes:
                counts[outcome] += 1
                advance()
        finally:
            if workers:
                pool.shutdown(cancel_futures=True)
    return {"source": str(source), "out": str(out), "shorter_side": shorter_side, "quality": quality,
            "files": len(files), "skipped": len(files) - len(todo), **counts,
            "seconds": round(time.perf_counter() - started, 2)}


def cache_file(source_file: Path, target_file: Path, *, shorter_side: int = SHORTER_SIDE,
               quality: int = JPEG_QUALITY) -> str:
    """Write one file of the cache; "resized" for an image whose shorter side was larger, "copied" otherwise.

    Images already at or below `shorter_side` are copied byte for byte: the training Resize then computes from
    the very same pixels as it would from the source.
    """
    from PIL import Image

    if not source_file.name.lower().endswith(IMAGE_SUFFIXES):
        return _copy(source_file, target_file)
    try:
        with Image.open(source_file) as image:
            if min(image.size) <= shorter_side:
                return _copy(source_file, target_file)
            resized = resize_shorter(image.convert("RGB"), shorter_side)  # convert("RGB") as the readers do
            format_name = image.format or Image.registered_extensions().get(source_file.suffix.lower(), "PNG")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SlnError(f"cannot decode image {source_file} ({exc}); replace or remove it, then run the same "
                       "command again: finished files are kept") from exc
    options = {"quality": quality} if format_name == "JPEG" else {}
    with atomic_write(target_file, "wb") as f:
        resized.save(f, format=format_name, **options)
    return "resized"


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`: the same call, so the same size and resampling, as the training `Resize(size)`."""
    from torchvision.transforms.v2 import functional

    return functional.resize(image, [size])


def _cache_relative(source: Path, out: Path, relative: Path, *, shorter_side: int, quality: int) -> str:
    return cache_file(source / relative, out / relative, shorter_side=shorter_side, quality=quality)


def _copy(source_file: Path, target_file: Path) -> str:
    with source_file.open("rb") as src, atomic_write(target_file, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return "copied"


def _walk(source: Path) -> Iterator[Path]:
    """Every file under `source`, relative to it, in a stable order."""
    for parent, folders, names in os.walk(source, followlinks=True):
        folders.sort()
        for name in sorted(names):
            yield Path(parent, name).relative_to(source)


def _check(source: Path, out: Path, shorter_side: int, quality: int, workers: int) -> None:
    if not source.is_dir():
        raise SlnError(f"{source} is not a folder; pass --data-dir the dataset folder to cache")
    resolved_source, resolved_out = source.resolve(), out.resolve()
    if resolved_out == resolved_source or resolved_out.is_relative_to(resolved_source):
        raise SlnError(f"the cache {out} must lie outside the dataset folder {source}; choose another --out")
    if resolved_source.is_relative_to(resolved_out):
        raise SlnError(f"the dataset folder {source} lies inside the cache {out}; choose another --out")
    problems = []
    if shorter_side < 1:
        problems.append(f"--size must be at least 1 pixel, got {shorter_side}")
    if not 1 <= quality <= 100:
        problems.append(f"--quality must be in 1..100, got {quality}")
    if workers < 0:
        problems.append(f"--workers must be 0 (this process) or more, got {workers}")
    if problems:
        raise SlnError("; ".join(problems))


@contextlib.contextmanager
def _progress(total: int, *, quiet: bool, console: Any) -> Iterator[Callable[[], None]]:
    """A rich bar of files written (nothing when quiet); yields the function that advances it."""
    if quiet:
        yield lambda: None
        return
    from sln_cli.render.progress import progress_bar

    with progress_bar(console) as bar:
        task = bar.add_task("caching", total=total)
        yield lambda: bar.advance(task)
