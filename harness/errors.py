"""What users are told: the one error type (a one-line message naming the problem and the fix) and
the one warning function.

The CLI turns a :class:`HarnessError` into ``error: <message>`` on stderr and exit code 2,
without a traceback. Library code raises it for every bad-input condition.
"""


class HarnessError(Exception):
    """Bad input or an unusable environment. ``str(err)`` is a single line for the user."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RunFailedError(HarnessError):
    """A run that finished but whose samples (nearly) all failed: ``error: ...``, exit code 1, so
    that a script or CI job cannot mistake it for a result."""

    exit_code = 1


def warn(message: str, quiet: bool = False) -> None:
    """``warning: <message>`` on stderr. Warnings always print (even with --quiet): they explain
    missing or surprising numbers."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
