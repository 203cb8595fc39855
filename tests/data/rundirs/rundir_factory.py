"""Builds run directories exactly as docs/contracts.md describes them, for report tests.

``make_run(root, ...)`` writes ``samples.jsonl`` (one line per sample) and ``summary.json`` whose
aggregates (score, CI, latency statistics) are computed from those samples with the harness's own
statistics, so a test can hand-check every number a report prints.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from harness.knobs import Knobs
from harness.stats import bootstrap_ci, describe

METRIC_SUBSCORE = {"vqa_score": "vqa_score", "mc": "mc", "em": "em", "ansl_em": "anls", "cider_score": "cider_score"}


def fingerprint_of(ids: Sequence[str], salt: str = "") -> str:
    return hashlib.sha256(("\n".join(ids) + salt).encode()).hexdigest()


def make_run(root, *, task: str = "vqav2", metric: str = "vqa_score", knobs: str | None = "14,6,high",
             policy: dict | str | None = None, scores: Sequence[float | None] = (1.0, 0.0, 1.0, 1.0),
             ids: Sequence[str] | None = None, latency_ms: float | Sequence[float] = 100.0,
             estimated_ms: float | Sequence[float] | None = None, errors: dict[int, str] | None = None,
             model: str = "reference", device: str = "cpu", device_name: str | None = None, dtype: str = "float32", batch_size: int = 1,
             fingerprint: str | None = None, created: str = "2026-11-20T10:00:00+00:00",
             harness_version: str = "0.1.0", name: str | None = None, source: str = "bundled",
             device_identity: dict | None = None) -> Path:
    """Write one run dir under ``root`` and return its path.

    ``scores``: the main sub-score per sample (None: unlabelled). ``latency_ms``: total measured
    latency per sample (one number = all equal; prefill is 40% of it). ``estimated_ms``: same for
    the estimator (None: no estimator)."""
    n = len(scores)
    ids = list(ids) if ids is not None else [f"{task}-{i:03d}" for i in range(n)]
    errors = errors or {}
    sub = METRIC_SUBSCORE.get(metric, metric)
    meas = [float(latency_ms)] * n if isinstance(latency_ms, (int, float)) else [float(v) for v in latency_ms]
    if estimated_ms is None:
        est = None
    else:
        est = [float(estimated_ms)] * n if isinstance(estimated_ms, (int, float)) else [float(v) for v in estimated_ms]
    k = Knobs.parse(knobs) if knobs is not None else None
    label = name or (k.slug if k else "policy")
    run = Path(root) / label
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    main_scores = []
    for i, sid in enumerate(ids):
        err = errors.get(i)
        sc = {} if (err or scores[i] is None) else {sub: float(scores[i])}
        if sub == "anls" and sc:
            sc["em"] = float(scores[i] >= 1.0)
        if sc:
            main_scores.append(sc[sub])
        elif err:
            main_scores.append(0.0)
        lat = {"prefill_ms": 0.4 * meas[i], "decode_ms": 0.6 * meas[i], "total_ms": meas[i]}
        elat = None if est is None else {"prefill_ms": 0.4 * est[i], "decode_ms": 0.6 * est[i], "total_ms": est[i]}
        lines.append({
            "id": sid, "task": task,
            "knobs": k.to_dict() if k else {"num_blocks": 16, "top_k": 8, "tier": "high"},
            "prediction": "" if err else f"answer {i}",
            "config": str(k) if k else "16,8,high", "score": sc.get(sub) if sc else None,
            "scores": sc or None, "input_tokens": 120, "vision_tokens": 100, "text_tokens": 20, "output_tokens": 3,
            "measured": None if err else lat, "estimated": None if err else elat, "error": err,
            "batch_id": i + 1, "batch_size": batch_size,
        })
    with open(run / "samples.jsonl", "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
    ok = [i for i in range(n) if i not in errors]

    def lat_block(values):
        if values is None:
            return None
        vals = [values[i] for i in ok]
        return {"prefill": _stats([0.4 * v for v in vals]), "decode": _stats([0.6 * v for v in vals]), "total": _stats(vals)}

    score = sum(main_scores) / len(main_scores) if main_scores else None
    lo, hi = bootstrap_ci(main_scores) if main_scores else (None, None)
    summary = {
        "task": task, "metric": metric, "model": model,
        "data": {"source": source, "synthetic": False, "fingerprint": fingerprint or fingerprint_of(ids),
                 "subset": {"limit": None, "seed": 0, "n_total": n}},
        "n": n, "n_failed": len(errors), "score": score, "scores": {sub: score} if score is not None else {},
        "score_ci95": [lo, hi] if lo is not None else None,
        "latency_ms": {"measured": lat_block(meas), "estimated": lat_block(est)},
        "n_expected": n, "complete": True, "latency_mode": "per-sample" if batch_size == 1 else "per-batch",
        "estimator_error": {"mape_total": None, "within_10pct": None, "n": 0},
        "device": device, "device_name": device_name, "dtype": dtype, "batch_size": batch_size,
        **({"device_identity": device_identity} if device_identity else {}),
        "harness_version": harness_version, "created": created,
    }
    summary["knobs"] = k.to_dict() if k is not None else None
    summary["config"] = str(k) if k is not None else None
    summary["policy"] = policy if k is None else {"name": "fixed", "args": {}}
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return run


def _stats(values):
    d = describe(values)
    return {k: d[k] for k in ("mean", "p50", "p90", "p99")}
