"""``harness run``: evaluate a model on tasks at fixed (``--knobs``) or policy-chosen knobs, with
accuracy, measured latency and estimated latency side by side.

Everything is validated before any weights load: tasks, data, knobs (against the model's config),
importance file, estimator spec, policy configuration, output directories (writable, and
compatible with any run already there). Each task writes its own run directory (``run.json``,
``samples.jsonl``, ``summary.json``); re-running the same command into the same ``--output``
resumes.
"""

from __future__ import annotations

import click

from harness.commands.options import model_run_options
from harness.option_files import config_option


# -- the command ----------------------------------------------------------------------------------------
@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@config_option("run")
@click.option("--task", "-t", "tasks", multiple=True, help="Task name(s): repeat, comma-separate, or 'all'.")
@click.option("--knobs", "-k", help="B,K[,TIER]: active blocks (block 0 included), top_k, tier. Default: the full model.")
@click.option("--tier", help="Image tier (low/medium/high); overrides the third --knobs field.")
@model_run_options(
    output=click.option("--output", "-o", type=str,
                        help="Run directory (default runs/<time>-<task>-<config>/; one subfolder per task when several)."),
    estimator="builtin (default), none, a fit .json, or module:attr[@checkpoint] (signature: docs/contracts.md).",
    seed="Seed of policies and the bootstrap (the --limit subset has its own --subset-seed).",
    include_path="Folder of plugin modules (tasks, metrics, policies) to import.",
    experts_impl="transformers experts implementation (default grouped_mm; eager where unavailable).",
)
@click.option("--policy", help="Per-sample knob policy: fixed, budget, random, oracle, or package.module:Name.")
@click.option("--policy-arg", "policy_args", multiple=True, help="key=value for the policy (repeatable).")
@click.option("--latency-budget-ms", type=click.FloatRange(min=0, min_open=True), help="Latency budget per sample for budget policies.")
@click.option("--accuracy-table", help="Run dirs / pareto JSON from a sweep (budget and oracle policies).")
@click.option("--knob-space", help="Candidate configurations: a name in configs/knob_spaces or a TOML path.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or table.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary JSON to stdout (a list when several tasks).")
def command(tasks, knobs, tier, model, data, limit, batch_size, check_batch1, host_overlap, importance, estimator, output, device, dtype, seed, subset_seed,
            style, max_new_tokens, max_failed, include_path, engine, experts_impl, model_config, trust_remote_code, dist_timeout,
            policy, policy_args, latency_budget_ms,
            accuracy_table, knob_space, quiet, as_json):
    """Evaluate MODEL on TASKS: accuracy with a bootstrap CI, measured and estimated latency.

    Results (the table, or --json) go to stdout; progress and warnings to stderr. Exit 0, 1 when
    all samples of a run failed (or more than --max-failed of them), 2 on bad input.

    Under torchrun (torchrun --nproc-per-node N -m harness run ...) the samples are spread over the
    processes and rank 0 writes the one merged run directory."""
    from harness import api
    from harness.distributed import is_main_process
    from harness.policies import parse_policy_args
    from harness.progress import RichReporter, summary_table

    main = is_main_process()
    quiet, as_json = quiet or not main, as_json and main  # rank 0 speaks for a torchrun job

    result = api.evaluate(list(tasks), knobs, model=model, data=data, limit=limit, tier=tier, batch_size=batch_size,
                          policy=policy, policy_args=parse_policy_args(policy_args),
                          latency_budget_ms=latency_budget_ms, accuracy_table=accuracy_table, knob_space=knob_space,
                          importance=importance, estimator=estimator, output=output, device=device, dtype=dtype,
                          seed=seed, subset_seed=subset_seed, style=style, max_new_tokens=max_new_tokens,
                          experts_impl=experts_impl,
                          include_path=include_path, quiet=quiet, engine=engine,
                          trust_remote_code=trust_remote_code, model_config=model_config, dist_timeout=dist_timeout, check_batch1=check_batch1, host_overlap=host_overlap,
                          reporter=lambda: RichReporter(quiet=quiet))
    if not main:
        return
    summaries = result.summaries
    root = result.run_dirs[0] if len(result.run_dirs) == 1 else result.run_dirs[0].parent
    if as_json:
        import json

        click.echo(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2, default=str))
    if not quiet:
        from harness.console import console, print_table

        print_table(summary_table(summaries), stderr=as_json)
        out = console(stderr=as_json)
        for s in summaries:
            for note in s.get("notes", []):
                out.print(f"[dim]{s['task']}: {note}[/]", highlight=False, soft_wrap=True)
        out.print(f"run directory: {root}", highlight=False, soft_wrap=True)
    from harness.summary import check_failures

    check_failures(zip(summaries, result.run_dirs), max_failed)
