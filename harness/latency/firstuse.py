"""The built-in estimator for a run: the fit for the run's execution mode, else a bounded quick fit,
else the analytic roofline; never a fit made for another mode.

The quick fit made on first use (:func:`quick_fit`) measures a small grid at the run's batch size
with a progress bar. Compilation, graph capture and the warm-up of every configuration it measures
come first, off its clock; then its timed calls get at most :func:`auto_fit_budget` seconds (60 by
default; ``HARNESS_AUTOFIT_SECONDS`` changes it, 0 turns it off). Each timed call is appended to a
measurement log beside the fit as it comes (``<key>__b<bucket>__quick.measurements.partial.jsonl``
in the user cache), so a run that stops short of a fit leaves its measurements to the next run,
which resumes them instead of paying for them again. The fit is saved in the user cache
(:func:`harness.latency.fit_files.default_fit_path`, ``quick=True``: never over a full fit, nor over
another batch bucket's), never in the package. When it cannot fit, one line says what it measured,
why that was not enough, and the ``harness profile`` command that makes a full fit.

:func:`batch1_estimator` gives the batch-1 estimator of a run's execution mode: what a batched run
needs to estimate each sample's latency alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, warn
from harness.latency.estimator import FittedEstimator, LatencyEstimator
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


def _bar(quiet: bool, total: int, budget: float, done: int = 0):
    if quiet:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(f"[bold]quick latency fit (<= {budget:.0f}s)"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[config]}"), console=Console(stderr=True), transient=True)
    bar.start()
    tid = bar.add_task("fit", total=total, completed=done, config="")
    return bar, (lambda n, tot, label: bar.update(tid, completed=n, config=label))


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


class _Kept:
    """Measurements kept in memory when the measurement log cannot be written (the cache is read-only)."""

    def __init__(self):
        self.done: dict = {}
        self.path = None

    def add(self, i, m) -> None:
        self.done[i] = m


def quick_log_path(key: FitKey, batch_size: int = 1) -> Path:
    """The measurement log of the quick fit for ``key`` at ``batch_size``'s bucket, beside the fit."""
    from harness.latency.heldout_fit import partial_path

    return partial_path(default_fit_path(key, batch_size, quick=True))


@dataclass
class QuickFit:
    """What a quick fit did: the fit (None when it could not make one) and the account of it."""

    estimator: FittedEstimator | None
    n_configs: int  # distinct configurations measured (this run and the runs it resumed)
    n_calls: int  # timed calls measured in all
    resumed: int  # of them, read from the measurement log of an earlier run
    needed: int  # configurations a fit needs
    total_configs: int  # configurations in the quick grid
    batch_size: int
    budget: float  # seconds of timed calls allowed
    seconds: float  # seconds of timed calls this run
    warmup_seconds: float  # compile, capture and warm-up before the clock
    slowest: float  # the dearest timed call of this run, seconds
    log_path: Path | None  # where the measurements are kept (None: not written)
    reason: str | None = None  # why no fit (None when fitted)
    failed_call: str | None = None  # a call that failed after enough configurations were measured (fitted without it)

    def line(self, what: str) -> str:
        """One line: what was measured, why it was not enough (the profile command is appended by the caller)."""
        kept = (f"the measurements are kept in {self.log_path} and the next run resumes them" if self.log_path
                else "the measurements could not be kept (the user cache is not writable)")
        resumed = f", {self.resumed} resumed from an earlier run" if self.resumed else ""
        return (f"the quick latency fit for {what} measured {self.n_configs} of {self.total_configs} configurations "
                f"({self.n_calls} timed calls{resumed}) in {self.seconds:.1f}s, after {self.warmup_seconds:.1f}s of compile "
                f"and warm-up; a fit needs {self.needed} configurations: {self.reason}; {kept}")


QUICK_CALLS = 40  # timed calls a quick fit at several batch sizes spreads over them


def quick_batch_sizes(batch_size: int) -> list[int]:
    """The batch sizes a quick fit for a run at ``batch_size`` measures: 1 alone for a batch-1 run;
    else every power of two from 2 up to ``batch_size``, and ``batch_size``: a batched run's batches
    are often smaller than ``--batch-size`` (a policy's groups, a group's last batch), and a fit
    made at one size says nothing about another."""
    b = max(1, int(batch_size))
    if b == 1:
        return [1]
    return sorted({1 << i for i in range(1, b.bit_length()) if (1 << i) <= b} | {b})


def quick_fit(backend, info, key: FitKey, batch_size: int = 1, seed: int = 0, budget: float = AUTO_FIT_SECONDS,
              quiet: bool = True, *, log_path: Path | None | bool = True, warmup_budget: float | None = None) -> QuickFit:
    """Measure a small grid (one repeat, the run's batch size) and fit it.

    First every configuration still to measure is warmed up (compile, graph capture, clock ramp-up;
    at most ``warmup_budget`` seconds, default ``budget``, the first configuration always), then the
    clock starts: timed calls for at most ``budget`` seconds. Timed calls go to the measurement log
    ``log_path`` as they come (True: :func:`quick_log_path`; None or False: none), resumed if it holds
    calls of the same grid. Returns a :class:`QuickFit`; its ``estimator`` is None, with a
    ``reason``, when fewer than :data:`MIN_QUICK_CONFIGS` configurations were measured in all (or a
    call failed). Never raises for a failing call; a :class:`HarnessError` (a backend that gives no
    timings) is raised."""
    from harness.latency.heldout_fit import fit_and_report
    from harness.latency.grid import default_grid, max_positions
    from harness.latency.measure import Warmup
    from harness.latency.profiler import MeasurementLog, Profiler, jobs_for

    sizes = quick_batch_sizes(batch_size)
    grid = default_grid(info, max_pos=max_positions(backend), quick=True, batch=tuple(sizes))
    jobs = jobs_for(grid, 1, seed)
    if len(sizes) > 1:  # a few configurations at each size: the fit must tell batch terms apart
        per = max(MIN_QUICK_CONFIGS + 2, QUICK_CALLS // len(sizes))
        kept: dict[int, int] = {}
        chosen = []
        for job in jobs:  # the first `per` jobs of each batch size in the seeded order
            if kept.get(job[4], 0) < per:
                kept[job[4]] = kept.get(job[4], 0) + 1
                chosen.append(job)
        jobs = chosen
    n_grid = len({(b, k, t, p, n) for (b, k, t, p, n, _, _) in jobs})
    needed = min(MIN_QUICK_CONFIGS, n_grid)
    if log_path is True:
        log_path = quick_log_path(key, batch_size)
    log = _Kept()
    if log_path:
        header = {"key": key.to_dict(), "grid": grid.to_dict(), "repeats": 1, "seed": seed,
                  "prompt_bucket": prompt_bucket_of(backend), "quick": True}
        try:
            disk = MeasurementLog(log_path, header)
            disk.start()
            log = disk
        except OSError:
            log = _Kept()
    resumed = len(log.done)
    prof = Profiler(backend, grid, seed, Warmup(max_calls=3))  # the run's rule, fewer tries: the budget is short
    failure = None
    warm_s = clock_s = slowest = 0.0

    def configs() -> int:
        return len({m.config_key for m in log.done.values()})

    if configs() < needed and len(log.done) < len(jobs):
        w0 = time.perf_counter()
        wb = budget if warmup_budget is None else warmup_budget
        try:
            prof.warm_all(jobs, skip=set(log.done), deadline=w0 + wb)
        except HarnessError:
            raise
        except Exception as exc:
            failure = exc
        warm_s = time.perf_counter() - w0
        if failure is None:
            bar, progress = _bar(quiet, len(jobs), budget, len(log.done))
            t0 = time.perf_counter()
            try:
                prof.run(jobs, log=log, deadline=t0 + budget, progress=progress)
            except HarnessError:
                raise
            except Exception as exc:
                failure = exc
            finally:
                if bar is not None:
                    bar.stop()
            warm_in_run = getattr(prof, "warm_in_run", 0.0)  # keys warmed past the warm-up deadline: off the clock
            clock_s = time.perf_counter() - t0 - warm_in_run
            warm_s += warm_in_run
            slowest = prof.slowest
    ms = [log.done[i] for i in sorted(log.done)]
    n_cfg = configs()
    out = QuickFit(None, n_cfg, len(ms), resumed, needed, n_grid, batch_size, budget, clock_s, warm_s, slowest,
                   getattr(log, "path", None))
    if failure is not None:
        _release_device_memory(backend)  # an out-of-memory call leaves the cache full for the run
        if n_cfg < needed:
            out.reason = f"a call failed ({type(failure).__name__}: {_one_line(failure)})"
            return out
        # enough measured before the failure (a larger shape than the card holds): fit on those
        out.failed_call = f"{type(failure).__name__}: {_one_line(failure)}"
    if n_cfg < needed:
        cost = (f"the dearest call took {slowest:.2f}s at batch {batch_size}" if slowest > 0
                else "no call could start in it")
        out.reason = f"its {budget:g}s of timed calls ran out ({cost}; HARNESS_AUTOFIT_SECONDS gives it more)"
        return out
    from harness.environment import device_identity

    res = fit_and_report(ms, info, key, grid, repeats=1, seed=seed, holdout=0.0, quick=True, t0=time.perf_counter() - clock_s,
                         device_name=device_identity(str(backend.device))["name"], warmup=prof.warmup.summary(),
                         prompt_bucket=prompt_bucket_of(backend))
    res.estimator.meta["quick_fit"] = {"configs": n_cfg, "timed_calls": len(ms), "resumed": resumed,
                                       "seconds": round(clock_s, 2), "warmup_seconds": round(warm_s, 2),
                                       "budget": budget, "failed_call": out.failed_call}
    out.estimator = res.estimator
    return out


def _release_device_memory(backend) -> None:
    """Give the allocator's cached blocks back after a failed call (CUDA; nothing elsewhere)."""
    import torch

    if str(getattr(backend, "device", "cpu")).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _describe_mode(key: FitKey, batch_size: int) -> str:
    from harness.latency.measure import batch_bucket

    return f"{key.describe()}, batch bucket {batch_bucket(batch_size)}"


def _first_use(backend, info, key: FitKey, batch_size: int, seed: int, quiet: bool, cmd: str, why: str):
    """A quick fit at ``batch_size``, saved -> (fit, note), or (None, the one line saying why not)."""
    what = _describe_mode(key, batch_size)
    budget = auto_fit_budget()
    if budget <= 0:
        return None, f"no latency fit for {what} ({why}) and automatic fits are off (HARNESS_AUTOFIT_SECONDS=0)"
    warn(f"no latency fit for {what} ({why}); fitting a quick one (at most {budget:g}s of timed calls after "
         f"compile and warm-up; a full fit: `{cmd}`)")
    try:
        qf = quick_fit(backend, info, key, batch_size, seed, budget, quiet)
    except HarnessError:
        raise
    except Exception as exc:  # the grid or the fit itself (measuring failures are in the QuickFit's reason)
        return None, f"the quick latency fit for {what} failed ({type(exc).__name__}: {_one_line(exc)})"
    if qf.estimator is None:
        return None, qf.line(what)
    path = default_fit_path(key, quick_batch_sizes(batch_size), quick=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        qf.estimator.save(path)
        saved = f"saved to {path}"
        if qf.log_path is not None:
            Path(qf.log_path).unlink(missing_ok=True)  # the fit holds what the log was for
    except OSError as exc:
        saved = f"not saved ({exc.strerror or exc})"
    resumed = f", {qf.resumed} of them resumed from an earlier run" if qf.resumed else ""
    stopped = (f"; it stopped at a call that failed ({qf.failed_call}), so larger shapes are extrapolated"
               if qf.failed_call else "")
    note = (f"estimator: quick fit for {what} made on first use from {qf.n_configs} configurations ({qf.n_calls} timed "
            f"calls{resumed}) in {qf.seconds:.1f}s after {qf.warmup_seconds:.1f}s of compile and warm-up, {saved}{stopped}; "
            f"a full fit: `{cmd}`")
    return qf.estimator, note


def resolve(pending, backend, info, *, model_spec: str | None = None, weights: str | None = None,
            batch_size: int = 1, seed: int = 0, quiet: bool = False):
    """-> (estimator or None, note). Sets ``pending.fitted``. The fit found for the run's mode and
    batch bucket (no note), else a quick fit (a note saying so), else the analytic roofline or no
    estimates, with one line saying what the quick fit measured, why it was not enough, and the
    ``harness profile`` command."""
    from harness.latency.measure import batch_bucket
    from harness.latency.roofline import roofline_estimator

    key = backend_key(backend, info, weights)
    look = find_fit(key, batch_size, prompt_bucket_of(backend))
    if look.path is not None:
        est = FittedEstimator.load(look.path)
        pending.fitted = est
        return est, None
    cmd = profile_command(key, batch_size, model_spec)
    what = _describe_mode(key, batch_size)
    fitted, line = _first_use(backend, info, key, batch_size, seed, quiet, cmd, look.why_not(batch_bucket(batch_size)))
    if fitted is not None:
        warn(line)
        pending.fitted = fitted
        return fitted, line
    try:
        roof = roofline_estimator(backend, info, key)
    except Exception:
        roof = None
    if roof is None:
        note = f"{line}; the run continues without latency estimates for {what}; a full fit: `{cmd}`"
        warn(note)
        return None, note
    note = f"{line}; estimator: analytic roofline (a lower bound, not a fit) for {what}; a full fit: `{cmd}`"
    warn(note)
    pending.fitted = roof
    return roof, note


def batch1_estimator(run_estimator, backend, info, *, batch_size: int, model_spec: str | None = None,
                     weights: str | None = None, seed: int = 0, quiet: bool = True
                     ) -> tuple[LatencyEstimator | None, str | None]:
    """The estimator of each sample's latency alone (batch 1) for a run at ``batch_size``:
    ``(estimator, note)``.

    ``run_estimator`` is what :func:`harness.run_setup.ensure_fitted` returned for the run (a
    :class:`~harness.latency.estimator.PendingFit` is taken for the fit it resolved to);
    ``weights``: the model's weights fingerprint (:func:`harness.backends.model_fingerprint`, part of
    the key; :func:`harness.run_setup.ensure_batch1` passes it).

    - A batch-1 run (``batch_bucket(batch_size) == 1``): the run's estimator itself, no note.
    - No estimator for the run (``None``, ``--estimator none``): ``(None, None)``.
    - A user plugin (not batch-aware: its estimates are per sample already): the plugin, no note.
    - A fit of the run's execution mode that covers batch bucket 1 (``harness profile
      --batch-sizes 1,32``): that fit, no note.
    - Else the batch-1 fit of the run's execution mode (same :class:`FitKey`, batch bucket 1: the
      user cache, then the shipped fits; :func:`find_fit`), no note; else a quick fit at batch 1,
      bounded as the run's (``HARNESS_AUTOFIT_SECONDS``), saved beside the others, with a note; else
      ``(None, one line)``: what the quick fit measured, why it was not enough, the
      ``harness profile`` command. Never the roofline: it is a lower bound, not a sample's latency.

    Predict with rows of ``batch_size=1``, one per sample
    (:func:`harness.latency.estimator.batch1_rows`)."""
    from harness.latency.estimator import PendingFit
    from harness.latency.measure import batch_bucket

    est = run_estimator.fitted if isinstance(run_estimator, PendingFit) else run_estimator
    if batch_bucket(batch_size) == 1:
        return est, None
    if run_estimator is None:
        return None, None
    if est is not None and not getattr(est, "batch_aware", False):
        return est, None
    if backend is None:
        return None, "no batch-1 latency estimates: no model loaded on this process"
    key = backend_key(backend, info, weights)
    if (isinstance(est, FittedEstimator) and est.key == key and 1 in est.batch_buckets
            and not est.meta.get("mode_mismatch") and est.prompt_bucket == prompt_bucket_of(backend)):
        return est, None
    look = find_fit(key, 1, prompt_bucket_of(backend))
    if look.path is not None:
        return FittedEstimator.load(look.path), None
    cmd = profile_command(key, 1, model_spec)
    fitted, line = _first_use(backend, info, key, 1, seed, quiet, cmd, look.why_not(1))
    if fitted is not None:
        line = f"batch-1 {line}"
        warn(line)
        return fitted, line
    note = f"{line}; no batch-1 (per-sample) latency estimates in this batched run; a batch-1 fit: `{cmd}`"
    warn(note)
    return None, note
