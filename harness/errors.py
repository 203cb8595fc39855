"""The one error type users see: a one-line message naming the problem and the fix.

The CLI turns a :class:`HarnessError` into ``error: <message>`` on stderr and exit code 2,
without a traceback. Library code raises it for every bad-input condition.
"""


class HarnessError(Exception):
    """Bad input or an unusable environment. ``str(err)`` is a single line for the user."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
