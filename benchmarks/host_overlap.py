"""The host beside the device: the main command with and without ``--host-overlap`` (the next
batch prepared and the last one recorded on a worker thread while the device runs), as a user runs
it, on the same samples.

    python benchmarks/host_overlap.py                                    # GPU: random:molmoe-1b, scienceqa, 14,6
    python benchmarks/host_overlap.py --model reference --device cpu --limit 8 --repeats 1   # dry run

Runs ``harness run --task T --knobs K --host-overlap off`` and ``... on`` alternately (``--repeats``
pairs, off first), each a whole command, and reports per run the loop's ``overhead_share`` (goal at
batch 1: at most 15%), wall time and samples/s; and per pair whether a measurement contains the same
with the worker as without: the same samples' measured total latency, paired, as the mean of the
per-sample ratio on/off and the median per-sample difference, beside the same figures for two
runs without the worker (the run-to-run noise). Prints a table and writes host_overlap.json / .md to
$OUT (if set) or benchmarks/results/.
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import pct as _pct  # noqa: E402


def run_one(args, mode: str, folder: Path) -> dict:
    cmd = [sys.executable, "-m", "harness", "run", "--task", args.task, "--knobs", args.knobs, "--model", args.model,
           "--device", args.device, "--batch-size", str(args.batch_size), "--host-overlap", mode, "--quiet",
           "--output", str(folder)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    row = {"mode": mode, "wall_s": round(wall, 2), "rc": proc.returncode}
    if proc.returncode != 0:
        row["error"] = ((proc.stderr or proc.stdout).strip().splitlines() or ["failed"])[-1][:300]
        print(proc.stderr[-3000:], file=sys.stderr)
        return row
    s = json.loads((folder / "summary.json").read_text())
    t = s.get("timing") or {}
    lines = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines() if x.strip()]
    host = [ln["host_ms"] for ln in lines if ln.get("host_ms") is not None]
    row.update(n=s.get("n"), failed=s.get("n_failed"), overlap=t.get("overlap"), loop_s=t.get("loop_s"),
               model_s=round(float(t.get("model_ms") or 0) / 1000, 3), overhead_share=t.get("overhead_share"),
               warmup_s=t.get("warmup_s"), samples_per_s=round(float(s.get("n") or 0) / wall, 2),
               host_ms_mean=round(sum(host) / len(host), 3) if host else None,
               total_ms={ln["id"]: ln["measured"]["total_ms"] for ln in lines if ln.get("measured") and not ln.get("error")},
               predictions={ln["id"]: ln.get("prediction") for ln in lines})
    return row


def paired(a: dict, b: dict) -> dict:
    """The same samples' measured total latency in run ``b`` against run ``a``."""
    import numpy as np

    ids = sorted(set(a["total_ms"]) & set(b["total_ms"]))
    r = np.asarray([b["total_ms"][i] / a["total_ms"][i] for i in ids])
    return {"n": len(ids), "mean_ratio": round(float(r.mean()), 4), "median_abs_diff": round(float(np.median(np.abs(r - 1))), 4),
            "p90_abs_diff": round(float(np.quantile(np.abs(r - 1), 0.9)), 4),
            "same_predictions": sum(a["predictions"].get(i) == b["predictions"].get(i) for i in ids)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--task", default="scienceqa")
    ap.add_argument("--knobs", default="14,6")
    ap.add_argument("--limit", type=int, default=None, help="default: the task's bundled samples, as the main command")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=2, help="(off, on) pairs")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for mode in ("off", "on"):
                row = run_one(args, mode, Path(tmp) / f"{mode}-{rep}")
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("total_ms", "predictions")}), flush=True)
    ok = [r for r in rows if r.get("rc") == 0]
    offs, ons = [r for r in ok if r["mode"] == "off"], [r for r in ok if r["mode"] == "on"]
    pairs = [{"runs": f"on {i} / off {i}", **paired(a, b)} for i, (a, b) in enumerate(zip(offs, ons))]
    pairs += [{"runs": f"off {i + 1} / off {i} (noise)", **paired(a, b)} for i, (a, b) in enumerate(zip(offs, offs[1:]))]
    pairs += [{"runs": f"on {i + 1} / on {i} (noise)", **paired(a, b)} for i, (a, b) in enumerate(zip(ons, ons[1:]))]
    import torch

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    env = {"device": device, "torch": torch.__version__, "model": args.model, "task": args.task, "knobs": args.knobs,
           "batch_size": args.batch_size, "limit": args.limit, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_overlap.json").write_text(json.dumps({"env": env, "runs": [{k: v for k, v in r.items() if k != "predictions"} for r in rows],
                                                       "pairs": pairs}, indent=1))
    cmd = f"harness run --task {args.task} --knobs {args.knobs} --model {args.model} --batch-size {args.batch_size}"
    md = [f"# The host beside the device: `{cmd}` with and without `--host-overlap` ({device})", "",
          "Each row is one whole command; overhead share = (run loop - measured prefill and decode) / run loop (goal at "
          "batch 1: at most 15%).", "",
          "| run | overlap | samples | failed | wall s | samples/s | loop s | model s | overhead share | host_ms mean | warm-up s | note |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        md.append(f"| {i} | {r['mode']} | {r.get('n', '')} | {r.get('failed', '')} | {r['wall_s']} | {r.get('samples_per_s', '')} | "
                  f"{r.get('loop_s', '')} | {r.get('model_s', '')} | {_pct(r.get('overhead_share'))} | {r.get('host_ms_mean', '')} | "
                  f"{r.get('warmup_s', '')} | {r.get('error', '')} |")
    md += ["", "Same samples, measured total latency (prefill + decode) of the later run over the earlier (goal: with the worker "
           "within 2% of without):", "",
           "| runs | samples | mean ratio | median abs diff | p90 abs diff | same predictions |", "|---|---|---|---|---|---|"]
    for p in pairs:
        md.append(f"| {p['runs']} | {p['n']} | {p['mean_ratio']} | {_pct(p['median_abs_diff'], 2)} | {_pct(p['p90_abs_diff'], 2)} | "
                  f"{p['same_predictions']} of {p['n']} |")
    (out / "host_overlap.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
