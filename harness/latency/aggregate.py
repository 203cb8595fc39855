"""Latency aggregation over a run's sample lines: measured and estimated distributions, and the
estimator's error against the measurements.

Like is compared with like: at batch size 1 every figure is per sample; with larger batches the
measurement is the batch's, so each batch counts once on both sides and the estimate compared with
it must be the batch's too (``estimated.per == "batch"``, what the built-in estimator gives). A
per-sample estimate (a plugin) is never compared with a batch measurement.
"""

from __future__ import annotations


def _ok(lines: list[dict], key: str) -> list[dict]:
    return [ln for ln in lines if not ln.get("error") and ln.get("measured") and ln.get(key)]


def _first_per_batch(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for ln in rows:
        if ln.get("batch_id") not in seen:
            seen.add(ln.get("batch_id"))
            out.append(ln)
    return out


def _scope(ln: dict) -> str:
    return (ln.get("measured") or {}).get("scope") or "sample"


def _comparable(ln: dict) -> bool:
    """The estimate is of what was measured: a batch estimate for a batch measurement, a sample
    estimate for a sample measurement."""
    return ((ln.get("estimated") or {}).get("per") or "sample") == _scope(ln)


def latency_block(lines: list[dict], per_batch: bool) -> dict:
    """``{measured: {...}, estimated: {...}}`` with ``{mean, p50, p90, p99, n}`` per key; per batch
    (each batch counted once, on both sides) when ``per_batch``."""
    from harness.stats import describe

    ok = _ok(lines, "measured")
    rows = _first_per_batch(ok) if per_batch else ok
    measured = {k: describe([r["measured"].get(f"{k}_ms") for r in rows]) for k in ("prefill", "decode", "total")}
    for k in ("vision", "projector", "lm_prefill", "decode_per_token"):
        vals = [r["measured"].get(f"{k}_ms") for r in rows if r["measured"].get(f"{k}_ms") is not None]
        if vals:
            measured[k] = describe(vals)
    est_rows = [r for r in rows if r.get("estimated")]
    estimated = None
    if est_rows:
        estimated = {k: describe([r["estimated"].get(f"{k}_ms") for r in est_rows]) for k in ("prefill", "decode", "total")}
        estimated["per"] = sorted({(r["estimated"].get("per") or "sample") for r in est_rows})[0] if est_rows else None
    return {"measured": measured, "estimated": estimated, "per": "batch" if per_batch else "sample"}


def estimator_error(lines: list[dict], per_batch: bool) -> dict:
    """Error of the estimates against the run's single measurements: MAPE, share within +-5% and
    +-10%, bias (mean signed relative error), per part."""
    from harness.latency.evaluation import error_stats

    rows = _ok(lines, "estimated")
    if per_batch:
        rows = _first_per_batch(rows)
    per = "batch" if per_batch else "sample"
    bad = [r for r in rows if not _comparable(r)]
    if bad:
        return {"mape_total": None, "within_10pct": None, "n": 0, "per": per,
                "note": "the estimates are per sample but the measured latency is per batch (batch size > 1); "
                        "use the built-in estimator (it estimates whole batches) or run with --batch-size 1"}
    if not rows:
        return {"mape_total": None, "within_10pct": None, "n": 0, "per": per}
    out = {"per": per}
    for part in ("total", "prefill", "decode"):
        s = error_stats([r["estimated"][f"{part}_ms"] for r in rows],
                        [r["measured"][f"{part}_ms"] or None if part == "decode" else r["measured"][f"{part}_ms"] for r in rows])
        suffix = "" if part == "total" else f"_{part}"
        out[f"mape_total" if part == "total" else f"mape_{part}"] = s["mape"]
        out[f"within_5pct{suffix}"] = s["within_5pct"]
        out[f"within_10pct{suffix}"] = s["within_10pct"]
        out[f"bias{suffix}"] = s["bias"]
        if part == "total":
            out["n"] = s["n"]
    return out


BATCH1_SOURCES = {"measured": "measured at batch 1", "estimated_batch1": "estimated at batch 1 (estimated_batch1)"}


def per_sample_ms(lines: list[dict], per_batch: bool, part: str = "total") -> tuple[dict[str, float], str | None]:
    """Each sample's own latency, as a controller sees it (alone, batch 1): the measurement in a
    batch-1 run, else the line's ``estimated_batch1``. -> ({sample id: ms}, source) where source is
    ``measured`` or ``estimated_batch1`` (None when there is neither). The one rule for budgets,
    summaries and ``harness compare``."""
    key = "estimated_batch1" if per_batch else "measured"
    out = {}
    for ln in lines:
        block = ln.get(key) if not ln.get("error") else None
        if block and block.get(f"{part}_ms") is not None:
            out[str(ln["id"])] = float(block[f"{part}_ms"])
    return out, (key if out else None)


def batch1_block(lines: list[dict]) -> dict | None:
    """``{prefill, decode, total}`` as ``{mean, p50, p90, p99, n}`` of the lines' ``estimated_batch1``."""
    from harness.stats import describe

    rows = [ln["estimated_batch1"] for ln in lines if not ln.get("error") and ln.get("estimated_batch1")]
    if not rows:
        return None
    return {k: describe([r.get(f"{k}_ms") for r in rows]) for k in ("prefill", "decode", "total")}


def controller_block(lines: list[dict], per_batch: bool) -> dict | None:
    """What deciding and preparing cost per sample, next to the model: ``policy`` (``policy_ms``)
    and ``host`` (``host_ms``) as ``{mean, p50, p90, p99, n}``, and each mean's share of the mean
    per-sample model latency (:func:`per_sample_ms`), with that latency's source."""
    from harness.stats import describe

    ok = [ln for ln in lines if not ln.get("error")]
    policy = describe([ln.get("policy_ms") for ln in ok])
    host = describe([ln.get("host_ms") for ln in ok])
    if not policy["n"] and not host["n"]:
        return None
    model, source = per_sample_ms(ok, per_batch)
    mean_model = (sum(model.values()) / len(model)) if model else None

    def share(block):
        return (block["mean"] / mean_model) if block["mean"] is not None and mean_model else None

    return {"policy": policy, "host": host, "model_mean_ms": mean_model, "model_source": source,
            "policy_share_of_model": share(policy), "host_share_of_model": share(host)}
