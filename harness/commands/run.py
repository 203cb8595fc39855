"""``harness run``: evaluate a model on tasks at fixed (``--knobs``) or policy-chosen knobs, with
accuracy, measured latency and estimated latency side by side.

Everything is validated before any weights load: tasks, data, knobs (against the model's config),
importance file, estimator spec, policy configuration, output directories (writable, and
compatible with any run already there). Each task writes its own run directory (``run.json``,
``samples.jsonl``, ``summary.json``); re-running the same command into the same ``--output``
resumes.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import click

from harness.commands.options import DTYPES, model_run_options  # noqa: F401  (DTYPES: re-exported)
from harness.config import config_option
from harness.errors import HarnessError



# -- console helpers --------------------------------------------------------------------------------
def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


from harness.runner import (DEFAULT_EXPERTS_IMPL, ensure_fitted, prepare_estimator, resolve_device,  # noqa: E402,F401
                            resolve_dtype, warn)


class RichReporter:
    """Progress bar on stderr: items, items/s, ETA and the configuration being run."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress = None
        self.task_id = None

    def start(self, task: str, total: int, done: int) -> None:
        if self.quiet:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                                   TimeRemainingColumn)
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task):
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.2f} it/s" if speed else "-- it/s")

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), Speed(),
                                 TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[config]}"),
                                 console=_stderr_console(), transient=False)
        self.progress.start()
        self.task_id = self.progress.add_task(task, total=total, completed=done, config="")
        if done:
            self.progress.console.print(f"resuming: {done} of {total} samples already done")

    def advance(self, n: int, config: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, advance=n, config=config)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def warn(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)
        else:
            warn(message)


def _fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def summary_table(summaries: list[dict]):
    from rich.table import Table

    s0 = summaries[0]
    mode = s0["latency_mode"]
    unit = "ms per batch" if mode == "per-batch" else "ms per sample"
    sources = sorted({(s.get("data") or {}).get("source", "?") for s in summaries})
    synthetic = any((s.get("data") or {}).get("synthetic") for s in summaries)
    data_note = ("data: SYNTHETIC bundled samples, not the real benchmark" if synthetic
                 else f"data: {', '.join(sources)}")
    table = Table(title=f"model {s0['model']} on {s0['device_name']} ({s0['device']}, {s0['dtype']}); latency in {unit}",
                  caption=data_note, caption_justify="left", title_justify="left")
    for col in ("task", "config", "n", "fail", "score", "95% CI", "prefill", "decode", "total", "est.", "MAPE"):
        table.add_column(col, justify="left" if col in ("task", "config", "95% CI") else "right", no_wrap=True)
    for s in summaries:
        m = s["latency_ms"]["measured"]
        e = s["latency_ms"]["estimated"] or {}
        ci = s.get("score_ci95")
        score = "-" if s.get("score") is None else f"{s['score']:.3f}"
        ci_txt = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci and s.get("score") is not None else "-"
        mape = s["estimator_error"].get("mape_total")
        cfg = s.get("config") or (s.get("policy") or {}).get("name") or "-"
        table.add_row(s["task"], cfg, str(s["n"]), str(s["n_failed"]), score, ci_txt, _fmt(m["prefill"]["mean"]),
                      _fmt(m["decode"]["mean"]), _fmt(m["total"]["mean"]),
                      _fmt((e.get("total") or {}).get("mean")), "-" if mape is None else f"{100 * mape:.1f}%")
    return table


# -- validation helpers -------------------------------------------------------------------------------
def split_tasks(values) -> list[str]:
    names: list[str] = []
    for v in values or ():
        for part in str(v).split(","):
            part = part.strip()
            if part and part not in names:
                names.append(part)
    return names


def resolve_tasks(names: list[str]) -> list:
    import harness.tasks as task_pkg

    if not names:
        raise HarnessError("no task given; pass --task NAME (repeatable, comma list, or 'all'); see `harness tasks`")
    if any(n.lower() == "all" for n in names):
        names = list(getattr(task_pkg, "BUILTIN_TASKS", ())) or task_pkg.registry.names()
    out, seen = [], set()
    for n in names:
        t = task_pkg.get_task(n)
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out


def default_output(task_names: list[str], config_slug: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    label = task_names[0] if len(task_names) == 1 else f"{len(task_names)}tasks"
    return Path("runs") / f"{stamp}-{label}-{config_slug}"


def file_sha256(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# -- the command ----------------------------------------------------------------------------------------
@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@config_option("run")
@click.option("--task", "-t", "tasks", multiple=True, help="Task name(s): repeat, comma-separate, or 'all'.")
@click.option("--knobs", "-k", help="B,K[,TIER]: active blocks (block 0 included), top_k, tier. Default: the full model.")
@click.option("--tier", help="Image tier (low/medium/high); overrides the third --knobs field.")
@model_run_options(
    output=click.option("--output", "-o", type=str,
                        help="Run directory (default runs/<time>-<task>-<config>/; one subfolder per task when several)."),
    estimator="builtin (default), none, a fit .json, or module:attr[@checkpoint] (design section 2 signature).",
    seed="Seed of the subset, bootstrap and policies.",
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
def command(tasks, knobs, tier, model, data, limit, batch_size, importance, estimator, output, device, dtype, seed, style,
            max_new_tokens, include_path, compile_, experts_impl, policy, policy_args, latency_budget_ms, accuracy_table,
            knob_space, quiet, as_json):
    """Evaluate MODEL on TASKS: accuracy with a bootstrap CI, measured and estimated latency."""
    from harness.knobs import Knobs, parse_tier
    from harness.registry import import_path

    t_start = time.perf_counter()
    # 1. plugins, tasks, metrics
    for folder in include_path:
        import_path(folder)
    task_objs = resolve_tasks(split_tasks(tasks))
    import harness.metrics as metric_pkg

    metric_objs = {t.name: metric_pkg.get_metric(t.metric) for t in task_objs}
    if style is not None:
        for t in task_objs:
            styles = tuple(getattr(t, "styles", ()) or ())
            if styles and style not in styles:
                raise HarnessError(f"task '{t.name}' has no prompt style '{style}'; use one of {', '.join(styles)}")

    # 2. model config (no weights), device, knobs
    from harness import backends

    info = backends.describe(model)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    impl = experts_impl or DEFAULT_EXPERTS_IMPL
    if tier is not None:
        tier = parse_tier(tier)
    fixed = None
    if knobs is not None:
        fixed = Knobs.parse(knobs, tier=tier)
    elif policy in (None, "fixed") and not any(a.startswith("knobs=") for a in policy_args):
        fixed = Knobs(info.n_blocks, info.default_top_k, tier)
    if fixed is not None:
        info.validate(fixed)
        if fixed.tier is None and info.default_tier:
            fixed = fixed.with_tier(info.default_tier)
    if fixed is not None and policy not in (None, "fixed"):
        raise HarnessError(f"--knobs and --policy {policy} are exclusive; --knobs means --policy fixed")
    imp_hash = None
    if importance is not None:
        from harness.knobs import load_importance

        load_importance(importance, info.n_blocks)
        imp_hash = file_sha256(importance)

    # 3. estimator, policy
    est, est_note = prepare_estimator(estimator, info, dev, quiet)
    from harness.policies import parse_policy_args
    from harness.runner import build_policy, policy_config, task_max_new_tokens

    pargs = parse_policy_args(policy_args)
    pol_spec = policy or "fixed"
    if pol_spec == "fixed" and fixed is not None:
        pargs.setdefault("knobs", str(fixed))
    space = None
    if knob_space is not None:
        from harness.policies import load_knob_space

        space = load_knob_space(knob_space, info)
    mnt_global = max_new_tokens or max(task_max_new_tokens(t, style) for t in task_objs)
    policy_obj = build_policy(pol_spec, pargs, info=info, estimator=est, knob_space=space, accuracy_table=accuracy_table,
                              seed=seed, max_new_tokens=mnt_global, tasks=tuple(t.name for t in task_objs),
                              latency_budget_ms=latency_budget_ms)
    pcfg = policy_config(fixed, pol_spec, {k: v for k, v in pargs.items()}, info)

    # 4. data
    from harness.tasks.data import load_samples

    loaded = {t.name: load_samples(t, data, limit, seed) for t in task_objs}
    for name, ld in loaded.items():
        if not ld.samples:
            raise HarnessError(f"task '{name}' has no samples in --data {data}; check the path or --limit")

    # 5. output directories (writable, resumable) -- before any weights load
    from harness.records import RunRecord
    from harness.runner import make_run_config

    cfg_slug = fixed.slug if fixed is not None else f"policy-{pol_spec.replace(':', '-').replace('.', '-')}"
    root = Path(output) if output else default_output([t.name for t in task_objs], cfg_slug)
    extra = {"importance": imp_hash, "experts_impl": impl, "compile": bool(compile_), "accuracy_table": accuracy_table,
             "knob_space": knob_space}
    records = {}
    for t in task_objs:
        folder = root if len(task_objs) == 1 else root / t.name
        cfg = make_run_config(task=t, model=info.name, data=loaded[t.name], policy=pcfg, batch_size=batch_size,
                              style=style, max_new_tokens=max_new_tokens or task_max_new_tokens(t, style), device=dev,
                              dtype=dt, seed=seed, estimator=estimator, latency_budget_ms=latency_budget_ms, extra=extra)
        records[t.name] = RunRecord.open(folder, cfg)
    t_validated = time.perf_counter()

    # 6. load the model once; a quick estimator fit if this (model, device) has none
    backend = backends.load(model, device=dev, dtype=dt, importance=importance, experts_impl=impl, compile=compile_)
    t_loaded = time.perf_counter()
    est, fit_note = ensure_fitted(est, backend, info, dev, seed, quiet)
    est_note = est_note or fit_note

    # 7. run each task
    from harness.runner import execute

    summaries = []
    for t in task_objs:
        rep = RichReporter(quiet=quiet)
        summary, _ = execute(backend=backend, task=t, metric=metric_objs[t.name], data=loaded[t.name],
                             record=records[t.name], policy=policy_obj, fixed_knobs=fixed, estimator=est,
                             estimator_note=est_note, batch_size=batch_size, style=style,
                             max_new_tokens=max_new_tokens or task_max_new_tokens(t, style),
                             latency_budget_ms=latency_budget_ms, seed=seed, reporter=rep)
        summary["timing"] = {**(summary.get("timing") or {}), "startup_s": round(t_validated - t_start, 3),
                             "model_load_s": round(t_loaded - t_validated, 3)}
        records[t.name].write_summary(summary)
        summaries.append(summary)
        if (summary.get("estimator_info") or {}).get("disabled"):
            est, est_note = None, summary["notes"][-1] if summary.get("notes") else est_note  # do not retry a failing plugin
    if as_json:
        import json

        click.echo(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2, default=str))
    if not quiet:
        from rich.console import Console

        console = Console(stderr=as_json)
        if not console.is_terminal:
            console.width = max(console.width, 120)
        console.print(summary_table(summaries))
        for s in summaries:
            for note in s.get("notes", []):
                console.print(f"[dim]{s['task']}: {note}[/]", highlight=False)
        console.print(f"run directory: {root}", highlight=False)
