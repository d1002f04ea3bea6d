"""The one exception family for user mistakes; the CLI turns it into `error: ...` and exit code 1."""


class SlnError(Exception):
    """A mistake the user can fix. The message is one sentence that says what to do.

    Anything else that escapes is a bug and keeps its traceback.
    """

    exit_code = 1


class NonFiniteLoss(SlnError):
    """Training diverged; the training loop adds what the run directory still holds."""


class Interrupted(SlnError):
    """The user stopped a run (Ctrl-C); the message says how to continue it."""

    exit_code = 130  # the shell's convention for SIGINT


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError the user can cause (permissions, read-only or full disk, a file where a
    folder should be, a vanished path): the path(s) and the cause, without a traceback."""
    cause = exc.strerror or exc.__class__.__name__
    paths = [str(p) for p in (exc.filename, getattr(exc, "filename2", None)) if p is not None]
    where = " -> ".join(paths) if paths else "a file or folder"
    return f"cannot access {where}: {cause}; check the path, its permissions and the free space"
