"""From measurements to a saved fit: hold out whole configurations, fit the rest, report the
error on the held-out ones (single measurements first), refit on everything, save with the key."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from harness.errors import HarnessError
from harness.latency.estimator import FittedEstimator
from harness.latency.evaluation import (evaluate, evaluate_by_config, evaluate_medians, headline,
                                        measurement_noise)
from harness.latency.linear_model import DEFAULT_N_EXPERTS, fit_coefficients
from harness.latency.measurement import Measurement, drop_interference
from harness.latency.grid import Grid
from harness.latency.measure import batch_bucket


def fit_measurements(measurements: Sequence[Measurement], n_experts: int = DEFAULT_N_EXPERTS, name: str = "builtin",
                     meta: dict | None = None, nonneg: bool = False, prompt_bucket: int = 0) -> FittedEstimator:
    """``prompt_bucket``: the measured engine's padding of prompt passes (:func:`harness.latency.linear_model.padded`)."""
    coef_p, coef_d = fit_coefficients(measurements, n_experts, nonneg, prompt_bucket)
    return FittedEstimator(coef_p, coef_d, name=name, n_experts=n_experts, meta=meta, prompt_bucket=prompt_bucket)


def split_heldout(measurements: Sequence[Measurement], frac: float = 0.25, seed: int = 0):
    """Hold out whole configurations (blocks, top_k, tier, prompt length, batch): the fit never sees them."""
    keys = sorted({m.config_key for m in measurements})
    n_hold = max(1, int(round(len(keys) * frac))) if len(keys) >= 4 and frac > 0 else 0
    held = set(random.Random(seed).sample(keys, n_hold)) if n_hold else set()
    return ([m for m in measurements if m.config_key not in held], [m for m in measurements if m.config_key in held])


def choose_constraint(measurements: Sequence[Measurement], n_experts: int, seed: int, prompt_bucket: int = 0) -> bool:
    """Unconstrained or non-negative coefficients, whichever predicts single measurements of
    configurations held out of ``measurements`` (an inner split, never the reported held-out set)
    better; non-negative when there are too few configurations to tell."""
    inner_train, inner_test = split_heldout(measurements, 0.3, seed + 1)
    if not inner_test or len({m.config_key for m in inner_train}) < 8:
        return True
    err = {}
    for nonneg in (False, True):
        r = evaluate(fit_measurements(inner_train, n_experts=n_experts, nonneg=nonneg, prompt_bucket=prompt_bucket), inner_test)
        err[nonneg] = r["total"]["mape"] if r.get("total") and r["total"]["mape"] is not None else float("inf")
    return err[True] <= err[False]


@dataclass
class ProfileResult:
    estimator: FittedEstimator
    measurements: list[Measurement]
    heldout: dict  # single held-out measurements (the headline)
    train_error: dict
    grid: Grid
    seconds: float
    extra: dict = field(default_factory=dict)  # heldout_medians, by_config, measurement_noise


def fit_and_report(ms: list[Measurement], info, key, grid: Grid, *, repeats: int, seed: int = 0,
                   holdout: float = 0.25, quick: bool = False, device_name: str = "", t0: float | None = None,
                   warmup: dict | None = None, prompt_bucket: int = 0) -> ProfileResult:
    """Fit and evaluate measurements (fresh, or saved raw measurements re-fitted); ``prompt_bucket``:
    the measured engine's padding of prompt passes (``step_model.prompt_bucket``; 0 = none)."""
    if not ms:
        raise HarnessError("no latency measurements to fit; profile at least one configuration")
    t0 = time.perf_counter() if t0 is None else t0
    n_experts = int(getattr(info, "n_experts", None) or DEFAULT_N_EXPERTS)
    train, test = split_heldout(ms, holdout, seed)
    nonneg = choose_constraint(train or ms, n_experts, seed, prompt_bucket)
    fit_train = fit_measurements(train or ms, n_experts=n_experts, nonneg=nonneg, prompt_bucket=prompt_bucket)
    single = evaluate(fit_train, test) if test else {}
    single["n_configs"] = len({m.config_key for m in test})
    single["ground_truth"] = "single measurements of configurations held out of the fit"
    medians = evaluate_medians(fit_train, test) if test else {}
    if medians:
        medians["ground_truth"] = "median of the repeats of each held-out (configuration, output length)"
    by_config = evaluate_by_config(fit_train, test) if test else []
    noise = measurement_noise(ms)
    full = fit_measurements(ms, n_experts=n_experts, nonneg=nonneg, prompt_bucket=prompt_bucket)
    seconds = time.perf_counter() - t0
    full.meta = {
        "key": key.to_dict(), "model": key.model, "device": key.device, "device_name": device_name,
        "dtype": key.dtype, "engine": key.engine, "experts_impl": key.experts_impl,
        "batch_buckets": sorted({batch_bucket(m.batch_size) for m in ms}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "grid": grid.to_dict() if grid else None, "repeats": repeats, "seed": seed, "n_measurements": len(ms),
        "n_interference_excluded": len(ms) - len(drop_interference(ms)),
        "headline": headline(single), "heldout": single, "heldout_medians": medians, "heldout_by_config": by_config,
        "measurement_noise": noise, "fit_error_all": evaluate(full, ms), "quick": quick, "nonneg": nonneg,
        "warmup": warmup, "profile_seconds": round(seconds, 2),
    }
    full.name = f"builtin:{key.slug()}" + (" (quick fit)" if quick else "")
    return ProfileResult(full, list(ms), single, full.meta["fit_error_all"], grid, seconds,
                         extra={"heldout_medians": medians, "by_config": by_config, "measurement_noise": noise})


def measurements_path(fit_path) -> Path:
    p = Path(fit_path)
    return p.with_name(p.stem + ".measurements.json")


def partial_path(fit_path) -> Path:
    p = Path(fit_path)
    return p.with_name(p.stem + ".measurements.partial.jsonl")


def save_profile(result: ProfileResult, path) -> tuple[Path, Path]:
    """Save the fit to ``path`` and the raw measurements beside it (``*.measurements.json``)."""
    from harness.jsonio import atomic_write_json

    path = Path(path)
    raw = measurements_path(path)
    result.estimator.meta["measurements_file"] = raw.name
    atomic_write_json(raw, {"model": result.estimator.meta.get("model"), "key": result.estimator.meta.get("key"),
                            "device_name": result.estimator.meta.get("device_name"),
                            "prompt_bucket": result.estimator.prompt_bucket,
                            "grid": result.grid.to_dict() if result.grid else None,
                            "measurements": [m.to_dict() for m in result.measurements]})
    result.estimator.save(path)
    return path, raw


def load_measurements(path) -> tuple[list[Measurement], dict]:
    """Raw measurements saved by :func:`save_profile` -> (measurements, file header)."""
    from harness.jsonio import read_json

    d = read_json(path, "measurements file")
    try:
        ms = [Measurement(**m) for m in d["measurements"]]
    except (KeyError, TypeError) as exc:
        raise HarnessError(f"'{path}' is not a harness measurements file ({exc}); pass a *.measurements.json from `harness profile`")
    if not ms:
        raise HarnessError(f"'{path}' holds no measurements; pass a *.measurements.json from a finished `harness profile`")
    return ms, d
