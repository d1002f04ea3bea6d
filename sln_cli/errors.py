"""The one exception family for user mistakes; the CLI turns it into `error: ...` and exit code 1."""


class SlnError(Exception):
    """A mistake the user can fix. The message is one sentence that says what to do.

    Anything else that escapes is a bug and keeps its traceback.
    """

    exit_code = 1


class Interrupted(SlnError):
    """The user stopped a run (Ctrl-C); the message says how to continue it."""

    exit_code = 130  # the shell's convention for SIGINT
