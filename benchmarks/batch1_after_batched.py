"""Does a process that has run batched calls still time batch-1 calls as a batch-1 run does?

``--check-batch1`` measures samples alone at the end of a batched run. On an H100 its single
measurements' decode came out about twice the batch-1 fit (which a batch-1 run itself matches to
1.4%), with prefill within 3%. This benchmark separates the suspects in one process, on the same
samples and configuration, phase by phase:

- ``b1 first``: the samples alone, as a batch-1 run does (each shape warmed before its timed call);
- ``batched``: the same samples together at ``--batch-size`` (two calls);
- ``b1 after batched``: the samples alone again;
- ``b1 gc frozen``: again after ``gc.freeze()`` (what survives so far is never traversed again);
- ``b1 gc off``: again with the garbage collector disabled.

Per phase: median prefill ms, decode ms per step, the wall time of ``generate`` and of the host
preparation (``prepared``), and the collections the garbage collector ran (count, ms) per generation.

    python benchmarks/batch1_after_batched.py                       # GPU: random:molmoe-1b
    python benchmarks/batch1_after_batched.py --model reference --device cpu --samples 2 --batch-size 4

Prints a table and writes batch1_after_batched.json / .md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load, resolve_setup, write_report  # noqa: E402  (also puts the repo on sys.path)


class GcClock:
    """Collections and their time per generation, from ``gc.callbacks``."""

    def __init__(self):
        self.t0 = 0.0
        self.by: dict[int, list] = {}
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if phase == "start":
            self.t0 = time.perf_counter()
        else:
            n = self.by.setdefault(info["generation"], [0, 0.0])
            n[0] += 1
            n[1] += (time.perf_counter() - self.t0) * 1e3

    def take(self) -> dict:
        out = {f"gen{g}": [n, round(ms, 1)] for g, (n, ms) in sorted(self.by.items())}
        self.by = {}
        return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--task", default="scienceqa")
    ap.add_argument("--knobs", default="12,2,low")
    ap.add_argument("--samples", type=int, default=8, help="samples timed alone per phase")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sequence", default="b1,batched,b1,gc-frozen,gc-off",
                    help="phases in order: b1 (the samples alone), batched, gc-frozen / gc-off (b1 with the collector "
                         "frozen / off), reserve (Backend.reserve for the batched call, as a run does before its first "
                         "batch; untimed)")
    ap.add_argument("--tag", default="", help="suffix of the results files")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    import torch

    import harness.tasks as tasks
    from harness.knobs import Knobs
    from harness.latency.measure import synchronize
    from harness.tasks.data import load_samples
    from harness.types import GenRequest

    dev, dt, impl = resolve_setup(args.device, "auto", None)
    task = tasks.get_task(args.task)
    data = load_samples(task, "bundled", max(args.samples, args.batch_size), 0)
    backend = load(args.model, device=dev, dtype=dt, experts_impl=impl)
    knobs = backend.apply_knobs(Knobs.parse(args.knobs))
    tier = backend.resolve_tier(knobs.tier)
    reqs = [GenRequest(prompt=task.prompt(s), image=s.image, sample_id=str(s.id)) for s in data.samples if not s.error]
    alone, together = reqs[: args.samples], reqs[: args.batch_size]
    clock = GcClock()

    def call(batch):
        synchronize(dev)
        t0 = time.perf_counter()
        backend._last_prepared = None
        backend.prepared(batch, tier)
        synchronize(dev)
        t1 = time.perf_counter()
        out = backend.generate(batch, args.max_new_tokens, tier)
        t2 = time.perf_counter()
        t = out[0].timings
        steps = max(1, max(o.output_tokens for o in out) - 1)
        return dict(prepare_ms=(t1 - t0) * 1e3, generate_ms=(t2 - t1) * 1e3, prefill_ms=t.prefill_ms, decode_step_ms=t.decode_ms / steps)

    def phase(name, batches):
        for b in batches:  # warm each shape first, as the runner does (outside the timed call)
            backend.generate(b, args.max_new_tokens, tier)
        clock.take()
        rows = [call(b) for b in batches]
        return dict(phase=name, calls=len(rows), gc=clock.take(),
                    **{k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]})

    singles = [[r] for r in alone]
    phases, seen = [], set()
    for name in [x.strip() for x in args.sequence.split(",") if x.strip()]:
        if name == "reserve":
            tokens = max(sum(backend.count_tokens(r, tier)) for r in together)
            backend.reserve(len(together), tokens, args.max_new_tokens)
            phases.append(dict(phase=f"reserve ({len(together)} x {tokens} + {args.max_new_tokens})", calls=0, gc={}))
        elif name == "b1":
            phases.append(phase("b1 after batched" if "batched" in seen else "b1 first", singles))
        elif name == "batched":
            phases.append(phase(f"batched ({len(together)})", [together, together]))
        elif name == "gc-frozen":
            gc.freeze()
            try:
                phases.append(phase("b1 gc frozen", singles))
            finally:
                gc.unfreeze()
        elif name == "gc-off":
            gc.disable()
            try:
                phases.append(phase("b1 gc off", singles))
            finally:
                gc.enable()
        else:
            raise SystemExit(f"unknown phase '{name}'; use b1, batched, reserve, gc-frozen or gc-off")
        seen.add(name)
    device = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
    env = {"device": device, "model": args.model, "task": args.task, "knobs": args.knobs, "tier": tier, "samples": len(alone), "sequence": args.sequence,
           "batch_size": len(together), "max_new_tokens": args.max_new_tokens, "python": sys.version.split()[0],
           "torch": torch.__version__, "gc_objects": len(gc.get_objects()), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    md = [f"# Batch-1 calls before and after batched ones, one process ({device}, {args.model}, {args.knobs})", "",
          f"Phases `{args.sequence}`; {len(alone)} samples alone, {len(together)} together; medians per call, each shape warmed first; "
          f"{env['gc_objects']} objects tracked at the end (python {env['python']}, torch {env['torch']}).", "",
          "| phase | calls | prefill ms | decode ms/step | generate ms | host prepare ms | gc (count, ms) per generation |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {p['phase']} | {p['calls']} | {p['prefill_ms']:.2f} | {p['decode_step_ms']:.3f} | {p['generate_ms']:.1f} | "
           f"{p['prepare_ms']:.2f} | {p['gc'] or '-'} |" if p["calls"] else f"| {p['phase']} | 0 | | | | | |" for p in phases]
    write_report(args.out, "batch1_after_batched" + (f"_{args.tag}" if args.tag else ""), {"env": env, "phases": phases}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
