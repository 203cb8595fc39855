"""Rich consoles for command output: results on stdout, progress and warnings on stderr.

On a terminal rich fits tables to the window. Piped or redirected output (CI logs, ``| less``,
files) has no width to fit: a table gets exactly its natural width there, so cells never fold
into several lines and each row stays one line a script can read."""

from __future__ import annotations


def console(*, stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def print_table(table, *, stderr: bool = False) -> None:
    """Print a rich table: fitted to the terminal, or at its natural width when not a terminal."""
    from rich.console import Console
    from rich.measure import Measurement

    con = console(stderr=stderr)
    if not con.is_terminal:
        wide = Console(stderr=stderr, width=100_000)
        natural = Measurement.get(wide, wide.options, table).maximum
        con = Console(stderr=stderr, width=max(80, natural))
    con.print(table)
