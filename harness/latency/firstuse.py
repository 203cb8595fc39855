"""The built-in estimator for a run: the fit for the run's execution mode, else a bounded quick fit,
else the analytic roofline; never a fit made for another mode.

The quick fit made on first use measures a small grid for at most :func:`auto_fit_budget` seconds
(60 by default; ``HARNESS_AUTOFIT_SECONDS`` changes it, 0 turns it off) with a progress bar, and is
saved in the user cache (:func:`harness.latency.fit_files.cache_dir`), never in the package.
"""

from __future__ import annotations

import os
import time

from harness.errors import HarnessError, warn
from harness.latency.estimator import FittedEstimator
from harness.latency.fit_files import (FitKey, default_fit_path, engine_name, find_fit, profile_command, run_key)

AUTO_FIT_SECONDS = 60.0
MIN_QUICK_CONFIGS = 6  # fewer measured configurations than this: no quick fit (roofline instead)


def auto_fit_budget() -> float:
    raw = os.environ.get("HARNESS_AUTOFIT_SECONDS")
    if raw is None or not raw.strip():
        return AUTO_FIT_SECONDS
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise HarnessError(f"HARNESS_AUTOFIT_SECONDS='{raw}' is not a number of seconds; set e.g. 60, or 0 to turn automatic fits off")


def backend_key(backend, info, weights: str | None = None) -> FitKey:
    """The execution mode of a loaded backend (``weights``: the model's weights fingerprint)."""
    return run_key(info, str(getattr(backend, "device", "cpu")), getattr(backend, "dtype", "float32"),
                   weights=weights, engine=engine_name(backend),
                   experts_impl=str(getattr(backend, "experts_impl", None) or "eager"))


def prompt_bucket_of(backend) -> int:
    """The padding of prompt passes by the backend's engine (0: none), which a fit records."""
    return int(getattr(getattr(backend, "step_model", None), "prompt_bucket", 0) or 0)


def _bar(quiet: bool, total: int, budget: float):
    if quiet:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(f"[bold]quick latency fit (<= {budget:.0f}s)"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[config]}"), console=Console(stderr=True), transient=True)
    bar.start()
    tid = bar.add_task("fit", total=total, config="")
    return bar, (lambda done, tot, label: bar.update(tid, completed=done, config=label))


def quick_fit(backend, info, key: FitKey, batch_size: int = 1, seed: int = 0, budget: float = AUTO_FIT_SECONDS,
              quiet: bool = True) -> FittedEstimator | None:
    """Measure a small grid (one repeat, the run's batch size) for at most ``budget`` seconds and fit
    it; None when too few configurations were measured in time."""
    from harness.latency.heldout_fit import fit_and_report
    from harness.latency.grid import default_grid, max_positions
    from harness.latency.measure import Warmup
    from harness.latency.profiler import Profiler, jobs_for

    t0 = time.perf_counter()
    grid = default_grid(info, max_pos=max_positions(backend), quick=True, batch=(batch_size,))
    jobs = jobs_for(grid, 1, seed)
    prof = Profiler(backend, grid, seed, Warmup(max_calls=3))  # the run's rule, fewer tries: the budget is short
    bar, progress = _bar(quiet, len(jobs), budget)
    try:
        ms = prof.run(jobs, deadline=t0 + budget, progress=progress)
    finally:
        if bar is not None:
            bar.stop()
    if len({m.config_key for m in ms}) < MIN_QUICK_CONFIGS:
        return None
    from harness.environment import device_identity

    res = fit_and_report(ms, info, key, grid, repeats=1, seed=seed, holdout=0.0, quick=True, t0=t0,
                         device_name=device_identity(str(backend.device))["name"], warmup=prof.warmup.summary(),
                         prompt_bucket=prompt_bucket_of(backend))
    return res.estimator


def resolve(pending, backend, info, *, model_spec: str | None = None, weights: str | None = None,
            batch_size: int = 1, seed: int = 0, quiet: bool = False):
    """-> (estimator or None, note). Sets ``pending.fitted``."""
    from harness.latency.measure import batch_bucket
    from harness.latency.roofline import roofline_estimator

    key = backend_key(backend, info, weights)
    look = find_fit(key, batch_size, prompt_bucket_of(backend))
    if look.path is not None:
        est = FittedEstimator.load(look.path)
        pending.fitted = est
        return est, None
    cmd = profile_command(key, batch_size, model_spec)
    what = f"{key.describe()}, batch bucket {batch_bucket(batch_size)}"
    budget = auto_fit_budget()
    if budget > 0:
        warn(f"no latency fit for {what} ({look.why_not(batch_bucket(batch_size))}); fitting a quick one "
             f"(at most {budget:.0f}s; a full fit: `{cmd}`)")
        t0 = time.perf_counter()
        try:
            fitted = quick_fit(backend, info, key, batch_size, seed, budget, quiet)
        except HarnessError:
            raise
        except Exception as exc:
            fitted = None
            warn(f"the quick latency fit failed ({type(exc).__name__}: {exc})")
        if fitted is not None:
            path = default_fit_path(key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fitted.save(path)
                saved = f"saved to {path}"
            except OSError as exc:
                saved = f"not saved ({exc.strerror or exc})"
            note = (f"estimator: quick fit for {what} made on first use in {time.perf_counter() - t0:.1f}s, {saved}; "
                    f"a full fit: `{cmd}`")
            warn(note)
            pending.fitted = fitted
            return fitted, note
    try:
        roof = roofline_estimator(backend, info, key)
    except Exception:
        roof = None
    if roof is None:
        note = f"no latency fit for {what}; the run continues without estimates (make one: `{cmd}`)"
        warn(note)
        return None, note
    note = f"estimator: analytic roofline (a lower bound, not a fit) for {what}; for a real fit run `{cmd}`"
    warn(note)
    pending.fitted = roof
    return roof, note
