"""The papers' own noisy-label files (`official:NAME`): pinned to a repository, commit, path and sha256.

A file is looked up in `$SLN_CACHE/labels/` (default `~/.cache/sln/labels/`), used offline when its sha256 matches,
and otherwise downloaded from the raw file at the pinned commit, verified, and written atomically.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sln_cli.errors import SlnError
from sln_cli.rundir import readers
from sln_cli.rundir.files import atomic_write

PREFIX = "official"  # `--labels official:NAME`, or `--labels official` for the preset's own setting
CACHE_ENV = "SLN_CACHE"
DEFAULT_CACHE = "~/.cache/sln"
# Where the raw files are fetched from. Only tests change it (to a server on 127.0.0.1 or a file:// folder).
BASE_URL_ENV = "SLN_OFFICIAL_BASE_URL"
DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
MAX_BYTES = 16 << 20  # a label file of 50,000 rows is ~0.3 MB; anything this large is not one
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class OfficialFile:
    repository: str  # owner/name on GitHub
    commit: str
    path: str  # inside the repository
    sha256: str  # of the file's bytes


_SLN = ("chenpf1025/SLN", "6a10a311b2d6540cd608b19712f18f10be9ab235")  # the SLN paper's files (ICLR 2021)
_IDN = ("chenpf1025/IDN", "24cd1154d2f0ab4baa7d23bd015be27ced07a383")  # Chen et al., AAAI 2021 (IDN)

OFFICIAL: dict[str, OfficialFile] = {
    "cifar10/sym0.4": OfficialFile(*_SLN, "data/CIFAR10/label_noisy/sym0.4.csv",
                                   "96c1bb492340f32681142d5cb2b0003c005227235e923b27ef86d2c11ab083d0"),
    "cifar10/asym0.4": OfficialFile(*_SLN, "data/CIFAR10/label_noisy/asym0.4.csv",
                                    "eae3112b2e876f1ed375d2456b7d9b135b3b0f0c9e5c1a2d1b81417307d7d64c"),
    "cifar10/dependent0.4": OfficialFile(*_SLN, "data/CIFAR10/label_noisy/dependent0.4.csv",
                                         "e56e57cd7ec402ead6cd65f6f64ca436c7d3e5cf4bdf174eb8a1efa1daa90dad"),
    "cifar100/sym0.4": OfficialFile(*_SLN, "data/CIFAR100/label_noisy/sym0.4.csv",
                                    "e074d1181c8b297dd1e888a70bc8a959c26769c08fb4fadff58460f901d5f5fc"),
    "cifar100/asym0.4": OfficialFile(*_SLN, "data/CIFAR100/label_noisy/asym0.4.csv",
                                     "a1fbcb8217b5c7dc68cc1f101d2034c634fce5e2b9f6ac34daadc5ca9826bd3c"),
    "cifar100/dependent0.4": OfficialFile(*_SLN, "data/CIFAR100/label_noisy/dependent0.4.csv",
                                          "f5d3e4506550be0532344138d6f0fc82ac32472cf669acee43b8f190b8d260d7"),
    "cifar10/dependent0.1": OfficialFile(*_IDN, "data/CIFAR10/label_noisy/dependent0.1.csv",
                                         "e8d7f988626668a42d54ae272a7e1fb92f6a0f17b8a99c139ca07764e2eed3d1"),
    "cifar10/dependent0.2": OfficialFile(*_IDN, "data/CIFAR10/label_noisy/dependent0.2.csv",
                                         "3d6e4b5b8f4d5037f144c22deece477a9c429e9e08a487af69fe9643725f24ea"),
    "cifar10/dependent0.3": OfficialFile(*_IDN, "data/CIFAR10/label_noisy/dependent0.3.csv",
                                         "c2ae5144d3c2ffc5f185ad5586ad80a9d1cb0acf7bb1edc259dfa9bc43d0671f"),
}


def is_official(value: str | os.PathLike[str] | None) -> bool:
    """True for `official` and `official:NAME` (a label-file setting that names a pinned file, not a path)."""
    text = os.fspath(value) if value is not None else ""
    return text == PREFIX or text.startswith(PREFIX + ":")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cached_path(name: str) -> Path:
    """`cifar10/sym0.4` -> `$SLN_CACHE/labels/cifar10-sym0.4.csv`."""
    return cache_dir() / "labels" / (name.replace("/", "-") + ".csv")


def url(name: str) -> str:
    """The raw file at the pinned commit."""
    pinned = _known(name)
    base = (os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    return f"{base}/{pinned.repository}/{pinned.commit}/{pinned.path}"


def resolve_name(value: str, *, dataset: str | None = None, mode: str | None = None,
                 rate: float | None = None) -> str:
    """The NAME of `official:NAME`; plain `official` picks the file of a setting (dataset, mode, rate)."""
    text = os.fspath(value)
    if text.startswith(PREFIX + ":"):
        name = text[len(PREFIX) + 1:].strip()
        _known(name)
        return name
    if dataset is None or mode is None or rate is None:
        raise SlnError(f"`official` alone needs a preset's setting to pick a file; name one: {_choices()}")
    name = f"{dataset}/{mode}{rate:g}"
    if name not in OFFICIAL:
        raise SlnError(f"there is no official label file for {dataset} with {mode} noise at rate {rate:g} (looked "
                       f"for {name}); pass --labels official:NAME with one of: {', '.join(OFFICIAL)}")
    return name


def label_path(value: str, *, dataset: str | None = None, mode: str | None = None,
               rate: float | None = None) -> Path:
    """The verified local copy of `official[:NAME]`, downloaded into the cache when it is not there yet."""
    return fetch(resolve_name(value, dataset=dataset, mode=mode, rate=rate))["path"]


def fetch(name: str) -> dict:
    """Make sure `name` is in the cache with its pinned sha256; {"name", "path", "sha256", "status"}."""
    pinned, path = _known(name), cached_path(name)
    if os.path.lexists(path):  # bounded like a download, and a regular file only (readers.read_bytes)
        found = _sha256(readers.read_bytes(path, what=f"cached official:{name} label file", max_bytes=MAX_BYTES))
        if found != pinned.sha256:
            raise SlnError(f"the cached official:{name} at {path} has sha256 {found}, expected {pinned.sha256}: it is "
                           "damaged or was edited; replace it with the original from "
                           f"{url(name)} (or move it away and run `sln corrupt --fetch-official {name}`)")
        return {"name": name, "path": path, "sha256": found, "status": "cached"}
    data = _download(name, path)
    found = _sha256(data)
    if found != pinned.sha256:
        raise SlnError(f"the download of official:{name} from {url(name)} has sha256 {found}, expected "
                       f"{pinned.sha256}; nothing was written to {path}: try again, or fetch the file yourself")
    with atomic_write(path, "wb") as f:
        f.write(data)
    return {"name": name, "path": path, "sha256": found, "status": "downloaded"}


def fetch_many(which: str) -> list[dict]:
    """`sln corrupt --fetch-official NAME|all`: fill the cache ahead of time (for machines without internet)."""
    names = list(OFFICIAL) if which == "all" else [resolve_name(f"{PREFIX}:{which.removeprefix(PREFIX + ':')}")]
    return [fetch(name) for name in names]


def _download(name: str, path: Path) -> bytes:
    source = url(name)
    try:
        with urllib.request.urlopen(source, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (pinned https URL)
            data = response.read(MAX_BYTES + 1)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
        reason = getattr(exc, "reason", None) or exc
        raise SlnError(f"cannot download official:{name} ({reason}; no network?): get {source} on a machine with "
                       f"internet and put it at {path}, or run `sln corrupt --fetch-official {name}` there and "
                       f"copy {path.parent}") from None
    if len(data) > MAX_BYTES:
        raise SlnError(f"{source} is larger than {MAX_BYTES >> 20} MB, not a label file; nothing was written")
    return data


def _known(name: str) -> OfficialFile:
    if name not in OFFICIAL:
        raise SlnError(f"unknown official label file {name!r}; known: {_choices()}")
    return OFFICIAL[name]


def _choices() -> str:
    return ", ".join(f"{PREFIX}:{name}" for name in OFFICIAL)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
