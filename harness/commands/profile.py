"""``harness profile``: measure latency over knobs x tiers x prompt lengths x output lengths on
this device, fit the built-in estimator, report its error on held-out configurations, and save the
fit (``configs/estimators/<model>__<device>.json``) with the raw measurements beside it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from harness.config import config_option
from harness.errors import HarnessError


def heldout_table(result, title: str):
    """Held-out error vs per-configuration medians, vs single measurements, and the noise floor."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("part", "held-out MAPE", "within +-10%", "n", "single-meas. MAPE", "within +-10%", "noise floor"):
        table.add_column(col, justify="left" if col == "part" else "right")
    single = result.extra.get("heldout_single_measurements") or {}
    noise = result.extra.get("measurement_noise") or {}
    for part in ("prefill", "decode", "total"):
        h = result.heldout.get(part) or {}
        s = single.get(part) or {}
        table.add_row(part, _pct(h.get("mape")), _pct(h.get("within_10pct")), str(h.get("n", 0)), _pct(s.get("mape")),
                      _pct(s.get("within_10pct")), _pct((noise.get(part) or {}).get("mean_rel_dev")))
    return table


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


@click.command("profile", context_settings={"help_option_names": ["-h", "--help"]})
@config_option("profile")
@click.option("--model", "-m", default="reference", show_default=True, help="Model spec (see `harness models`).")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cpu, cuda[:N].")
@click.option("--dtype", type=click.Choice(("auto", "float32", "bfloat16", "float16")), default="auto", show_default=True)
@click.option("--grid", help="blocks=12,14,16;top_k=1,4,8;tier=low,high;prompt=16,64;output=8,24 (any subset; defaults from the model).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Timed calls per grid point.")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Warm-up calls per configuration (excluded; default 1 on CPU, 0 on GPU where the backend warms up).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--holdout", type=click.FloatRange(0.0, 0.9), default=0.25, show_default=True, help="Share of configurations held out of the fit for the error report.")
@click.option("--importance", type=str, help="Block importance JSON.")
@click.option("--experts-impl", type=click.Choice(["eager", "grouped_mm", "batched_mm"]), default=None)
@click.option("--engine", type=click.Choice(("auto", "fast", "eager")), default="auto", show_default=True,
              help="auto = fast on CUDA, eager on CPU (see `harness run --help`).")
@click.option("--trust-remote-code", is_flag=True, help="Allow molmoe: checkpoints to run their own Python files (model, config and processor classes) in this process; only for checkpoints you trust.")
@click.option("--output", "-o", type=str, help="Fit file (default configs/estimators/<model>__<device>.json, or the user cache when not writable).")
@click.option("--from-measurements", "from_measurements", type=click.Path(dir_okay=False),
              help="Re-fit saved raw measurements (*.measurements.json) instead of measuring again.")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the fit summary JSON to stdout.")
def command(model, device, dtype, grid, repeats, warmup, seed, holdout, importance, experts_impl, engine, trust_remote_code, output,
            from_measurements, quiet, as_json):
    """Profile latency on this device and fit the latency estimator."""
    from harness import backends
    from harness.setup import DEFAULT_EXPERTS_IMPL, resolve_device, resolve_dtype
    from harness.latency.estimator import writable_fit_path
    from harness.latency.profile import parse_grid, profile_backend, save_profile

    backends.check_trust(model, trust_remote_code)
    from harness.engine import resolve as resolve_engine

    info = backends.describe(model)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    g = parse_grid(grid, info)
    if importance is not None:
        from harness.knobs import load_importance

        load_importance(importance, info.n_blocks)
    path = Path(output) if output else writable_fit_path(info, dev)
    from harness.records import check_writable

    check_writable(path.parent)
    impl = experts_impl or DEFAULT_EXPERTS_IMPL
    if from_measurements:
        from harness.latency.profile import Grid, fit_and_report, load_measurements

        ms, header = load_measurements(from_measurements)
        if header.get("model") not in (None, info.name):
            raise HarnessError(f"'{from_measurements}' holds measurements of {header.get('model')}, not {info.name}; pass --model {header.get('model')}")
        g = Grid(**header["grid"]) if isinstance(header.get("grid"), dict) else g
        result = fit_and_report(ms, info, dev, g, repeats=max(m.repeat for m in ms) + 1, seed=seed, holdout=holdout,
                                dtype=dt)
        _report(result, info, dev, g, path, seed, quiet, as_json, time.perf_counter())
        return
    backend = backends.load(model, device=dev, dtype=dt, importance=importance, experts_impl=impl, engine=resolve_engine(engine, dev, info.family),
                            trust_remote_code=trust_remote_code)
    wu = warmup if warmup is not None else (0 if dev.startswith("cuda") else 1)
    n_jobs = len(g.configs()) * len(g.output) * repeats

    progress = None
    bar = None
    if not quiet:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]profile"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[config]}"), console=Console(stderr=True))
        bar.start()
        tid = bar.add_task("profile", total=n_jobs, config="")

        def progress(done, total, label):
            bar.update(tid, completed=done, config=label)

    t0 = time.perf_counter()
    try:
        result = profile_backend(backend, info, dev, g, repeats=repeats, seed=seed, warmup=wu, holdout=holdout,
                                 progress=progress)
    finally:
        if bar is not None:
            bar.stop()
    _report(result, info, dev, g, path, seed, quiet, as_json, t0)


def _report(result, info, dev, g, path, seed, quiet, as_json, t0):
    from harness.latency.profile import save_profile

    fit_path, raw_path = save_profile(result, path)
    repeats = result.estimator.meta.get("repeats")
    meta = result.estimator.meta
    out = {"model": info.name, "device": meta["device"], "device_name": meta["device_name"], "dtype": meta["dtype"],
           "fit": str(fit_path), "measurements": str(raw_path), "n_measurements": len(result.measurements),
           "n_interference_excluded": meta.get("n_interference_excluded"),
           "grid": g.to_dict(), "repeats": repeats, "seed": seed, "heldout": result.heldout,
           "heldout_single_measurements": result.extra.get("heldout_single_measurements"),
           "measurement_noise": result.extra.get("measurement_noise"),
           "fit_error_all": result.train_error, "seconds": round(time.perf_counter() - t0, 2)}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    if not quiet:
        from rich.console import Console

        console = Console(stderr=as_json)
        if not console.is_terminal:
            console.width = max(console.width, 120)
        console.print(heldout_table(result,
                                    f"{info.name} on {meta['device_name']} ({dev}, {meta['dtype']}): "
                                    f"{len(result.measurements)} measurements, "
                                    f"{result.heldout.get('n_configs', 0)} held-out configurations"))
        console.print(f"fit saved to {fit_path}; raw measurements in {raw_path}", highlight=False)
