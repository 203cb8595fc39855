"""How good an estimator is: error against measurements.

The headline is the error against **single** measurements of configurations the fit never saw
(what a run sees: one call, one number); the error against the median of each call's repeats
stands beside it, and the repeat-to-repeat noise says how far single calls scatter at all.
Every error block holds ``mape`` (mean absolute relative error), ``within_5pct``,
``within_10pct``, ``bias`` (mean signed relative error: > 0 means the estimate is too high) and ``n``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.latency.measurement import Measurement, drop_interference, group

PARTS = ("prefill", "decode", "total")


def error_stats(estimated: Sequence[float], measured: Sequence[float]) -> dict:
    pairs = [(e, m) for e, m in zip(estimated, measured) if e is not None and m is not None and m > 0]
    if not pairs:
        return {"mape": None, "within_5pct": None, "within_10pct": None, "bias": None, "n": 0}
    e, m = (np.asarray(x, dtype=float) for x in zip(*pairs))
    signed = (e - m) / m
    rel = np.abs(signed)
    return {"mape": float(rel.mean()), "within_5pct": float((rel <= 0.05).mean()),
            "within_10pct": float((rel <= 0.10).mean()), "bias": float(signed.mean()), "n": int(m.size)}


def _rows(measurements, steps=None):
    from harness.latency.estimator import EstimatorInput

    return [EstimatorInput(m.top_k, m.num_active_blocks, m.tier_idx, m.vision_tokens, m.text_tokens,
                           len(m.decode_step_ms) if steps is None else steps[i], batch_size=m.batch_size)
            for i, m in enumerate(measurements)]


def _blocks(est, prefill, decode, total) -> dict:
    return {"prefill": error_stats([e.prefill_ms for e in est], prefill),
            "decode": error_stats([e.decode_ms for e in est], decode),
            "total": error_stats([e.total_ms for e in est], total)}


def evaluate(estimator, measurements: Sequence[Measurement]) -> dict:
    """Error against every single measurement."""
    if not measurements:
        return {}
    est = estimator.predict(_rows(measurements))
    return _blocks(est, [m.prefill_ms for m in measurements],
                   [m.decode_ms if m.decode_step_ms else None for m in measurements],
                   [m.total_ms for m in measurements])


def evaluate_by_config(estimator, measurements: Sequence[Measurement]) -> list[dict]:
    """Single-measurement total error per configuration: ``[{config, n, mape, bias}, ...]``."""
    by: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        by.setdefault(m.config_key, []).append(m)
    out = []
    for key in sorted(by):
        ms = by[key]
        s = evaluate(estimator, ms)["total"]
        out.append({"config": dict(zip(("num_blocks", "top_k", "tier_idx", "text_tokens", "batch_size"), key)),
                    "n": s["n"], "mape": s["mape"], "bias": s["bias"]})
    return out


def evaluate_medians(estimator, measurements: Sequence[Measurement]) -> dict:
    """Error against the median of each call's repeats (calls slowed by interference left out)."""
    groups = list(group(drop_interference(measurements)).values())
    if not groups:
        return {}
    firsts = [g[0] for g in groups]
    est = estimator.predict(_rows(firsts))
    med = lambda f: [float(np.median([f(m) for m in g])) for g in groups]  # noqa: E731
    return _blocks(est, med(lambda m: m.prefill_ms), [d if g[0].decode_step_ms else None for d, g in
                                                      zip(med(lambda m: m.decode_ms), groups)],
                   med(lambda m: m.total_ms))


def measurement_noise(measurements: Sequence[Measurement]) -> dict:
    """How far single calls fall from the median of their repeats (a floor for any estimator judged
    on single measurements): mean relative deviation and share within +-10%."""
    out = {}
    for part, fn in (("prefill", lambda m: m.prefill_ms), ("decode", lambda m: m.decode_ms), ("total", lambda m: m.total_ms)):
        est, meas = [], []
        for g in group(measurements).values():
            if len(g) < 2:
                continue
            med = float(np.median([fn(m) for m in g]))
            est.extend([med] * len(g))
            meas.extend(fn(m) for m in g)
        s = error_stats(est, meas)
        out[part] = {"mean_rel_dev": s["mape"], "within_10pct": s["within_10pct"], "n": s["n"]}
    return out


def headline(heldout_single: dict) -> dict:
    """The figure to quote: total-latency error on single held-out measurements."""
    t = (heldout_single or {}).get("total") or {}
    return {"mape_total": t.get("mape"), "within_5pct": t.get("within_5pct"), "within_10pct": t.get("within_10pct"),
            "bias": t.get("bias"), "n": t.get("n", 0),
            "ground_truth": "single measurements of configurations held out of the fit"}
