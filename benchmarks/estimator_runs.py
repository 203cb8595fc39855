"""How well the built-in latency estimator predicts the runs users make: plain runs of ScienceQA,
TextVQA and DocVQA at 16,8,high, 14,6,medium and 12,4,low, plus a random policy over the ``full``
knob space, each judged on its own samples (single measurements, what a run's summary.json
reports): MAPE of total latency, share within +-5% and +-10%, bias, and prefill / decode MAPE.

The fit is the one for the runs' execution mode (model, device, dtype, engine, experts
implementation, batch bucket); when there is none, ``harness profile`` makes it first (its own
held-out figures are reported beside). The model is loaded once for all runs.

    python benchmarks/estimator_runs.py                    # GPU: random:molmoe-1b, fast engine, 100 samples per run
    python benchmarks/estimator_runs.py --model reference --device cpu --engine eager --limit 4 \\
        --tasks scienceqa --configs 16,8,high --no-policy  # CPU dry run

Goal (fast engine, H200): total MAPE <= 5% with >= 90% of samples within +-10%, prefill and decode
MAPE each <= 8%. Prints the table and writes estimator_runs_<model>__<device>.json / .md to
benchmarks/results/ (or --results).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS_DIR, ROOT, resolve_setup

GOAL = {"mape_total": 0.05, "within_10pct": 0.90, "mape_prefill": 0.08, "mape_decode": 0.08}


def ensure_fit(args, backend, info) -> dict:
    """The fit for the runs' mode: found, or made now by `harness profile` (a subprocess, same mode)."""
    from harness.backends import model_fingerprint
    from harness.latency.firstuse import backend_key, prompt_bucket_of
    from harness.latency.fit_files import find_fit

    key = backend_key(backend, info, model_fingerprint(args.model))
    look = find_fit(key, 1, prompt_bucket_of(backend))
    if look.path is None or args.reprofile:
        cmd = [sys.executable, "-m", "harness", "profile", "--model", args.model, "--device", args.device,
               "--dtype", args.dtype, "--engine", args.engine, "--repeats", str(args.repeats), "--quiet", "--json"]
        if args.experts_impl:
            cmd += ["--experts-impl", args.experts_impl]
        if args.profile_grid:
            cmd += ["--grid", args.profile_grid]
        print("profiling first:", " ".join(cmd[2:]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"harness profile failed:\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout)
        out["profile_wall_s"] = round(time.perf_counter() - t0, 1)
        look = find_fit(key, 1, prompt_bucket_of(backend))
        if look.path is None:
            raise SystemExit(f"harness profile wrote {out.get('fit')} but no fit matches the runs' mode {key.describe()}")
    fit = json.loads(Path(look.path).read_text())
    return {"path": str(look.path), "key": fit.get("key"), "headline": fit.get("headline"),
            "heldout_medians": {k: (v or {}).get("mape") for k, v in (fit.get("heldout_medians") or {}).items()
                                if isinstance(v, dict)}, "created": fit.get("created")}


def one_run(args, backend, task: str, knobs: str | None, folder: Path) -> dict:
    from harness.api import evaluate

    kw = dict(knobs=knobs) if knobs else dict(policy="random", knob_space=args.knob_space)
    t0 = time.perf_counter()
    res = evaluate(task, model=args.model, backend=backend, limit=args.limit, output=folder, seed=args.seed, quiet=True,
                   **kw)
    s = res.summary
    e = s.get("estimator_error") or {}
    info = s.get("estimator_info") or {}
    return {"task": task, "run": knobs or f"random policy ({args.knob_space})", "n": s.get("n"),
            "mape_total": e.get("mape_total"), "within_5pct": e.get("within_5pct"), "within_10pct": e.get("within_10pct"),
            "bias": e.get("bias"), "mape_prefill": e.get("mape_prefill"), "mape_decode": e.get("mape_decode"),
            "measured_total_ms_p50": ((s.get("latency_ms") or {}).get("measured") or {}).get("total", {}).get("p50"),
            "estimator": info.get("name"), "estimator_kind": info.get("kind"), "engine": s.get("engine"),
            "warmup_s": (s.get("timing") or {}).get("warmup_s"), "wall_s": round(time.perf_counter() - t0, 1)}


def _pct(v, signed=False):
    return "-" if v is None else (f"{100 * v:+.1f}%" if signed else f"{100 * v:.1f}%")


def markdown(report: dict) -> str:
    fit = report["fit"]
    h = fit.get("headline") or {}
    lines = [f"# Latency estimator on real runs: {report['model']} on {report['device_name']}",
             "", f"{report['dtype']}, engine {report['engine']}, batch 1, {report['limit']} samples per run; "
             f"fit `{Path(fit['path']).name}` (its own held-out single-measurement MAPE {_pct(h.get('mape_total'))}, "
             f"within +-10% {_pct(h.get('within_10pct'))}). Errors are against each run's single measurements.", "",
             "| task | run | n | total MAPE | within +-5% | within +-10% | bias | prefill MAPE | decode MAPE | p50 total ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        p50 = r.get("measured_total_ms_p50")
        lines.append(f"| {r['task']} | {r['run']} | {r['n']} | {_pct(r['mape_total'])} | {_pct(r['within_5pct'])} | "
                     f"{_pct(r['within_10pct'])} | {_pct(r['bias'], True)} | {_pct(r['mape_prefill'])} | "
                     f"{_pct(r['mape_decode'])} | {'-' if p50 is None else f'{p50:.1f}'} |")
    g = report["goal"]
    lines += ["", f"Goal: total MAPE <= {_pct(GOAL['mape_total'])} and >= {_pct(GOAL['within_10pct'])} within +-10%, "
              f"prefill and decode MAPE <= {_pct(GOAL['mape_prefill'])}: met by {g['met']} of {g['runs']} runs.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--engine", default="fast", choices=("auto", "fast", "eager"))
    ap.add_argument("--experts-impl", default=None)
    ap.add_argument("--tasks", default="scienceqa,textvqa,docvqa")
    ap.add_argument("--configs", default="16,8,high;14,6,medium;12,4,low", help="';'-separated knobs")
    ap.add_argument("--no-policy", action="store_true", help="skip the random-policy runs")
    ap.add_argument("--knob-space", default="full")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="repeats of the profile, when one is made")
    ap.add_argument("--profile-grid", default=None, help="--grid for the profile, when one is made")
    ap.add_argument("--reprofile", action="store_true", help="profile again even when a fit exists")
    ap.add_argument("--results", default=str(RESULTS_DIR))
    args = ap.parse_args(argv)

    from harness import backends
    from harness.engine import resolve as resolve_engine
    from harness.environment import device_identity, identity_key

    dev, dt, impl = resolve_setup(args.device, args.dtype, args.experts_impl)
    args.device, args.dtype = dev, dt
    info = backends.describe(args.model)
    engine = resolve_engine(args.engine, dev, info.family)
    backend = backends.load(args.model, device=dev, dtype=dt, experts_impl=impl, engine=engine)
    fit = ensure_fit(args, backend, info)
    from _common import write_report

    ident = device_identity(dev)
    stem = f"estimator_runs_{args.model.replace(':', '-')}__{identity_key(ident)}"
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            plans = [c.strip() for c in args.configs.split(";") if c.strip()] + ([] if args.no_policy else [None])
            for i, knobs in enumerate(plans):
                row = one_run(args, backend, task, knobs, Path(tmp) / f"{task}-{i}")
                runs.append(row)
                print(json.dumps(row), flush=True)
                # the report is rewritten after every run, so a run cut short still leaves the finished ones
                met = sum(1 for r in runs if r["mape_total"] is not None and r["mape_total"] <= GOAL["mape_total"]
                          and (r["within_10pct"] or 0) >= GOAL["within_10pct"] and (r["mape_prefill"] or 1) <= GOAL["mape_prefill"]
                          and (r["mape_decode"] or 1) <= GOAL["mape_decode"])
                report = {"benchmark": "estimator_runs", "model": args.model, "device": identity_key(ident),
                          "device_name": ident["name"], "identity": ident, "dtype": dt,
                          "engine": backend.engine if hasattr(backend, "engine") else engine,
                          "experts_impl": getattr(backend, "experts_impl", impl), "limit": args.limit, "fit": fit,
                          "runs": runs, "goal": {**GOAL, "met": met, "runs": len(runs)}}
                write_report(args.results, stem, report, markdown(report))

if __name__ == "__main__":
    main()
