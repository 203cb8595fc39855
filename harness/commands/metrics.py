"""``harness metrics [--explain NAME]``: every registered metric with its sub-scores and definition."""

from __future__ import annotations

import click


@click.command("metrics")
@click.option("--explain", "explain", metavar="NAME", default=None,
              help="Print the full definition of one metric, with its documented differences from other implementations.")
def command(explain: str | None) -> None:
    """List metrics, their sub-scores (first = main) and one-line definitions."""
    from harness.metrics import get_metric, list_metrics, registry

    if explain is not None:
        metric = get_metric(explain)
        aliases = registry.aliases_of(metric.name)
        click.echo(f"{metric.name}  sub-scores: {', '.join(metric.subscores)}  "
                   f"({'corpus-level' if metric.corpus_level else 'per item'})"
                   + (f"  aliases: {', '.join(aliases)}" if aliases else ""))
        click.echo("")
        click.echo(metric.explain.rstrip())
        return

    from harness.console import print_table
    from rich.table import Table

    table = Table(title="Metrics (first sub-score = main; details: harness metrics --explain NAME)")
    table.add_column("metric", style="bold", no_wrap=True)
    table.add_column("sub-scores", no_wrap=True)
    table.add_column("level", no_wrap=True)
    table.add_column("definition")
    for metric in list_metrics():
        table.add_row(metric.name, ", ".join(metric.subscores),
                      "corpus" if metric.corpus_level else "item", metric.summary)
    print_table(table)
