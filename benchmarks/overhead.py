"""The harness's own overhead: time of a run spent outside model forward passes.

    python benchmarks/overhead.py                                   # reference model, bundled scienceqa
    python benchmarks/overhead.py --model random:molmoe-1b --limit 64 --batch-size 1   # on a GPU

Runs one task through the real runner (token counting, policy, grouping, batching, decode loop,
postprocessing, scoring, estimator, record writing) and splits the wall clock of ``Runner.run``:

- model time: the measured prefill + decode of every batch (CUDA events / perf_counter_ns, the
  same figures the run records);
- backend overhead: time inside ``backend.generate`` outside the measured forward passes
  (request preparation, image preprocessing, tokenisation, detokenisation);
- runner overhead: everything else in the loop (prompts, token counts for the policy, policy,
  grouping, scoring, estimates, JSONL lines).

Overhead share = (wall - model time) / wall; goal < 3%. Model loading and the data load are not
part of a run's loop and are reported separately. Writes ``benchmarks/results/overhead_<model>__<device>.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, describe, load, resolve_setup, write_report  # noqa: E402  (also puts the repo on sys.path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="reference")
    ap.add_argument("--task", default="scienceqa")
    ap.add_argument("--data", default="bundled")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--knobs", default=None, help="default: the full model")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--experts-impl", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--estimator", default="builtin", help="builtin, none, or a spec (as harness run --estimator)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(RESULTS_DIR))
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    import torch

    import harness.metrics as metrics
    import harness.tasks as tasks
    from harness.knobs import Knobs
    from harness.environment import device_identity, identity_key
    from harness.latency.fit_files import slugify
    from harness import api
    from harness.run_setup import ensure_fitted, prepare_estimator
    from harness.tasks.data import load_samples

    dev, dt, impl = resolve_setup(args.device, args.dtype, args.experts_impl)
    info = describe(args.model)
    task = tasks.get_task(args.task)
    metric = metrics.get_metric(task.metric)
    t0 = time.perf_counter()
    data = load_samples(task, args.data, args.limit, args.seed)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    backend = load(args.model, device=dev, dtype=dt, experts_impl=impl)
    load_s = time.perf_counter() - t0
    est, note = prepare_estimator(None if args.estimator == "builtin" else args.estimator, info, dev, quiet=True)
    est, fit_note = ensure_fitted(est, backend, info, dev, args.seed, quiet=True, model_spec=args.model,
                                  batch_size=args.batch_size)
    knobs = Knobs.parse(args.knobs) if args.knobs else Knobs(info.n_blocks, info.default_top_k, info.default_tier)
    if dev.startswith("cuda"):  # the backend warms up each new shape itself; one call here loads kernels
        from harness.types import GenRequest

        backend.apply_knobs(knobs)
        backend.generate([GenRequest(task.prompt(data.samples[0]), data.samples[0].image)], 2, knobs.tier)
    with tempfile.TemporaryDirectory() as tmp:
        result = api.evaluate(task, knobs, backend=backend, data=data, output=Path(tmp) / "run", metric=metric,
                              estimator=est if est is not None else "none", batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens, seed=args.seed)
        summary, lines = result.summary, result.samples[0]
    t = summary["timing"]
    wall = t["loop_s"]
    model_s = t["model_ms"] / 1000.0
    gen_s = t["generate_s"]
    share = (wall - model_s) / wall if wall > 0 else None
    card = summary["device_name"]
    report = {
        "benchmark": "overhead",
        "model": info.name,
        "task": task.name,
        "n": summary["n"],
        "n_failed": summary["n_failed"],
        "knobs": str(knobs),
        "batch_size": args.batch_size,
        "device": dev,
        "card": card,
        "dtype": summary["dtype"],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_loop_s": round(wall, 4),
        "model_s": round(model_s, 4),
        "backend_overhead_s": round(gen_s - model_s, 4),
        "runner_overhead_s": round(wall - gen_s, 4),
        "overhead_share": share,
        "backend_overhead_share": (gen_s - model_s) / wall if wall > 0 else None,
        "runner_overhead_share": (wall - gen_s) / wall if wall > 0 else None,
        "goal_overhead_lt_3pct": share is not None and share < 0.03,
        "not_in_the_loop_s": {"data_load": round(data_s, 3), "model_load": round(load_s, 3),
                               "process_start_to_run": round(t0 - t_start, 3)},
        "batches": t["batches"],
        "mean_output_tokens": sum(ln["output_tokens"] or 0 for ln in lines) / max(1, len(lines)),
        "estimator": summary["estimator"],
    }
    slug = f"{slugify(info.name)}__{identity_key(device_identity(dev))}" + (f"__b{args.batch_size}" if args.batch_size != 1 else "")
    write_report(args.results, f"overhead_{slug}", report, _markdown(report))
    return 0


def _markdown(r: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    return "\n".join([
        f"# Harness overhead: {r['model']} on {r['card']}",
        "",
        f"{r['device']}, {r['dtype']}, torch {r['torch']}; task {r['task']} ({r['n']} samples, {r['n_failed']} failed), "
        f"knobs {r['knobs']}, batch size {r['batch_size']}, {r['batches']} batches, mean output {r['mean_output_tokens']:.1f} tokens. "
        f"Created {r['created']}.",
        "",
        "| part | seconds | share of the run loop |",
        "|---|---|---|",
        f"| run loop (wall) | {r['run_loop_s']:.3f} | 100% |",
        f"| model forward passes (measured prefill + decode) | {r['model_s']:.3f} | {pct(r['model_s'] / r['run_loop_s'] if r['run_loop_s'] else None)} |",
        f"| backend outside forward passes (prep, tokenise, detokenise) | {r['backend_overhead_s']:.3f} | {pct(r['backend_overhead_share'])} |",
        f"| runner (prompts, token counts, policy, scoring, estimates, records) | {r['runner_overhead_s']:.3f} | {pct(r['runner_overhead_share'])} |",
        "",
        f"Overhead (everything but forward passes): **{pct(r['overhead_share'])}** (goal < 3%: "
        f"{'met' if r['goal_overhead_lt_3pct'] else 'not met'}). Outside the loop: data load {r['not_in_the_loop_s']['data_load']} s, "
        f"model load {r['not_in_the_loop_s']['model_load']} s.",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
