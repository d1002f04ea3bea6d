"""One exclusive lock per directory (a run, a sweep cell): `<directory>/.sln.lock`, held for a whole command.

The kernel lock (`flock`) is released by any exit, SIGKILL included, so a killed holder never blocks the next
process. The file also names its holder (pid, host, start), and that name is respected on its own where
`flock` does not reach across hosts (some shared filesystems): a holder on another host always holds, one on
this host holds while its process lives; a dead holder on this host is stale and taken over.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sln_cli.errors import SlnError

try:  # POSIX; on Windows only the holder's name in the file guards the directory
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK = ".sln.lock"
_MAX_LOCK_BYTES = 4096  # a holder record is ~150 bytes; never read more than this from a lock file


@contextlib.contextmanager
def lock_directory(directory: Path, *, what: str = "run") -> Iterator[None]:
    """Exclusive lock file `<directory>/.sln.lock` (pid, host, start time) held for the block; a second
    process gets SlnError naming the holder's pid and host; a stale lock (same host, dead pid) is taken over.

    `directory` must exist; the lock file is removed on release (a killed holder leaves it, naming a dead
    process). The lock is not re-entrant: a second lock of the same directory in the same
    process is refused like any other holder.
    """
    path = Path(directory) / LOCK
    fd = _open_locked(path, Path(directory), what)
    try:
        mine = _holder_record()
        _write(fd, mine)
        try:
            yield
        finally:
            if _read(fd) == mine:  # removed only while it still names us, and before the kernel lock goes
                with contextlib.suppress(OSError):
                    os.unlink(path)
    finally:
        os.close(fd)  # releases the flock


def _open_locked(path: Path, directory: Path, what: str) -> int:
    """Open and lock `path`, retrying when a releasing holder unlinked the file we locked (then ours is stale)."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise SlnError(f"cannot lock {what} directory {directory}: {exc.strerror or exc} ({path})") from exc
        try:
            _acquire(fd, directory, what)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise SlnError(f"cannot lock {what} directory {directory}: its lock file keeps changing; try again")


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def process_record() -> dict[str, Any]:
    """This process as a lock names its holder (pid, host, start time): also how `sln tune` marks its trials."""
    return _holder_record()


def is_gone(record: dict[str, Any]) -> bool:
    """Whether the process a `process_record` names has ended (a process on another host never counts as gone)."""
    return _is_stale(record)


def _acquire(fd: int, directory: Path, what: str) -> None:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SlnError(_in_use(directory, what, _wait_for_record(fd))) from None
            # ENOLCK/EOPNOTSUPP: a filesystem without flock; the record in the file is the only guard
    record = _read(fd)
    if record is not None and not _is_stale(record):
        raise SlnError(_in_use(directory, what, record))


def _wait_for_record(fd: int, seconds: float = 2.0) -> dict[str, Any] | None:
    """The holder's record; a holder that has just taken the kernel lock writes it within moments."""
    deadline = time.monotonic() + seconds
    while (record := _read(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return record


def _in_use(directory: Path, what: str, record: dict[str, Any] | None) -> str:
    if record is None:  # the holder has the kernel lock but has not written its name yet
        who = "another process"
    else:
        who = f"process {record.get('pid')} on host {record.get('host')} (since {record.get('started')})"
    return (f"{what} directory {directory} is in use by {who}; wait for it to finish or stop it "
            f"(a lock left by a killed process on this host is taken over automatically)")


def _is_stale(record: dict[str, Any]) -> bool:
    """Stale: the record names a process on this host that no longer exists (or is us: a reused pid)."""
    if record.get("host") != socket.gethostname():
        return False  # another host's process cannot be checked from here: respect it
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True
    if pid == os.getpid():
        return True  # we hold the kernel lock, so the earlier process with our pid is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    # alive: stale only if the pid was reused by a process that started after the holder did
    started = _process_start(pid)
    return started is not None and record.get("process_start") not in (None, started)


def _process_start(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _holder_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _write(fd: int, record: dict[str, Any]) -> None:
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _read(fd: int) -> dict[str, Any] | None:
    """The holder record in the file; None for an empty (released) or unreadable one."""
    try:
        data = os.pread(fd, _MAX_LOCK_BYTES, 0)
        record = json.loads(data.decode("utf-8")) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
