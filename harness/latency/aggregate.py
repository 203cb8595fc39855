"""Latency aggregation over a run's sample lines: measured and estimated distributions, and the
estimator's error against the measurements (per sample; per batch when batches were timed whole)."""

from __future__ import annotations


def latency_block(lines: list[dict], per_batch: bool) -> dict:
    """``{measured: {...}, estimated: {...}}`` with ``{mean, p50, p90, p99, n}`` per key; per batch
    (each batch counted once) when ``per_batch``."""
    from harness.stats import describe

    ok = [ln for ln in lines if not ln.get("error") and ln.get("measured")]
    if per_batch:
        seen, rows = set(), []
        for ln in ok:
            if ln.get("batch_id") not in seen:
                seen.add(ln.get("batch_id"))
                rows.append(ln)
    else:
        rows = ok
    measured = {k: describe([r["measured"].get(f"{k}_ms") for r in rows]) for k in ("prefill", "decode", "total")}
    for k in ("vision", "projector", "lm_prefill", "decode_per_token"):
        vals = [r["measured"].get(f"{k}_ms") for r in rows if r["measured"].get(f"{k}_ms") is not None]
        if vals:
            measured[k] = describe(vals)
    est_rows = [ln for ln in ok if ln.get("estimated")]
    estimated = ({k: describe([r["estimated"].get(f"{k}_ms") for r in est_rows]) for k in ("prefill", "decode", "total")}
                 if est_rows else None)
    return {"measured": measured, "estimated": estimated}


def estimator_error(lines: list[dict], per_batch: bool) -> dict:
    from harness.latency.estimator import error_stats

    if per_batch:
        return {"mape_total": None, "within_10pct": None, "n": 0,
                "note": "estimates are per sample but measured latency is per batch (batch size > 1); run with --batch-size 1 to compare"}
    rows = [ln for ln in lines if not ln.get("error") and ln.get("measured") and ln.get("estimated")]
    if not rows:
        return {"mape_total": None, "within_10pct": None, "n": 0}
    tot = error_stats([r["estimated"]["total_ms"] for r in rows], [r["measured"]["total_ms"] for r in rows])
    pre = error_stats([r["estimated"]["prefill_ms"] for r in rows], [r["measured"]["prefill_ms"] for r in rows])
    dec = error_stats([r["estimated"]["decode_ms"] for r in rows], [r["measured"]["decode_ms"] if r["measured"]["decode_ms"] else None for r in rows])
    return {"mape_total": tot["mape"], "within_10pct": tot["within_10pct"], "n": tot["n"],
            "mape_prefill": pre["mape"], "within_10pct_prefill": pre["within_10pct"],
            "mape_decode": dec["mape"], "within_10pct_decode": dec["within_10pct"]}
