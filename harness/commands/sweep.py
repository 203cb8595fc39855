"""``harness sweep``: a knob grid over tasks with one model load, one run directory each."""

from __future__ import annotations

import time
from pathlib import Path

import click

from harness.commands.options import model_run_options
from harness.config import config_option
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
def command(grid_spec, tasks, model, data, limit, batch_size, importance, estimator, output, device, dtype, seed, style,
            max_new_tokens, include_path, compile_, experts_impl, dry_run, quiet):
    """Run every configuration of a knob grid on every task, loading the model once.

    Each (task, configuration) gets its own run directory, <output>/<task>/<knobs>/ (e.g.
    runs/sweep/vqav2/b14-k6-high). Re-running the same command resumes the sweep: finished
    configurations are skipped and a half-done one continues where it stopped. Everything is
    validated before the model loads; when nothing is left to run the model is not loaded."""
    from harness import sweep
    from harness.commands.run import (RichReporter, ensure_fitted, file_sha256, prepare_estimator, resolve_device,
                                      resolve_dtype, resolve_tasks, split_tasks, summary_table)
    from harness.registry import import_path

    for folder in include_path:
        import_path(folder)
    grid = sweep.load_grid(grid_spec)
    names = split_tasks(tasks) or grid.tasks
    if not names:
        raise HarnessError(f"no task given and grid {grid.source} names none; pass --task NAME (repeatable, comma list, or 'all')")
    task_objs = resolve_tasks(names)
    import harness.metrics as metric_pkg

    metric_objs = {t.name: metric_pkg.get_metric(t.metric) for t in task_objs}

    from harness import backends

    info = backends.describe(model)
    configs = sweep.validate_configs(grid.configs, info, grid.source)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    from harness.runner import DEFAULT_EXPERTS_IMPL

    impl = experts_impl or DEFAULT_EXPERTS_IMPL
    imp_hash = None
    if importance is not None:
        from harness.knobs import load_importance

        load_importance(importance, info.n_blocks)
        imp_hash = file_sha256(importance)

    from harness.tasks.data import load_samples

    loaded = {t.name: load_samples(t, data, limit, seed) for t in task_objs}
    for name, ld in loaded.items():
        if not ld.samples:
            raise HarnessError(f"task '{name}' has no samples in --data {data}; check the path or --limit")

    # open every run directory before any weights load: refuses folders holding another configuration
    from harness.records import RunRecord
    from harness.runner import make_run_config, policy_config, task_max_new_tokens

    by_name = {t.name: t for t in task_objs}
    extra = {"importance": imp_hash, "experts_impl": impl, "compile": bool(compile_), "accuracy_table": None,
             "knob_space": None}
    pending, done = [], []
    for item in sweep.plan([t.name for t in task_objs], configs, output):
        t = by_name[item.task]
        cfg = make_run_config(task=t, model=info.name, data=loaded[t.name],
                              policy=policy_config(item.knobs, "fixed", {"knobs": str(item.knobs)}, info),
                              batch_size=batch_size, style=style,
                              max_new_tokens=max_new_tokens or task_max_new_tokens(t, style), device=dev, dtype=dt,
                              seed=seed, estimator=estimator, latency_budget_ms=None, extra=extra)
        finished, n_done = sweep.run_status(item.folder, cfg, len(loaded[t.name].samples))
        (done if finished else pending).append((item, cfg, n_done))
    total = len(done) + len(pending)
    if not quiet or dry_run:
        click.echo(f"sweep {grid.name}: {len(task_objs)} task(s) x {len(configs)} configuration(s) = {total} run(s); "
                   f"{len(done)} done, {len(pending)} to run -> {output}", err=not dry_run)
    if dry_run:
        for item, _, n_done in sorted(done + pending, key=lambda p: str(p[0].folder)):
            n = len(loaded[item.task].samples)
            state = "done" if n_done >= n and (item.folder / "summary.json").is_file() else f"{n_done}/{n}"
            click.echo(f"  {item.task:<12} {str(item.knobs):<16} {state:<8} {item.folder}")
        return
    # open the unfinished run directories before any weights load (checks they are writable)
    pending = [(item, RunRecord.open(item.folder, cfg)) for item, cfg, _ in pending]

    if pending:
        est, est_note = prepare_estimator(estimator, info, dev, quiet)
        from harness.runner import build_policy, execute

        t0 = time.perf_counter()
        backend = backends.load(model, device=dev, dtype=dt, importance=importance, experts_impl=impl, compile=compile_)
        if not quiet:
            click.echo(f"model {info.name} loaded once in {time.perf_counter() - t0:.1f}s", err=True)
        est, fit_note = ensure_fitted(est, backend, info, dev, seed, quiet)
        est_note = est_note or fit_note
        for item, record in pending:
            t = by_name[item.task]
            mnt = max_new_tokens or task_max_new_tokens(t, style)
            policy = build_policy("fixed", {"knobs": str(item.knobs)}, info=info, estimator=est, seed=seed,
                                  max_new_tokens=mnt, tasks=(t.name,))
            rep = RichReporter(quiet=quiet)
            summary, _ = execute(backend=backend, task=t, metric=metric_objs[t.name], data=loaded[t.name], record=record,
                                 policy=policy, fixed_knobs=item.knobs, estimator=est, estimator_note=est_note,
                                 batch_size=batch_size, style=style, max_new_tokens=mnt, seed=seed, reporter=rep)
            if (summary.get("estimator_info") or {}).get("disabled"):
                est = None  # do not retry a failing estimator plugin on every configuration
                est_note = (summary.get("notes") or [est_note])[-1]

    if not quiet:
        from rich.console import Console

        from harness.jsonio import read_json

        items = [p[0] for p in done + pending]
        summaries = [read_json(item.folder / "summary.json", "run summary") for item in sorted(
            items, key=lambda i: (i.task, i.knobs.num_blocks, i.knobs.top_k, str(i.knobs)))]
        console = Console(stderr=True)
        if not console.is_terminal:
            console.width = max(console.width, 120)
        console.print(summary_table(summaries))
        console.print(f"sweep folder: {output}  (next: harness pareto {output} -o {Path(output) / 'pareto'})",
                      highlight=False)
