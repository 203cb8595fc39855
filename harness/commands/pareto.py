"""``harness pareto RUN_DIRS...``: accuracy-latency Pareto tables, CSV/JSON/markdown and a plot."""

from __future__ import annotations

import click

from harness.errors import HarnessError


@click.command("pareto")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Write pareto.md, pareto.csv, pareto.json and pareto-<task>.png into this folder.")
@click.option("--stat", type=click.Choice(["p50", "mean"]), default="p50", show_default=True,
              help="Latency statistic the frontier is computed on.")
@click.option("--part", type=click.Choice(["total", "prefill", "decode"]), default="total", show_default=True,
              help="Latency part the frontier is computed on.")
@click.option("--no-plot", is_flag=True, help="Skip the PNG plots.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document instead of the rich table.")
def command(run_dirs, out_dir, stat, part, no_plot, as_json):
    """Per task: every configuration's score with its 95% CI, measured and estimated latency
    (prefill / decode / total, p50 and mean), and Pareto-optimal flags for measured and for
    estimated latency, with the configuration that dominates each dominated row.

    RUN_DIRS are run directories or folders holding them (e.g. a sweep's output)."""
    from harness.reports import pareto
    from harness.reports.rundirs import load_runs

    runs = load_runs(run_dirs, warn=_warn)
    tables = pareto.build_tables(runs, part=part, stat=stat)
    if as_json:
        click.echo(pareto.to_json(tables), nl=False)
    else:
        _print_rich(tables)
    if out_dir:
        try:
            written = pareto.write_outputs(tables, out_dir, png=not no_plot)
        except OSError as exc:
            raise HarnessError(f"cannot write Pareto outputs to '{out_dir}': {exc.strerror or exc}; pass a writable -o folder")
        if not as_json:
            click.echo("wrote " + ", ".join(str(p) for p in written))


RICH_COLUMNS = ("config", "score [95% CI]", "n", "meas. p50 ms pre/dec/total", "meas. mean", "est. p50 ms pre/dec/total",
                "est. mean", "Pareto meas.", "Pareto est.")


def _print_rich(tables) -> None:
    from rich.table import Table

    from harness.console import print_table
    from harness.reports.pareto import table_cells

    for t in tables:
        table = Table(title=f"{t.task} ({t.metric}) - {t.model} - {t.environment} - frontier on {t.stat} {t.part}",
                      title_justify="left")
        for col in RICH_COLUMNS:
            table.add_column(col, overflow="fold")
        for row in t.rows:
            cells = table_cells(t, row)
            style = "bold" if row.pareto.get("measured") else None
            table.add_row(*cells, style=style)
        print_table(table)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)
