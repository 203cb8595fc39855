"""Where a batch's host preparation goes: each part of what the runner does on the host before a
batch's first model kernel, timed apart on the main command's samples.

    python benchmarks/host_prep.py                                   # GPU: random:molmoe-1b, scienceqa, 14,6
    python benchmarks/host_prep.py --model reference --device cpu --limit 8   # dry run

Per sample, milliseconds (median and mean over the samples, after one untimed pass): the task's
prompt; ``count_tokens`` at every tier (what the policy input needs); the backend's host-only
``prepare_detached`` (tokens, image preprocessing, padding, in host memory); the copy to the device
(``adopt``, synchronised); and the whole ``prepared`` call as a run without ``--host-overlap`` makes
it. ``--threads 0,1,4`` repeats the whole timing at each torch intra-op thread count (0: as the
process starts, what a run uses), since image preprocessing runs torch CPU ops. Prints a table and
writes host_prep.json / .md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, load, resolve_setup  # noqa: E402  (also puts the repo on sys.path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--task", default="scienceqa")
    ap.add_argument("--knobs", default="14,6")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", default="0", help="torch intra-op thread counts to time at (0: the default)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    import harness.tasks as tasks
    from harness.knobs import Knobs
    from harness.latency.measure import synchronize
    from harness.tasks.data import load_samples
    from harness.types import GenRequest

    dev, dt, impl = resolve_setup(args.device, "auto", None)
    info = describe(args.model)
    task = tasks.get_task(args.task)
    data = load_samples(task, "bundled", args.limit, 0)
    backend = load(args.model, device=dev, dtype=dt, experts_impl=impl)
    knobs = Knobs.parse(args.knobs)
    tier = backend.resolve_tier(knobs.tier)
    default_threads = torch.get_num_threads()
    samples = [s for s in data.samples if not s.error]
    rows = []
    for threads in [int(x) for x in args.threads.split(",") if x.strip()]:
        torch.set_num_threads(threads or default_threads)
        parts = {k: [] for k in ("prompt", "count_tokens_all_tiers", "prepare_detached", "copy_to_device", "prepared_whole")}

        def timed(name, fn, record):
            synchronize(dev)
            t0 = time.perf_counter_ns()
            out = fn()
            synchronize(dev)
            if record:
                parts[name].append((time.perf_counter_ns() - t0) / 1e6)
            return out

        for rep in range(2):  # the first pass untimed: imports, allocator growth, first-use caches
            for s in samples:
                prompt = timed("prompt", lambda: task.prompt(s), rep)
                req = GenRequest(prompt=prompt, image=s.image, sample_id=str(s.id))
                timed("count_tokens_all_tiers", lambda: [backend.count_tokens(req, t) for t in (info.tiers or [tier])], rep)
                host = timed("prepare_detached", lambda: backend.prepare_detached([req], tier), rep)
                timed("copy_to_device", lambda: backend.adopt([req], tier, host), rep)
                backend._last_prepared = None
                timed("prepared_whole", lambda: backend.prepared([req], tier), rep)
        rows += [{"threads": torch.get_num_threads(), "part": k, "n": len(v), "median_ms": round(float(np.median(v)), 3),
                  "mean_ms": round(float(np.mean(v)), 3), "max_ms": round(float(np.max(v)), 3)} for k, v in parts.items() if v]
    torch.set_num_threads(default_threads)
    px = backend.prepared([req], tier)[0].extras
    shapes = {k: [list(v.shape), str(v.dtype)] for k, v in px.items() if hasattr(v, "shape")}
    device = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
    env = {"device": device, "model": args.model, "task": args.task, "knobs": args.knobs, "tier": tier, "samples": len(samples),
           "torch_threads": default_threads, "cpu_count": os.cpu_count(), "image_inputs": shapes,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_prep.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    md = [f"# Host preparation per sample: {args.model}, {args.task}, {args.knobs} (tier {tier}), {device}", "",
          f"{len(samples)} samples, batch 1, one untimed pass first; image inputs {shapes}; torch threads "
          f"{env['torch_threads']} of {env['cpu_count']} CPUs by default.", "",
          "| torch threads | part | median ms | mean ms | max ms |", "|---|---|---|---|---|"]
    md += [f"| {r['threads']} | {r['part']} | {r['median_ms']} | {r['mean_ms']} | {r['max_ms']} |" for r in rows]
    (out / "host_prep.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
