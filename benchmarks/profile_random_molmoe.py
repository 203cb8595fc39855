"""Profile and fit the latency estimator for ``random:molmoe-1b`` (MolmoE-1B shape, random
weights) on the device at hand, and report the held-out error of the fit.

    python benchmarks/profile_random_molmoe.py                      # GPU: the full grid
    python benchmarks/profile_random_molmoe.py --model reference --device cpu --grid "..."   # a CPU smoke run

The sweep is ``harness profile``'s (knobs x tiers x prompt lengths x output lengths, seeded,
repeated, warm-up excluded, EOS ignored so every call decodes the full output length). A quarter
of the configurations (blocks, top_k, tier, prompt length) is held out of the fit; the table gives
MAPE and the share within +-10% on them for prefill, decode and total. Goal: total MAPE < 5% and
> 95% of held-out predictions within +-10%.

Writes ``benchmarks/results/profile_<model>__<device>.json`` and ``.md`` and (``--save-fit``) the
fit under ``configs/estimators/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, describe, load, resolve_setup, write_report  # noqa: E402  (also puts the repo on sys.path)

DEFAULT_GRID = "blocks=12,14,16;top_k=1,2,4,8;tier=low,medium,high;prompt=16,96;output=6,16"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--grid", default=DEFAULT_GRID)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=None, help="per-configuration warm-up calls (default 1 on CPU, 0 on GPU: the backend warms up each new shape)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--experts-impl", default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--save-fit", action="store_true", help="also save the fit under configs/estimators/")
    ap.add_argument("--results", default=str(RESULTS_DIR))
    args = ap.parse_args(argv)

    import torch
    import transformers

    from harness.latency.estimator import device_slug, model_slug, writable_fit_path
    from harness.latency.profile import parse_grid, profile_backend, save_profile

    dev, dt, impl = resolve_setup(args.device, args.dtype, args.experts_impl)
    info = describe(args.model)
    grid = parse_grid(args.grid, info)
    t0 = time.perf_counter()
    backend = load(args.model, device=dev, dtype=dt, experts_impl=impl, compile=args.compile)
    load_s = time.perf_counter() - t0
    warmup = args.warmup if args.warmup is not None else (0 if dev.startswith("cuda") else 1)
    n_jobs = len(grid.configs()) * len(grid.output) * args.repeats
    print(f"profiling {info.name} on {dev} ({dt}, experts {impl}): {n_jobs} timed calls", flush=True)

    def progress(done, total, label):
        if done % max(1, total // 10) == 0 or done == total:
            print(f"  {done}/{total} {label} ({time.perf_counter() - t0:.0f}s)", flush=True)

    res = profile_backend(backend, info, dev, grid, repeats=args.repeats, seed=args.seed, warmup=warmup,
                          holdout=args.holdout, progress=progress)
    card = res.estimator.meta["device_name"]
    slug = f"{model_slug(info)}__{device_slug(dev)}"
    fit_path = None
    if args.save_fit:
        fit_path, _ = save_profile(res, writable_fit_path(info, dev))
    h = res.heldout
    goal = {"total_mape_lt_5pct": (h.get("total", {}).get("mape") or 1) < 0.05,
            "within_10pct_gt_95pct": (h.get("total", {}).get("within_10pct") or 0) > 0.95}
    report = {
        "benchmark": "profile_random_molmoe",
        "model": info.name,
        "device": dev,
        "card": card,
        "dtype": dt,
        "experts_impl": getattr(backend, "experts_impl", impl),
        "compile": args.compile,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "grid": grid.to_dict(),
        "repeats": args.repeats,
        "seed": args.seed,
        "n_measurements": len(res.measurements),
        "heldout_share": args.holdout,
        "heldout": h,
        "heldout_single_measurements": res.extra.get("heldout_single_measurements"),
        "measurement_noise": res.extra.get("measurement_noise"),
        "fit_error_all": res.train_error,
        "goal": goal,
        "profile_seconds": round(res.seconds, 1),
        "model_load_seconds": round(load_s, 1),
        "coefficients": {"prefill": res.estimator.prefill_coef.tolist(), "decode_per_token": res.estimator.decode_coef.tolist()},
        "fit_file": str(fit_path) if fit_path else None,
        "measurement_summary": _measurement_summary(res.measurements),
    }
    write_report(args.results, f"profile_{slug}", report, _markdown(report))
    return 0


def _measurement_summary(ms) -> dict:
    import numpy as np

    pre = np.asarray([m.prefill_ms for m in ms])
    step = np.asarray([x for m in ms for x in m.decode_step_ms])
    return {"prefill_ms": {"min": float(pre.min()), "max": float(pre.max())},
            "decode_step_ms": {"min": float(step.min()), "max": float(step.max())} if step.size else None,
            "vision_tokens": sorted({m.vision_tokens for m in ms}), "text_tokens": sorted({m.text_tokens for m in ms})}


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def _markdown(r: dict) -> str:
    h = r["heldout"]
    lines = [f"# Latency estimator fit: {r['model']} on {r['card']}",
             "",
             f"{r['device']}, {r['dtype']}, experts `{r['experts_impl']}`, torch {r['torch']}, transformers {r['transformers']}; "
             f"{r['n_measurements']} measurements ({r['repeats']} repeats) over grid `{json.dumps(r['grid'])}`; "
             f"{h.get('n_configs', 0)} configurations held out of the fit ({int(100 * r['heldout_share'])}%). "
             f"Created {r['created']}.",
             "",
             "Held-out error against the median of each configuration's repeats (the estimator predicts expected",
             "latency), then against single measurements, and the noise floor: how far single measurements fall",
             "from the median of their own repeats (no estimator can beat it on single measurements).",
             "",
             "| part | held-out MAPE | within +-10% | n | single-measurement MAPE | within +-10% | noise floor (mean dev.) | within +-10% |",
             "|---|---|---|---|---|---|---|---|"]
    single = r.get("heldout_single_measurements") or {}
    noise = r.get("measurement_noise") or {}
    for part in ("prefill", "decode", "total"):
        p = h.get(part) or {}
        s1 = single.get(part) or {}
        nz = noise.get(part) or {}
        lines.append(f"| {part} | {_pct(p.get('mape'))} | {_pct(p.get('within_10pct'))} | {p.get('n', 0)} | "
                     f"{_pct(s1.get('mape'))} | {_pct(s1.get('within_10pct'))} | {_pct(nz.get('mean_rel_dev'))} | {_pct(nz.get('within_10pct'))} |")
    g = r["goal"]
    lines += ["", f"Goal (total MAPE < 5%, > 95% within +-10%): "
                  f"{'met' if all(g.values()) else 'not met'} ({', '.join(f'{k}: {v}' for k, v in g.items())}).",
              f"Measured range: prefill {r['measurement_summary']['prefill_ms']['min']:.2f}-"
              f"{r['measurement_summary']['prefill_ms']['max']:.2f} ms; vision tokens {r['measurement_summary']['vision_tokens']}; "
              f"text tokens {r['measurement_summary']['text_tokens']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
