"""``harness gate --baseline FILE RUN_DIRS...`` (or ``--write-baseline FILE RUN_DIRS...``)."""

from __future__ import annotations

import sys

import click

from harness.errors import HarnessError


@click.command("gate")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--baseline", type=click.Path(dir_okay=False), help="Committed baseline JSON to compare against.")
@click.option("--write-baseline", "write_to", type=click.Path(dir_okay=False),
              help="Write the baseline (per-sample scores, latency p50) of RUN_DIRS to this file instead of gating.")
@click.option("--tolerance", type=float, default=0.02, show_default=True,
              help="Largest tolerated absolute drop of the main score (mean paired difference).")
@click.option("--latency-tolerance", type=float, default=1.5, show_default=True,
              help="Largest tolerated ratio of candidate to baseline p50 total latency.")
@click.option("--no-latency", is_flag=True, help="Do not gate latency (e.g. on a noisy shared CI machine).")
@click.option("--allow-missing-samples", is_flag=True,
              help="Report baseline samples missing from a candidate run instead of failing; gate the rest.")
@click.option("--allow-missing-configs", is_flag=True,
              help="Report baseline configurations with no run among RUN_DIRS instead of failing.")
@click.option("--require-all", is_flag=True, hidden=True,
              help="Accepted for older scripts: requiring every configuration is the default.")
@click.option("--allow-model-change", is_flag=True,
              help="Gate a different model (or retrained weights) against the baseline: paired test on the common samples.")
@click.option("--two-sided", is_flag=True,
              help="Also fail on a significant score rise (any change of a fixed model's score: for the harness's own CI).")
@click.option("--max-changed", type=float, default=None,
              help="Fail when more than this share (0..1) of predictions differ from the baseline's (deterministic devices).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the paired bootstrap.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="Also write a markdown summary (e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON instead of the rich table.")
@click.pass_context
def command(ctx, run_dirs, baseline, write_to, tolerance, latency_tolerance, no_latency, allow_missing_samples,
            allow_missing_configs, require_all, allow_model_change, two_sided, max_changed, seed, markdown_path, as_json):
    """Compare runs with a committed baseline: paired bootstrap on per-sample scores (regression
    when the drop exceeds --tolerance and its CI excludes zero) and p50 latency ratio (measured
    latency only on the baseline's device; elsewhere "not comparable (device)" and only the
    estimate is checked). Missing samples and configurations fail unless allowed.
    Exit 0 pass, 1 regression, 2 bad input.

    RUN_DIRS are run directories or folders holding them; runs are matched to baseline entries
    by task and configuration (or policy)."""
    from harness.reports import gate
    from harness.reports.rundirs import load_runs

    if bool(baseline) == bool(write_to):
        raise HarnessError("pass exactly one of --baseline FILE (to gate) or --write-baseline FILE (to write one)")
    runs = load_runs(run_dirs, warn=_warn)
    if write_to:
        doc = gate.write_baseline(write_to, runs)
        click.echo(f"wrote baseline {write_to} ({len(doc['runs'])} configuration(s))")
        return
    entries = gate.read_baseline(baseline)
    lat_tol = None if no_latency else latency_tolerance
    if require_all and allow_missing_configs:
        raise HarnessError("--require-all and --allow-missing-configs contradict each other; requiring all is the default, drop --require-all")
    results = gate.run_gate(runs, entries, tolerance=tolerance, latency_tolerance=lat_tol,
                            allow_missing_configs=allow_missing_configs, allow_missing_samples=allow_missing_samples,
                            allow_model_change=allow_model_change, seed=seed, two_sided=two_sided, max_changed=max_changed)
    ok = gate.verdict(results)
    from harness.reports import gate_report

    if as_json:
        import json

        click.echo(json.dumps({"pass": ok, "caveats": gate_report.caveat_lines(results),
                               "results": [r.to_dict() for r in results]}, indent=2))
    else:
        _print_rich(results, ok)
    if markdown_path:
        from harness.jsonio import atomic_write_text

        text = gate_report.to_markdown(results, tolerance=tolerance, latency_tolerance=lat_tol, baseline=baseline,
                                two_sided=two_sided, max_changed=max_changed)
        try:
            atomic_write_text(markdown_path, text)
        except OSError as exc:
            raise HarnessError(f"cannot write '{markdown_path}': {exc.strerror or exc}; pass a writable --markdown path")
    if not ok:
        sys.exit(1)


def _print_rich(results, ok) -> None:
    from rich.table import Table

    from harness.console import print_table
    from harness.reports.gate_report import COLUMNS, caveat_lines, cells

    table = Table(title=f"harness gate: {'PASS' if ok else 'FAIL'}", title_justify="left")
    for col in COLUMNS:
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(*cells(r), style="red" if r.failed else None)
    print_table(table)
    for line in caveat_lines(results):
        click.echo(f"note: {line}")


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)
