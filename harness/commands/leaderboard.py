"""``harness leaderboard RUN_DIRS... -o leaderboard/README.md [--check]``."""

from __future__ import annotations

import sys

import click

from harness.errors import HarnessError


@click.command("leaderboard")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Markdown file to write (e.g. leaderboard/README.md); printed to stdout when left out.")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 when --output differs from what would be generated (for CI).")
@click.option("--stat", type=click.Choice(["p50", "mean"]), default="p50", show_default=True,
              help="Latency statistic shown and used for the frontier.")
@click.option("--portable", is_flag=True,
              help="Leave out measured latency, devices and dates (frontier on estimated latency): the page then "
                   "depends only on code, model and data, so CI can regenerate it from fresh runs and --check it.")
@click.pass_context
def command(ctx, run_dirs, output, check, stat, portable):
    """Deterministic leaderboard markdown: an overview across tasks, then per task a table of
    model, configuration or policy, score with CI, latency, device, date and harness version, and
    the Pareto frontier. The same runs always give byte-identical output.

    RUN_DIRS are run directories or folders holding them."""
    from harness.reports import leaderboard
    from harness.jsonio import atomic_write_text
    from harness.reports.rundirs import load_runs

    text = leaderboard.render(load_runs(run_dirs, warn=_warn), stat=stat, portable=portable)
    if check:
        if not output:
            raise HarnessError("--check needs --output FILE: the committed leaderboard to compare with")
        reason = leaderboard.check(output, text)
        if reason:
            flags = " --portable" if portable else ""
            click.echo(f"leaderboard: {reason}; regenerate it with `harness leaderboard {' '.join(run_dirs)} -o {output}{flags}` "
                       "and commit it", err=True)
            sys.exit(1)
        click.echo(f"leaderboard: '{output}' is up to date")
        return
    if not output:
        click.echo(text, nl=False)
        return
    try:
        atomic_write_text(output, text)
    except OSError as exc:
        raise HarnessError(f"cannot write '{output}': {exc.strerror or exc}; pass a writable --output path")
    click.echo(f"wrote {output}")


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)
