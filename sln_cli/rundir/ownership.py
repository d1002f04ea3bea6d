"""What `sln` may replace or delete: only what it can prove it made, and only when asked.

A directory `sln` creates gets a marker file (`.sln-owned`, JSON: kind, sln version, creation time). With
`--overwrite`, a directory carrying our marker of the same kind is re-claimed by deleting only the files
`sln` writes there (by name); anything else in it stays. An existing file the user names as an output is
replaced only with `--overwrite`; files sln keeps up to date inside a directory it owns (metrics,
checkpoints, plots in a run's `analysis/`) are its own to rewrite.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from sln_cli import __version__
from sln_cli.errors import SlnError
from sln_cli.rundir.files import atomic_write_json

MARKER = ".sln-owned"  # JSON: {"kind": "run"|"sweep"|..., "sln_version": ..., "created": ...}
_LOCK = ".sln.lock"  # sln_cli.rundir.locks.LOCK: the lock of the directory, held by the caller while it claims
_MAX_MARKER_BYTES = 4096

# The files sln writes in a directory of each kind, as glob patterns relative to it (one folder level at most).
_RUN_FILES = ("config.yaml", "meta.json", "labels.csv", "labels.json", "metrics.jsonl", "checkpoint.pt", "final.pt",
              "best.pt", "summary.json", "probs.npy", "noisy_val.csv")
_ANALYSIS_FILES = ("reliability-*.png", "confidence-*.png", "memorisation-*.png", "landscape-*", "noise-*.png")


def _with_temporaries(patterns: Sequence[str]) -> tuple[str, ...]:
    """The patterns and the temporary files an atomic write of each leaves if killed (`.NAME.XXXX.tmp`)."""
    temporaries = []
    for pattern in patterns:
        folder, _, name = pattern.rpartition("/")
        temporaries.append(f"{folder}/.{name}.*.tmp" if folder else f".{name}.*.tmp")
    return (*patterns, *temporaries)


# The files sln writes in a directory of each kind, as glob patterns relative to it (one folder level at most).
OWNED_FILES: dict[str, tuple[str, ...]] = {
    "run": (*_with_temporaries((*_RUN_FILES, "checkpoints/epoch-*.pt",
                                 "checkpoints/state-*.pt", "tensorboard/events.out.tfevents.*",
                                 *(f"analysis/{p}" for p in _ANALYSIS_FILES))),
            "analysis/" + MARKER),
    "analysis": _with_temporaries(_ANALYSIS_FILES),
}
# Runs made before the marker existed hold these files; --overwrite leaves such a directory to the user.
_LEGACY_RUN = ("config.yaml", "meta.json", "metrics.jsonl")


def register_kind(kind: str, patterns: Sequence[str]) -> None:
    """Declare the files sln writes in directories of `kind` (e.g. a sweep), so --overwrite can remove them."""
    OWNED_FILES[kind] = tuple(patterns)


def is_owned(directory: Path, kind: str) -> bool:
    """`directory` carries sln's marker of this kind."""
    return _marker_kind(Path(directory)) == kind


def claim_new_directory(directory: Path, kind: str, *, overwrite: bool) -> None:
    """Create `directory` (or take an empty one), or with `overwrite` re-claim one that carries OUR marker of
    the same kind, removing only the files sln writes there; refuse anything else with one line naming it."""
    directory = Path(directory)
    if not _make(directory):
        if not directory.is_dir():
            raise SlnError(f"{directory} exists and is not a directory; choose another path for the {kind}")
        if _contents(directory, kind):
            _check_reclaim(directory, kind, overwrite)
            remove_owned_files(directory, kind)
    _mark(directory, kind)


def check_replaceable(path: Path, *, overwrite: bool, flag: str = "--overwrite") -> None:
    """An output file the user named: new, or existing and replaced only with `overwrite`; never a directory.

    Inside a directory sln owns (a run, its analysis folder), sln's own files are kept up to date freely."""
    path = Path(path)
    _check_parents(path)
    if not os.path.lexists(path):
        return
    if path.is_dir():
        raise SlnError(f"{path} is a directory; give a file path for this output")
    if overwrite or _owns_file(path):
        return
    raise SlnError(f"{path} already exists; pass {flag} to replace it, or choose another path")


def prepare_output_dir(directory: Path, patterns: Sequence[str] | str, *, overwrite: bool = False,
                       create: bool = True) -> None:
    """A folder for plots and results named by `patterns` (globs): created and marked as sln's when new. In a
    folder sln did not mark, existing files matching `patterns` are replaced only with `overwrite`. `create=False`
    only checks (a command checks before its work and writes nothing if that fails). A folder that was there is
    marked only when empty (a registered kind, `patterns` a kind's name, marks only a folder it creates); one
    holding anything is used but never marked."""
    directory = Path(directory)
    kind, registered = "analysis", isinstance(patterns, str)
    if isinstance(patterns, str):  # a kind registered with its files (e.g. `sln report`'s "report")
        kind, patterns = patterns, OWNED_FILES.get(patterns, ())
    if not create:
        if os.path.lexists(directory) and not directory.is_dir():
            raise SlnError(f"{directory} exists and is not a directory; choose another output folder")
        if not directory.is_dir():
            return
    elif _make(directory):
        _mark(directory, kind)
        return
    if not directory.is_dir():
        raise SlnError(f"{directory} exists and is not a directory; choose another output folder")
    if _marker_kind(directory) == kind or _owned_analysis(directory):
        return
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise SlnError(f"cannot read {directory}: {exc.strerror or exc}") from exc
    clashes = [name for name in names if _matches(name, patterns)]
    if clashes and not overwrite:
        raise SlnError(f"{directory / clashes[0]} already exists in a folder sln did not make; pass --overwrite to "
                       "replace it, or choose another output folder")
    # A folder that holds anything (the user's notes, files of another command) is never marked: the marker
    # must not adopt what the user put there, so each later write of a clashing name needs --overwrite again.
    if create and not registered and _marker_kind(directory) is None and not names:
        _mark(directory, kind)


def remove_stale_temporaries(directory: Path, kind: str) -> list[Path]:
    """Delete the temporary files that killed atomic writes of sln's files left in `directory` (call it while
    holding the directory's lock: then no write is in flight)."""
    return remove_owned_files(directory, kind, only_temporaries=True)


def remove_owned_files(directory: Path, kind: str, *, only_temporaries: bool = False) -> list[Path]:
    """Delete the regular files of `directory` that sln writes for `kind` (never links, folders or others);
    folders sln made that end up empty go too. Returns what was removed."""
    removed = []
    patterns = OWNED_FILES.get(kind, ())
    for pattern in [p for p in patterns if p.endswith(".tmp")] if only_temporaries else patterns:
        folder, _, name = pattern.rpartition("/")
        where = directory / folder if folder else directory
        if not _plain_dir(where):
            continue
        for entry in sorted(os.listdir(where)):
            path = where / entry
            if not fnmatch.fnmatchcase(entry, name) or (not folder and entry in (MARKER, _LOCK)):
                continue
            if stat.S_ISREG(os.lstat(path).st_mode):
                _unlink(path)
                removed.append(path)
    for folder in {p.rpartition("/")[0] for p in patterns if "/" in p and not only_temporaries}:
        with contextlib.suppress(OSError):  # only if empty: a user's file keeps its folder
            (directory / folder).rmdir()
    return removed


# --------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------


def _check_parents(path: Path) -> None:
    """The nearest existing folder above `path` must be a folder, so that the write can succeed later."""
    for parent in path.absolute().parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise SlnError(f"cannot write {path}: {parent} is a file, not a folder; choose another path")
            return


def _mark(directory: Path, kind: str) -> None:
    atomic_write_json(directory / MARKER, {"kind": kind, "sln_version": __version__,
                                           "created": datetime.datetime.now().astimezone().isoformat()})


def _owned_analysis(directory: Path) -> bool:
    """A run's `analysis/` folder, made before the folder carried its own marker."""
    return directory.name == "analysis" and is_owned(directory.parent, "run")


def _make(directory: Path) -> bool:
    """Create `directory` (and its parents); False if it already existed."""
    try:
        directory.mkdir(parents=True)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise SlnError(f"cannot create {directory}: {exc.strerror or exc}") from exc


def _contents(directory: Path, kind: str) -> list[str]:
    """What is in `directory` besides our lock (and our marker of this kind, when it is alone)."""
    try:
        names = [name for name in os.listdir(directory) if name != _LOCK]
    except OSError as exc:
        raise SlnError(f"cannot read {directory}: {exc.strerror or exc}") from exc
    return [] if names == [MARKER] and _marker_kind(directory) == kind else names


def _check_reclaim(directory: Path, kind: str, overwrite: bool) -> None:
    owner = _marker_kind(directory)
    if not overwrite:
        extra = f", or continue it with --resume {directory}" if owner == "run" == kind else ""
        raise SlnError(f"{kind} directory {directory} is not empty; pick another path, replace sln's files in it "
                       f"with --overwrite{extra}")
    if owner == kind:
        return
    if owner is not None:
        raise SlnError(f"{directory} is an sln {owner} directory, not a {kind} one; --overwrite will not touch it: "
                       "pick another path")
    if kind == "run" and all((directory / name).is_file() for name in _LEGACY_RUN):
        raise SlnError(f"{directory} holds a run made before sln marked its own directories, so --overwrite will "
                       f"not touch it; delete it yourself (rm -r {directory}) or pick another path")
    raise SlnError(f"{directory} was not made by sln (it has no {MARKER} marker), so --overwrite will not touch "
                   "it; pick another path or an empty directory")


def _marker_kind(directory: Path) -> str | None:
    try:
        with open(directory / MARKER, "rb") as f:
            record = json.loads(f.read(_MAX_MARKER_BYTES + 1)[:_MAX_MARKER_BYTES].decode("utf-8"))
    except (OSError, ValueError):
        return None
    kind = record.get("kind") if isinstance(record, dict) else None
    return kind if isinstance(kind, str) else None


def _owns_file(path: Path) -> bool:
    """`path` is a file sln writes in a directory it owns (by the directory's marker and the file's name)."""
    kind = _marker_kind(path.parent)
    if kind is not None and _matches(path.name, OWNED_FILES.get(kind, ())):
        return True
    return _owned_analysis(path.parent) and _matches(f"analysis/{path.name}", OWNED_FILES["run"])


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return name not in (MARKER, _LOCK) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _plain_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SlnError(f"cannot remove {path}: {exc.strerror or exc}") from exc
