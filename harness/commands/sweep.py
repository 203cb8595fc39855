"""``harness sweep``: a knob grid over tasks with one model load, one run directory each."""

from __future__ import annotations

from pathlib import Path

import click

from harness.commands.options import model_run_options
from harness.option_files import config_option
from harness.errors import HarnessError


@click.command("sweep", context_settings={"help_option_names": ["-h", "--help"]})
@config_option("sweep")
@click.option("--grid", "-g", "grid_spec", required=True,
              help='Grid: a name in configs/grids (reference-full, ci), a TOML file, or inline '
                   '"num_blocks=12..16 top_k=2,4,6,8 tier=low,high".')
@click.option("--task", "-t", "tasks", multiple=True,
              help="Task name(s): repeat, comma-separate, or 'all'. Default: the grid file's tasks.")
@model_run_options(
    output=click.option("--output", "-o", type=str, default="runs/sweep", show_default=True,
                        help="Sweep folder: one run directory per configuration, <output>/<task>/<config>/. Re-run to resume."),
    limit="Evaluate a seeded subset of this many samples per task.",
    style="Prompt style of the tasks (see `harness tasks`).",
    max_new_tokens="Override the tasks' output length limit.",
)
@click.option("--dry-run", is_flag=True, help="Validate and print the plan (done / to run) without loading the model.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or table.")
def command(grid_spec, tasks, model, data, limit, batch_size, check_batch1, host_overlap, importance, estimator, output, device, dtype, seed, subset_seed,
            style, max_new_tokens, max_failed, include_path, engine, experts_impl, model_config, trust_remote_code, dist_timeout,
            dry_run, quiet):
    """Run every configuration of a knob grid on every task, loading the model once.

    Each (task, configuration) gets its own run directory, <output>/<task>/<knobs>/ (e.g.
    runs/sweep/vqav2/b14-k6-high). Re-running the same command resumes the sweep: finished
    configurations are skipped and a half-done one continues where it stopped. Everything is
    validated before the model loads; when nothing is left to run the model is not loaded.
    Under torchrun the run directories are dealt to the processes, balanced by estimated cost."""
    from harness import api, sweep
    from harness.distributed import is_main_process
    from harness.jsonio import read_json
    from harness.progress import RichReporter, summary_table
    from harness.sharding import deal_units, wait_for_ranks

    main = is_main_process()
    quiet = quiet or not main  # rank 0 speaks for a torchrun job

    grid = sweep.load_grid(grid_spec)
    from harness.tasks import split_names

    names = split_names(tasks) or grid.tasks
    if not names:
        raise HarnessError(f"no task given and grid {grid.source} names none; pass --task NAME (repeatable, comma list, or 'all')")
    ctx = api.prepare(task=names, model=model, data=data, limit=limit, batch_size=batch_size, importance=importance,
                      estimator=estimator, device=device, dtype=dtype, seed=seed, subset_seed=subset_seed, style=style,
                      max_new_tokens=max_new_tokens, experts_impl=experts_impl, include_path=include_path, quiet=quiet,
                      engine=engine, trust_remote_code=trust_remote_code, model_config=model_config,
                      dist_timeout=dist_timeout, check_batch1=check_batch1, host_overlap=host_overlap)
    configs = sweep.validate_configs(grid.configs, ctx.info, grid.source)
    by_name = {t.name: t for t in ctx.tasks}
    units = [api.Unit(task=by_name[item.task], folder=item.folder, knobs=item.knobs)
             for item in sweep.plan([t.name for t in ctx.tasks], configs, output)]

    def read_status():
        return [sweep.run_status(u.folder, api.unit_run_config(ctx, u), len(ctx.data[u.task.name].samples)) for u in units]

    states = ctx.world.from_main("reading the sweep folder", read_status) if ctx.world is not None else read_status()
    status = {id(u): st for u, st in zip(units, states)}
    pending = [u for u in units if not status[id(u)][0]]
    if dry_run and not main:
        return
    if not quiet or dry_run:
        click.echo(f"sweep {grid.name}: {len(ctx.tasks)} task(s) x {len(configs)} configuration(s) = {len(units)} run(s); "
                   f"{len(units) - len(pending)} done, {len(pending)} to run -> {output}", err=not dry_run)
    if dry_run:
        for u in sorted(units, key=lambda u: str(u.folder)):
            n, n_done = len(ctx.data[u.task.name].samples), status[id(u)][1]
            state = "done" if n_done >= n and (u.folder / "summary.json").is_file() else f"{n_done}/{n}"
            click.echo(f"  {u.task.name:<12} {str(u.knobs):<16} {state:<8} {u.folder}")
        return
    # open the unfinished run directories before any weights load (checks they are writable)
    if pending:
        api.bind(ctx, pending)
    pending = deal_units(ctx, pending, [len(ctx.data[u.task.name].samples) - status[id(u)][1] for u in pending])
    api.open_units(ctx, pending)
    api.run_units(ctx, pending, reporter=lambda: RichReporter(quiet=quiet))
    wait_for_ranks(ctx, len(pending))
    if pending and not quiet and "model_load_s" in ctx.timing:
        click.echo(f"model {ctx.info.name} loaded once in {ctx.timing['model_load_s']:.1f}s", err=True)
    if not main:
        return

    ordered = sorted(units, key=lambda u: (u.task.name, u.knobs.num_blocks, u.knobs.top_k, str(u.knobs)))
    summaries = [read_json(u.folder / "summary.json", "run summary") for u in ordered]
    if not quiet:
        from harness.console import console, print_table

        print_table(summary_table(summaries))
        console().print(f"sweep folder: {output}  (next: harness pareto {output} -o {Path(output) / 'pareto'})",
                        highlight=False, soft_wrap=True)
    from harness.summary import check_failures

    check_failures(zip(summaries, [u.folder for u in ordered]), max_failed)
