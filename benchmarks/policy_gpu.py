"""A random policy over the ``full`` knob space (60 configurations), end to end through
``harness run`` as a user runs it, on the fast engine against the eager engine, at batch 1 and
batch 32: wall time of the whole command (process start, model build, warm-up and compilation
included), the run's own timing breakdown, and samples per second.

    python benchmarks/policy_gpu.py                        # GPU: random:molmoe-1b, 3 tasks x 67 samples
    python benchmarks/policy_gpu.py --model reference --device cpu --limit 2 --batches 1 --engines eager,fast   # dry run

Prints a table and writes policy_gpu.json / .md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(args, engine: str, batch: int, folder: Path) -> dict:
    cmd = [sys.executable, "-m", "harness", "run", "--task", args.tasks, "--model", args.model, "--policy", "random",
           "--knob-space", args.knob_space, "--limit", str(args.limit), "--batch-size", str(batch), "--engine", engine,
           "--device", args.device, "--estimator", "none", "--seed", str(args.seed), "--quiet", "--output", str(folder)]
    if args.max_new_tokens:
        cmd += ["--max-new-tokens", str(args.max_new_tokens)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              timeout=args.timeout_s)
    except subprocess.TimeoutExpired:  # recorded as a lower bound, the next run still goes
        return {"engine": engine, "batch": batch, "wall_s": None, "rc": None, "wall_s_lower_bound": args.timeout_s,
                "error": f"not finished within {args.timeout_s:.0f} s"}
    wall = time.perf_counter() - t0
    row = {"engine": engine, "batch": batch, "wall_s": round(wall, 2), "rc": proc.returncode}
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1][:300] if (proc.stderr or proc.stdout) else "failed"
        print(proc.stderr[-3000:], file=sys.stderr)
        return row
    n, failed, timing, engines, configs = 0, 0, {}, set(), set()
    warm = {"keys": 0, "calls": 0, "unsettled": 0}  # what the warm-up seconds bought (summary.json's account)
    for summary in sorted(folder.rglob("summary.json")):
        s = json.loads(summary.read_text())
        for k in warm:
            warm[k] += int(((s.get("timing") or {}).get("warmup") or {}).get(k) or 0)
        n += int(s.get("n") or 0)
        failed += int(s.get("n_failed") or 0)
        engines.add(s.get("engine"))
        configs.update((s.get("knobs_histogram") or {}).keys())
        for k, v in (s.get("timing") or {}).items():
            if isinstance(v, (int, float)) and k.endswith("_s"):
                timing[k] = round(timing.get(k, 0.0) + float(v), 3)
    row.update(n=n, failed=failed, samples_per_s=round(n / wall, 2) if wall else None, engine_recorded=sorted(map(str, engines)),
               configurations=len(configs), timing=timing, warmup=warm)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--tasks", default="scienceqa,textvqa,vqav2")
    ap.add_argument("--limit", type=int, default=67, help="samples per task (3 x 67 = 201)")
    ap.add_argument("--knob-space", default="full")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--engines", default="fast,eager")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=600, help="stop one run after this long (recorded as a lower bound)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in [int(b) for b in args.batches.split(",")]:
            for engine in args.engines.split(","):
                row = run_one(args, engine, batch, Path(tmp) / f"{engine}-b{batch}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    import torch

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    env = {"device": device, "torch": torch.__version__, "model": args.model, "tasks": args.tasks, "limit_per_task": args.limit,
           "knob_space": args.knob_space, "policy": "random", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "policy_gpu.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    md = [f"# Random policy over the `{args.knob_space}` knob space, end to end ({device}, {args.model})", "",
          f"`harness run --task {args.tasks} --policy random --knob-space {args.knob_space} --limit {args.limit} "
          "--batch-size B --engine E --estimator none`; wall = the whole command (start, model build, warm-up and "
          "compilation included).", "",
          "| engine | batch | samples | failed | configurations | wall s | samples/s | model load s | run timing | warm-up keys / calls | note |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("timing") or {}
        md.append(f"| {r['engine']} | {r['batch']} | {r.get('n', '')} | {r.get('failed', '')} | {r.get('configurations', '')} | "
                  f"{r['wall_s'] if r['wall_s'] is not None else '> ' + str(r.get('wall_s_lower_bound'))} | {r.get('samples_per_s', '')} | {t.get('model_load_s', '')} | "
                  f"{json.dumps({k: v for k, v in t.items() if k != 'model_load_s'})} | "
                  f"{'{keys} / {calls}'.format(**r['warmup']) if r.get('warmup') else ''} | {r.get('error', '')} |")
    (out / "policy_gpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
