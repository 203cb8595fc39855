"""``harness compare POLICY_RUN... --sweep SWEEP_DIR``: judge a controller against the fixed frontier and the oracle."""

from __future__ import annotations

import click

from harness.errors import HarnessError
from harness.stats import N_BOOT


@click.command("compare")
@click.argument("policy_runs", nargs=-1, required=True, type=click.Path())
@click.option("--sweep", "sweep_dir", required=True, type=click.Path(),
              help="Output folder of `harness sweep` (fixed-configuration run directories) of the same model, data and device.")
@click.option("--budget-ms", type=click.FloatRange(min=0, min_open=True),
              help="Per-sample latency budget to count adherence on (default: each policy run's own budget).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Write compare.md, compare.json and compare-<task>.png into this folder.")
@click.option("--latency", type=click.Choice(["auto", "measured", "estimated_batch1", "estimated"]), default="auto",
              show_default=True,
              help="Per-sample latency the comparison is on; auto = measured when every run is at batch 1, else estimated_batch1.")
@click.option("--threshold", type=float, default=None,
              help="Oracle: a sample is answered when its score >= this (default: 1.0 for em/mc, > 0.5 otherwise), as --policy oracle.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap intervals and P(beats).")
@click.option("--n-boot", type=int, default=N_BOOT, show_default=True, help="Bootstrap resamples.")
@click.option("--no-plot", is_flag=True, help="Skip the PNG plots.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document instead of the tables.")
def command(policy_runs, sweep_dir, budget_ms, out_dir, latency, threshold, seed, n_boot, no_plot, as_json):
    """Per task, over the sample ids the policy runs and the sweep share: the policy's score (95% CI)
    and per-sample latency; the best single fixed configuration within its mean latency
    (frontier_step) and the upper convex hull of the fixed configurations at that latency
    (frontier_hull), each with the paired difference (95% CI) and P(beats); the oracle and
    gap_closed; with several runs of one policy, the area under its curve against the hull's;
    budget adherence (Wilson 95%) and overshoot; policy_ms and host_ms.

    POLICY_RUN are run directories (or folders of them) of `harness run --policy ...`."""
    from harness.reports import compare
    from harness.reports.rundirs import load_runs

    policies = load_runs(policy_runs, what="policy run directories", warn=_warn)
    sweep = load_runs([sweep_dir], what="sweep run directories", warn=_warn)
    tables = compare.build(policies, sweep, budget_ms=budget_ms, latency=latency, seed=seed, n_boot=n_boot,
                           threshold=threshold, sweep_label=f"--sweep '{sweep_dir}'")
    if as_json:
        click.echo(compare.to_json(tables, seed=seed, n_boot=n_boot), nl=False)
    else:
        _print_rich(tables)
    if out_dir:
        try:
            written = compare.write_outputs(tables, out_dir, seed=seed, n_boot=n_boot, png=not no_plot)
        except OSError as exc:
            raise HarnessError(f"cannot write the comparison to '{out_dir}': {exc.strerror or exc}; pass a writable -o folder")
        if not as_json:
            click.echo("wrote " + ", ".join(str(p) for p in written))


def _print_rich(tables) -> None:
    from harness.console import print_table
    from harness.reports.compare import config_rows, curve_lines, oracle_line, policy_rows

    for t in tables:
        d = t.doc
        lat = d["latency"]
        print_table(_table(f"{d['task']} ({d['metric']}) - {d['model']} - {d['environment']} - {d['n_compared']} samples "
                           f"- latency: {lat['label']}", *policy_rows(d)))
        click.echo(oracle_line(d))
        for line in curve_lines(d):
            click.echo(line)
        print_table(_table(f"{d['task']}: fixed configurations", *config_rows(d)))
        for n in d["notes"]:
            click.echo(f"note: {n}")


def _table(title: str, header, rows):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in header:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r)
    return table


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)
