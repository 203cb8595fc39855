"""Statistics used by run summaries, Pareto tables and the gate (numpy only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

N_BOOT = 2000


def bootstrap_ci(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over samples. Empty input gives (nan, nan)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def paired_bootstrap_diff(candidate: Sequence[float], baseline: Sequence[float], n_boot: int = N_BOOT,
                          seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean of (candidate - baseline) over paired samples and its percentile bootstrap CI.

    Pairs are resampled together (the samples are the same items), which is the correct test for
    two systems scored on one item set; an unpaired test ignores the item correlation."""
    c = np.asarray(candidate, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if c.shape != b.shape:
        raise ValueError("paired bootstrap needs equally long, aligned score lists")
    d = c - b
    if d.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(d.mean()), float(lo), float(hi))


def describe(values: Sequence[float]) -> dict:
    """``{mean, p50, p90, p99, n}`` of a list of numbers (None entries dropped)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "n": 0}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99), "n": int(x.size)}
