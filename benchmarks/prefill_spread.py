"""Why does prefill time spread between samples of one run? Runs a task at fixed knobs as a user
does (``harness.evaluate``, batch 1) and lists each sample's prefill split (vision, projector,
language-model prefill, the rest) next to its input, vision and text tokens, with a least-squares
line of language-model prefill on input tokens and each sample's deviation from it. Optionally
profiles a second pass of the same samples (torch.profiler) and prints the operations by host and
by device time, to see where the time of the slow samples goes.

    python benchmarks/prefill_spread.py --task scienceqa --knobs 16,8,high --limit 24 --profile 8
    python benchmarks/prefill_spread.py --model reference --device cpu --task scienceqa --limit 4   # dry run

Prints the table and writes prefill_spread_<task>.json / .md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS_DIR, resolve_setup, write_report


def _samples(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.rglob("samples*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("measured")]


def _table(rows: list[dict]) -> tuple[list[dict], dict]:
    out = []
    for r in rows:
        m = r["measured"]
        parts = [m.get(k) or 0.0 for k in ("vision_ms", "projector_ms", "lm_prefill_ms")]
        out.append({"id": r["id"], "input_tokens": r.get("input_tokens"), "vision_tokens": r.get("vision_tokens"),
                    "text_tokens": r.get("text_tokens"), "prefill_ms": round(m["prefill_ms"], 3),
                    "vision_ms": round(parts[0], 3), "projector_ms": round(parts[1], 3), "lm_prefill_ms": round(parts[2], 3),
                    "rest_ms": round(m["prefill_ms"] - sum(parts), 3), "decode_ms": round(m["decode_ms"], 3),
                    "output_tokens": r.get("output_tokens")})
    fit = {}
    xs = np.array([float(o["input_tokens"] or 0) for o in out])
    ys = np.array([o["lm_prefill_ms"] for o in out])
    if len(out) >= 3 and np.ptp(xs) > 0:
        slope, icept = np.polyfit(xs, ys, 1)
        pred = slope * xs + icept
        for o, p in zip(out, pred):
            o["lm_prefill_dev"] = round(float((o["lm_prefill_ms"] - p) / p), 4)
        fit = {"ms_per_input_token": float(slope), "intercept_ms": float(icept),
               "mean_abs_dev": float(np.mean(np.abs((ys - pred) / pred)))}
    for key in ("prefill_ms", "lm_prefill_ms", "vision_ms", "rest_ms"):
        v = np.array([o[key] for o in out])
        fit[key] = {"min": float(v.min()), "p50": float(np.median(v)), "max": float(v.max())} if len(v) else {}
    return out, fit


def _profile(args, backend, folder: Path) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from harness.api import evaluate

    cuda = torch.device(backend.device).type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        evaluate(args.task, knobs=args.knobs, model=args.model, backend=backend, limit=args.profile, output=folder,
                 seed=args.seed, quiet=True, estimator="none")
    evs = list(prof.key_averages())
    host = sorted(evs, key=lambda e: -e.self_cpu_time_total)[: args.top]
    res = {"host_self": [{"name": e.key[:100], "calls": e.count, "self_us": round(e.self_cpu_time_total, 1)} for e in host]}
    if cuda:
        dev = sorted(evs, key=lambda e: -(getattr(e, "self_device_time_total", 0) or 0))[: args.top]
        res["device_self"] = [{"name": e.key[:100], "calls": e.count, "self_us": round(e.self_device_time_total, 1)} for e in dev]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--task", default="scienceqa")
    ap.add_argument("--knobs", default="16,8,high")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--profile", type=int, default=0, help="profile a second pass over this many samples (0: no)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=os.environ.get("OUT") or str(RESULTS_DIR))
    args = ap.parse_args(argv)

    from harness import backends
    from harness.api import evaluate
    from harness.engine import resolve as resolve_engine

    dev, dt, impl = resolve_setup(args.device, args.dtype, None)
    info = backends.describe(args.model)
    engine = resolve_engine(args.engine, dev, info.family)
    backend = backends.load(args.model, device=dev, dtype=dt, experts_impl=impl, engine=engine)
    with tempfile.TemporaryDirectory() as tmp:
        res = evaluate(args.task, knobs=args.knobs, model=args.model, backend=backend, limit=args.limit,
                       output=Path(tmp) / "run", seed=args.seed, quiet=True, estimator="none")
        rows, fit = _table(_samples(Path(tmp) / "run"))
        prof = _profile(args, backend, Path(tmp) / "prof") if args.profile else {}
    timing = res.summary.get("timing") or {}
    report = {"benchmark": "prefill_spread", "model": args.model, "device": dev, "dtype": dt, "engine": backend.engine,
              "task": args.task, "knobs": args.knobs, "warmup": timing, "fit": fit, "samples": rows, "profile": prof}
    md = [f"# Prefill spread: {args.task} {args.knobs}, {args.model} ({dev}, {dt}, engine {backend.engine})", "",
          f"lm_prefill ~ input tokens: {json.dumps({k: v for k, v in fit.items() if not isinstance(v, dict)})}", "",
          "| id | input tok | vision tok | text tok | prefill ms | vision | projector | lm_prefill | rest | lm dev | decode ms | out tok |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['id']} | {r['input_tokens']} | {r['vision_tokens']} | {r['text_tokens']} | {r['prefill_ms']} | "
                  f"{r['vision_ms']} | {r['projector_ms']} | {r['lm_prefill_ms']} | {r['rest_ms']} | "
                  f"{r.get('lm_prefill_dev', '')} | {r['decode_ms']} | {r['output_tokens']} |")
    for part, ops in prof.items():
        md += ["", f"Profiled second pass ({args.profile} samples), top operations by {part.replace('_', ' ')} time:", "",
               "| op | calls | self us |", "|---|---|---|"] + [f"| {o['name']} | {o['calls']} | {o['self_us']} |" for o in ops]
    write_report(args.results, f"prefill_spread_{args.task}", report, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
