"""``harness profile``: measure latency over knobs x tiers x prompt lengths x output lengths x batch
sizes on this device (the run's engine, warm-up and clock), fit the built-in estimator, report its
error on held-out configurations (single measurements first) and save the fit, keyed by the
execution mode, in the user cache (or ``--output``), with the raw measurements beside it.

The expected duration is printed before measuring; measurements are saved as they come, and the
same command after an interruption (Ctrl-C) resumes them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from harness.commands.options import EXPERTS_IMPLS
from harness.option_files import config_option
from harness.errors import HarnessError


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def heldout_table(result, title: str):
    """Held-out error: single measurements (the headline), then against medians of repeats, and the noise floor."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("part", "MAPE (single)", "within +-5%", "within +-10%", "bias", "n", "MAPE (medians)", "noise floor"):
        table.add_column(col, justify="left" if col == "part" else "right")
    med = result.extra.get("heldout_medians") or {}
    noise = result.extra.get("measurement_noise") or {}
    for part in ("prefill", "decode", "total"):
        s = result.heldout.get(part) or {}
        b = s.get("bias")
        table.add_row(part, _pct(s.get("mape")), _pct(s.get("within_5pct")), _pct(s.get("within_10pct")),
                      "-" if b is None else f"{100 * b:+.1f}%", str(s.get("n", 0)), _pct((med.get(part) or {}).get("mape")),
                      _pct((noise.get(part) or {}).get("mean_rel_dev")))
    return table


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@click.command("profile", context_settings={"help_option_names": ["-h", "--help"]})
@config_option("profile")
@click.option("--model", "-m", default="reference", show_default=True, help="Model spec (see `harness models`).")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cpu, cuda[:N].")
@click.option("--dtype", type=click.Choice(("auto", "float32", "bfloat16", "float16")), default="auto", show_default=True)
@click.option("--grid", help="blocks=12,14,16;top_k=1,4,8;tier=low,high;prompt=16,64;output=8,24;batch=1,8 (any subset; "
                             "defaults cover the tasks' prompts and outputs within the model's positions).")
@click.option("--tasks", default=None, help="Tasks whose longest prompt and max_new_tokens bound the default grid (default: all built-in).")
@click.option("--batch-sizes", "batch_sizes", default=None, help="Batch sizes to profile, e.g. 1,8,32 (default 1): the batch sizes your runs use.")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True, help="Timed calls per grid point.")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Most untimed warm-up calls per (configuration, tier, batch bucket) (default: the run's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--holdout", type=click.FloatRange(0.0, 0.9), default=0.25, show_default=True, help="Share of configurations held out of the fit for the error report.")
@click.option("--importance", type=str, help="Block importance JSON.")
@click.option("--experts-impl", type=click.Choice(EXPERTS_IMPLS), default=None)
@click.option("--engine", type=click.Choice(("auto", "fast", "eager")), default="auto", show_default=True,
              help="auto = fast on CUDA, eager on CPU (see `harness run --help`); a fit is valid for its engine only.")
@click.option("--trust-remote-code", is_flag=True, help="Allow molmoe: checkpoints to run their own Python files (model, config and processor classes) in this process; only for checkpoints you trust.")
@click.option("--output", "-o", type=str, help="Fit file (default: the user cache, $HARNESS_CACHE_DIR or $XDG_CACHE_HOME/harness/estimators/).")
@click.option("--from-measurements", "from_measurements", type=click.Path(dir_okay=False),
              help="Re-fit saved raw measurements (*.measurements.json) instead of measuring again.")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the fit summary JSON to stdout.")
def command(model, device, dtype, grid, tasks, batch_sizes, repeats, warmup, seed, holdout, importance, experts_impl,
            engine, trust_remote_code, output, from_measurements, quiet, as_json):
    """Profile latency on this device and fit the latency estimator."""
    from harness import backends
    from harness.latency.fit_files import engine_name, run_key
    from harness.latency.heldout_fit import fit_and_report, load_measurements
    from harness.run_setup import DEFAULT_EXPERTS_IMPL, resolve_device, resolve_dtype

    from harness.engine import resolve as resolve_engine

    backends.check_trust(model, trust_remote_code)
    info = backends.describe(model)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    batches = _int_list(batch_sizes, "--batch-sizes") if batch_sizes else [1]
    task_names = _tasks(tasks)
    if importance is not None:
        from harness.knobs import load_importance

        load_importance(importance, info.n_blocks)
    impl = experts_impl or DEFAULT_EXPERTS_IMPL
    if from_measurements:
        from harness.latency.fit_files import FitKey
        from harness.latency.grid import Grid

        ms, header = load_measurements(from_measurements)
        if header.get("model") not in (None, info.name):
            raise HarnessError(f"'{from_measurements}' holds measurements of {header.get('model')}, not {info.name}; pass --model {header.get('model')}")
        if FitKey.from_dict(header.get("key")) is None:
            from harness.errors import warn

            warn(f"'{from_measurements}' names no execution mode (an older profile); the fit is keyed to this "
                 "machine's device, dtype, engine and experts implementation: re-fit it where it was measured if that differs")
        key = FitKey.from_dict(header.get("key")) or run_key(
            info, dev, dt, weights=backends.model_fingerprint(model),
            engine=engine_name(engine=resolve_engine(engine, dev, info.family)), experts_impl=impl)
        g = Grid.from_dict(header["grid"]) if isinstance(header.get("grid"), dict) else None
        path = _output(output, key, sorted({m.batch_size for m in ms}))
        result = fit_and_report(ms, info, key, g, repeats=max(m.repeat for m in ms) + 1, seed=seed, holdout=holdout,
                                device_name=header.get("device_name") or "", prompt_bucket=int(header.get("prompt_bucket") or 0))
        _report(result, info, dev, path, seed, quiet, as_json, time.perf_counter())
        return
    backend = backends.load(model, device=dev, dtype=dt, importance=importance, experts_impl=impl,
                            engine=resolve_engine(engine, dev, info.family), trust_remote_code=trust_remote_code)
    from harness.latency.firstuse import backend_key

    key = backend_key(backend, info, backends.model_fingerprint(model))
    _output(output, key, batches)  # writable, before anything is measured (the name follows the grid's batch sizes)
    _measure_and_fit(backend, info, key, dev, output, grid, task_names, batches, repeats, warmup, seed, holdout, quiet,
                     as_json)


def _int_list(text: str, opt: str) -> list[int]:
    try:
        vals = sorted({int(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        raise HarnessError(f"{opt} '{text}' is not a comma-separated list of integers, e.g. 1,8,32")
    if not vals or vals[0] < 1:
        raise HarnessError(f"{opt} '{text}' needs integers >= 1, e.g. 1,8,32")
    return vals


def _tasks(text: str | None) -> list[str]:
    from harness.tasks import BUILTIN_TASKS, get_task

    names = [t.strip() for t in (text or "").split(",") if t.strip()] or list(BUILTIN_TASKS)
    for n in names:
        get_task(n)  # unknown task: one-line error
    return names


def _output(output: str | None, key, batch_sizes) -> Path:
    """``--output``, else the user cache's file for ``key`` at the buckets of ``batch_sizes``
    (:func:`harness.latency.fit_files.default_fit_path`: a profile never overwrites the fit of
    other batch buckets)."""
    from harness.latency.fit_files import default_fit_path
    from harness.records import check_writable

    path = Path(output) if output else default_fit_path(key, batch_sizes)
    check_writable(path.parent)
    return path


def _measure_and_fit(backend, info, key, dev, output, grid_text, task_names, batches, repeats, warmup, seed, holdout,
                     quiet, as_json):
    from harness.environment import device_identity
    from harness.latency.firstuse import prompt_bucket_of
    from harness.latency.heldout_fit import fit_and_report, partial_path
    from harness.latency.grid import check_grid, default_grid, max_positions, parse_grid, task_ranges
    from harness.latency.measure import WARMUP_MAX_CALLS, Warmup
    from harness.latency.profiler import MeasurementLog, Profiler, jobs_for

    say = (lambda msg: click.echo(msg, err=True)) if not quiet else (lambda msg: None)
    max_pos = max_positions(backend)
    ranges = task_ranges(backend, task_names)
    g = parse_grid(grid_text, info, default_grid(info, ranges, max_pos, batch=batches))
    check_grid(g, info, max_pos)
    path = _output(output, key, g.batch)
    jobs = jobs_for(g, repeats, seed)
    prof = Profiler(backend, g, seed, Warmup(max_calls=WARMUP_MAX_CALLS if warmup is None else warmup))
    header = {"key": key.to_dict(), "grid": g.to_dict(), "repeats": repeats, "seed": seed,
              "prompt_bucket": prompt_bucket_of(backend)}
    log = MeasurementLog(partial_path(path), header)
    todo = [j for i, j in enumerate(jobs) if i not in log.done]
    say(f"profile: {key.describe()}; grid {g.to_dict()} (prompts up to the longest of {len(task_names)} task(s), "
        f"outputs up to {ranges.max_new_tokens}, model positions {max_pos or 'unknown'})")
    if log.done:
        say(f"profile: resuming: {len(log.done)} of {len(jobs)} measurements already saved in {log.path}")
    expected = prof.calibrate(todo) if todo else 0.0
    say(f"profile: {len(todo)} timed calls to make, expected duration about {_duration(expected)} "
        f"(measurements are saved as they come; rerun the same command to resume after Ctrl-C)")
    log.start()
    bar, progress = None, None
    if not quiet:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]profile"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[config]}"), console=Console(stderr=True))
        bar.start()
        tid = bar.add_task("profile", total=len(jobs), completed=len(log.done), config="")

        def progress(done, total, label):
            bar.update(tid, completed=done, config=label)

    t0 = time.perf_counter()
    try:
        ms = prof.run(jobs, log=log, progress=progress)
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        click.echo(f"\ninterrupted: {len(log.done)} of {len(jobs)} measurements saved in {log.path}; "
                   "run the same command again to resume", err=True)
        raise SystemExit(130)
    finally:
        if bar is not None:
            bar.stop()
    result = fit_and_report(ms, info, key, g, repeats=repeats, seed=seed, holdout=holdout, t0=t0,
                            device_name=device_identity(dev)["name"], warmup=prof.warmup.summary(),
                            prompt_bucket=prompt_bucket_of(backend))
    result.estimator.meta["task_ranges"] = {"tasks": ranges.tasks, "longest_prompt_tokens": ranges.prompt_tokens,
                                            "max_new_tokens": ranges.max_new_tokens, "max_positions": max_pos}
    _report(result, info, dev, path, seed, quiet, as_json, t0)
    log.remove()


def _report(result, info, dev, path, seed, quiet, as_json, t0):
    from harness.latency.heldout_fit import save_profile

    fit_path, raw_path = save_profile(result, path)
    meta = result.estimator.meta
    out = {"model": info.name, "key": meta["key"], "device_name": meta.get("device_name"), "fit": str(fit_path),
           "measurements": str(raw_path), "n_measurements": len(result.measurements),
           "n_interference_excluded": meta.get("n_interference_excluded"), "grid": result.grid.to_dict() if result.grid else None,
           "batch_buckets": meta.get("batch_buckets"), "repeats": meta.get("repeats"), "seed": seed,
           "headline": meta.get("headline"), "heldout": result.heldout, "heldout_medians": result.extra.get("heldout_medians"),
           "heldout_by_config": result.extra.get("by_config"), "measurement_noise": result.extra.get("measurement_noise"),
           "fit_error_all": result.train_error, "warmup": meta.get("warmup"), "seconds": round(time.perf_counter() - t0, 2)}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    if not quiet:
        from harness.console import console as make_console
        from harness.console import print_table

        console = make_console(stderr=as_json)
        title = (f"{info.name} on {meta.get('device_name') or dev} ({meta['key']['device']}, {meta['dtype']}, engine "
                 f"{meta['engine']}): {len(result.measurements)} measurements, {result.heldout.get('n_configs', 0)} held-out configurations")
        print_table(heldout_table(result, title), stderr=as_json)
        h = meta.get("headline") or {}
        console.print(f"headline: total-latency error on single held-out measurements {_pct(h.get('mape_total'))} "
                      f"(within +-10%: {_pct(h.get('within_10pct'))}); fit saved to {fit_path}; raw measurements in {raw_path}",
                      highlight=False)
