"""What a finished run says about itself: the score block (``finalize``), ``summary.json``
(``build_summary``) and the run configuration that decides whether a directory may be resumed
(``make_run_config``, ``policy_config``)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from harness.hostload import busy_note, host_load
from harness.knobs import Knobs
from harness.stats import budget_adherence
from harness.latency.aggregate import (BATCH1_SOURCES, batch1_block, controller_block, estimator_error, latency_block,
                                       per_sample_ms)
from harness.latency.fit_files import stale_fit_note
from harness.types import Sample


def finalize(record, task, metric, samples: Sequence[Sample], labeled: bool) -> tuple[list[dict], dict]:
    """Score over all finished lines (corpus metrics included) in data order.

    Returns ``(lines in data order, score block)``; the score block holds ``score``, ``scores``,
    ``score_ci95``, ``groups`` and notes. Failed samples are scored as empty predictions (wrong).
    For corpus-level metrics the per-sample scores are filled into the lines.
    """
    from harness.stats import bootstrap_ci

    by_id = record.finished
    lines = [by_id[str(s.id)] for s in samples if str(s.id) in by_id]
    block: dict[str, Any] = {"score": None, "scores": {}, "score_ci95": None, "groups": {}, "notes": []}
    if metric is None:
        return lines, block
    if not labeled:
        block["notes"].append("this split has no public labels: predictions were written, scoring was refused")
        return lines, block
    sample_of = {str(s.id): s for s in samples}
    scored = [(ln, sample_of[ln["id"]]) for ln in lines if sample_of[ln["id"]].labeled]
    if not scored:
        block["notes"].append("no labeled samples to score")
        return lines, block
    items = [task.metric_item(s, ln["prediction"] if ln.get("prediction") is not None else "") for ln, s in scored]
    result = metric.score(items)
    subs = tuple(getattr(metric, "subscores", ()) or tuple(result.aggregate))
    main = subs[0] if subs else None
    block["scores"] = {k: float(v) for k, v in result.aggregate.items()}
    block["score"] = block["scores"].get(main) if main else None
    per_main = [float(d.get(main, 0.0) or 0.0) for d in result.per_item]
    lo, hi = bootstrap_ci(per_main, seed=0)
    block["score_ci95"] = [lo, hi]
    if getattr(metric, "corpus_level", False):
        for (ln, _), d in zip(scored, result.per_item):
            ln["scores"] = {k: v for k, v in dict(d).items() if k != "id"}
            ln["score"] = d.get(main)
        block["notes"].append("corpus-level metric: the score is over all samples; the CI resamples per-sample scores")
    if any(ln.get("error") for ln, _ in scored):
        block["notes"].append("failed samples are scored as wrong (empty prediction)")
    # sub-scores per sample group (e.g. TallyQA simple / complex)
    groups: dict[str, list[int]] = {}
    for i, (_, s) in enumerate(scored):
        if s.group:
            groups.setdefault(str(s.group), []).append(i)
    for g, idx in sorted(groups.items()):
        sub = metric.score([items[i] for i in idx]) if getattr(metric, "corpus_level", False) else None
        if sub is not None:
            agg = {k: float(v) for k, v in sub.aggregate.items()}
        else:
            agg = {k: float(sum(float(result.per_item[i].get(k, 0.0) or 0.0) for i in idx) / len(idx)) for k in subs}
        g_lo, g_hi = bootstrap_ci([per_main[i] for i in idx], seed=0)
        block["groups"][g] = {"n": len(idx), "score": agg.get(main), "scores": agg, "score_ci95": [g_lo, g_hi]}
        if main in agg:
            block["scores"][g] = agg[main]
    return lines, block




def build_summary(*, task, metric, lines: list[dict], score_block: dict, run_config: dict, info, data, backend,
                  batch_size: int, policy_desc: dict, fixed_knobs: Knobs | None, estimator_desc: dict | None,
                  estimator_note: str | None, latency_budget_ms: float | None, timing: dict | None,
                  n_total: int, batch1_check: dict | None = None, batch1_note: str | None = None) -> dict:
    from harness import __version__

    per_batch = int(batch_size) > 1
    n_failed = sum(1 for ln in lines if ln.get("error"))
    hist = Counter(ln["config"] for ln in lines if ln.get("config"))
    lat = latency_block(lines, per_batch)
    lat["estimated_batch1"] = batch1_block(lines)
    budget = None
    if latency_budget_ms is not None:  # a per-sample batch-1 budget: measured at batch 1, else estimated_batch1
        own, source = per_sample_ms(lines, per_batch)
        block = budget_adherence(list(own.values()), latency_budget_ms)
        budget = {**block, "count": block["over"], "rate": (block["over"] / block["n"]) if block["n"] else None,
                  "latency": source, "latency_label": BATCH1_SOURCES.get(source or "", "no per-sample latency")}
    est_means = None
    if lat["estimated"]:
        est_means = lat["estimated"]["total"]["mean"]
    timing_out = None
    if timing:
        loop = timing.get("loop_s") or 0.0
        model_s = (timing.get("model_ms") or 0.0) / 1000.0
        timing_out = {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in timing.items()},
                      "overhead_share": (max(loop - model_s, 0.0) / loop) if loop > 0 else None}
    notes = list(score_block.get("notes", []))
    if per_batch:
        notes.append(f"latency figures are per batch of up to {batch_size} samples, not per sample")
    if estimator_note:
        notes.append(estimator_note)
    if batch1_note:
        notes.append(batch1_note)
    est_error = estimator_error(lines, per_batch)
    stale = stale_fit_note(est_error, estimator_desc)
    if stale:
        notes.append(stale)
    from harness.engine.compile_limits import limit_note

    if limit_note():  # a compiled function ran uncompiled past torch's limit: the latencies after it are not the engine's
        notes.append(limit_note())
    host = host_load(*((timing or {}).get("load_1m") or [None, None]), str(getattr(backend, "device", "cpu")))
    if busy_note(host):
        notes.append(busy_note(host))
    return {
        "task": task.name,
        "metric": getattr(metric, "name", None),
        "model": getattr(info, "name", None),
        "model_fingerprint": (run_config or {}).get("model_fingerprint"),
        "model_info": _plain(info),
        "data": {"source": data.source, "synthetic": bool(data.synthetic), "fingerprint": data.fingerprint,
                 "subset": data.subset, "labeled": bool(data.labeled)},
        "seed": (run_config or {}).get("seed"),  # policies and the bootstrap
        "subset_seed": (data.subset or {}).get("seed"),  # which samples --limit took
        "knobs": fixed_knobs.to_dict() if fixed_knobs else None,
        "config": str(fixed_knobs) if fixed_knobs else None,
        "policy": policy_desc,
        "n": len(lines),
        "n_expected": n_total,
        "complete": len(lines) == n_total,
        "n_failed": n_failed,
        "score": score_block.get("score"),
        "score_name": (tuple(getattr(metric, "subscores", ()) or ()) or (None,))[0],
        "scores": score_block.get("scores"),
        "score_ci95": score_block.get("score_ci95"),
        "groups": score_block.get("groups") or {},
        "latency_ms": lat,
        "latency_mode": "per-batch" if per_batch else "per-sample",
        "batch_size": int(batch_size),
        "estimator": (estimator_desc or {}).get("name") if estimator_desc else None,
        "estimator_info": estimator_desc,
        "estimator_error": est_error,
        "estimated_vs_measured_total_ms": {"estimated_mean": est_means, "measured_mean": lat["measured"]["total"]["mean"]},
        "knobs_histogram": dict(sorted(hist.items())),
        "latency_budget": budget,
        "batch1_check": batch1_check,
        "controller_ms": controller_block(lines, per_batch),
        "device": str(getattr(backend, "device", "")),
        "device_name": _device_identity(backend)["name"],
        "device_identity": _device_identity(backend),  # where it ran: CPU model, cores, threads; GPU, driver; torch, CUDA
        "dtype": str(getattr(backend, "dtype", "")).replace("torch.", ""),
        "clock": next((ln["measured"].get("clock") for ln in lines if ln.get("measured")), None),
        "engine": getattr(backend, "engine", None),
        "engine_settings": getattr(backend, "engine_settings", None),
        "harness_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timing": timing_out,
        "host_load": host,
        "notes": notes,
        "run_config": run_config,
    }


def _plain(obj) -> dict | None:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj):
        return asdict(obj)
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")} if hasattr(obj, "__dict__") else None


def _device_identity(backend) -> dict:
    from harness.environment import device_identity

    return device_identity(str(getattr(backend, "device", "cpu")))


def make_run_config(*, task, model: str, data, policy: dict, batch_size: int, style: str | None,
                    max_new_tokens: int | None, device: str, dtype: str, seed: int, estimator: str | None,
                    latency_budget_ms: float | None = None, extra: dict | None = None) -> dict:
    """Everything that must match for a directory to be resumed (``run.json`` / ``run_config``)."""
    from harness.backends import model_fingerprint

    cfg = {
        "task": task.name,
        "model": model,
        "model_fingerprint": model_fingerprint(model),
        "data": {"source": data.source, "fingerprint": data.fingerprint, "subset": data.subset},
        "policy": policy,
        "batch_size": int(batch_size),
        "style": style,
        "max_new_tokens": max_new_tokens,
        "device": str(device),
        "dtype": str(dtype),
        "seed": int(seed),
        "estimator": estimator,
        "latency_budget_ms": latency_budget_ms,
    }
    cfg.update(extra or {})
    import json

    return json.loads(json.dumps(cfg, default=str))


def policy_config(knobs: Knobs | None, policy_spec: str | None, policy_args: dict | None, info) -> dict:
    """The policy part of a run config: ``{"name": "fixed", "knobs": "14,6,medium"}`` or
    ``{"name": SPEC, "args": {...}}``."""
    if policy_spec in (None, "fixed") and knobs is not None:
        k = knobs if knobs.tier else knobs.with_tier(getattr(info, "default_tier", None) or "medium")
        return {"name": "fixed", "knobs": str(k)}
    return {"name": policy_spec, "args": dict(policy_args or {})}


def check_failures(runs, max_failed: float | None = None) -> None:
    """Raise :class:`~harness.errors.RunFailedError` (exit 1) when a run's samples all failed, or
    more than a ``max_failed`` share of them. ``runs``: (summary, run directory) pairs."""
    from harness.errors import RunFailedError
    from harness.jsonio import iter_jsonl

    bad = []
    for summary, folder in runs:
        n, n_failed = int(summary.get("n") or 0), int(summary.get("n_failed") or 0)
        if n and (n_failed == n or (max_failed is not None and n_failed / n > max_failed)):
            bad.append((summary, Path(folder), n, n_failed))
    if not bad:
        return
    summary, folder, n, n_failed = bad[0]
    first = next((str(line["error"]) for _, line in iter_jsonl(folder / "samples.jsonl") if line.get("error")), "?")
    limit = "all" if max_failed is None else f"more than {max_failed:.0%}"
    more = f" (and {len(bad) - 1} more run(s))" if len(bad) > 1 else ""
    raise RunFailedError(f"{n_failed} of {n} samples failed in {summary.get('task')} "
                         f"{summary.get('config') or (summary.get('policy') or {}).get('name', '')} ({limit} may not){more}; "
                         f"first error: {first[:200]}; see {folder / 'samples.jsonl'}")
