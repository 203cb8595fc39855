"""A random policy over the ``full`` knob space (60 configurations), end to end through
``harness run`` as a user runs it, on the fast engine against the eager engine, at batch 1 and
batch 32: wall time of the whole command (process start, model build, warm-up and compilation
included), the run's own timing breakdown, and samples per second.

    python benchmarks/policy_gpu.py                        # GPU: random:molmoe-1b, 3 tasks x 67 samples
    python benchmarks/policy_gpu.py --model reference --device cpu --limit 2 --batches 1 --engines eager,fast   # dry run

Prints a table and writes policy_gpu.json / .md (``--tag T``: policy_gpu_T.*) to $OUT (if set) or
benchmarks/results/; the batched runs' per-batch error by rows in the batch, and the command's
warnings (a torch recompile limit hit included). ``--torch-recompile-limits 0,8`` also runs each command under
torch's default limit instead of the engine's (the before of docs/engine.md).
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


# the harness command under torch's recompile limit of N versions per function instead of the engine's
# (harness.engine.compile_limits.recompile_limit): the "before" of docs/engine.md's versions of the compiled step
_LIMITED = ("import sys; import harness.engine.compile_limits as s; n = int(sys.argv.pop(1)); s.recompile_limit = lambda attention: n; "
            "from harness.cli import main; main(sys.argv[1:])")


def run_one(args, engine: str, batch: int, folder: Path, limit: int = 0) -> dict:
    launcher = [sys.executable, "-c", _LIMITED, str(limit)] if limit else [sys.executable, "-m", "harness"]
    cmd = launcher + ["run", "--task", args.tasks, "--model", args.model, "--policy", "random",
           "--knob-space", args.knob_space, "--limit", str(args.limit), "--batch-size", str(batch), "--engine", engine,
           "--device", args.device, "--estimator", args.estimator, "--seed", str(args.seed), "--quiet", "--output", str(folder)]
    if args.check_batch1 is not None:
        cmd += ["--check-batch1", str(args.check_batch1)]
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
    row = {"engine": engine if not limit else f"{engine}, recompile limit {limit}", "batch": batch, "wall_s": round(wall, 2),
           "rc": proc.returncode}
    # what the command warned about (a recompile limit hit means later shapes ran uncompiled: docs/engine.md)
    warned = list(dict.fromkeys(ln.strip()[:300] for ln in proc.stderr.splitlines() if ln.startswith("warning:")))
    row.update(warnings=warned[:10], recompile_limit_hits=proc.stderr.count("hit config.recompile_limit"))
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
    row.update(latency_account(folder, wall, batch))
    return row


def latency_account(folder: Path, wall: float, batch: int) -> dict:
    """What a user sees of the latency figures: the estimator's per-batch (or per-sample) error
    against the single measurements of this run, the batch-1 check, warm-up and host shares."""
    errs, first, rest, checks, loop, model_ms, warm_s, notes = [], [], [], [], 0.0, 0.0, 0.0, []
    per_batch = []  # each batch's estimate beside its measurement, to see where an error lies
    for summary in sorted(folder.rglob("summary.json")):
        s = json.loads(summary.read_text())
        t = s.get("timing") or {}
        loop += float(t.get("loop_s") or 0)
        model_ms += float(t.get("model_ms") or 0)
        warm_s += float(t.get("warmup_s") or 0)
        notes += [n for n in s.get("notes") or [] if "estimat" in n or "fit" in n]
        if s.get("batch1_check"):
            checks.append({k: s["batch1_check"].get(k) for k in ("n", "mape_total", "within_10pct", "bias", "mape_prefill", "mape_decode")})
            rows_file = summary.parent / "batch1_check.jsonl"
            if rows_file.is_file():  # each checked sample, kept for the record (the run folders are temporary)
                checks[-1]["rows"] = [json.loads(x) for x in rows_file.read_text().splitlines() if x.strip()]
        seen = set()
        lines = [json.loads(x) for x in (summary.parent / "samples.jsonl").read_text().splitlines() if x.strip()]
        by_batch: dict = {}
        for ln in lines:
            by_batch.setdefault(ln.get("batch_id"), []).append(ln)
        for i, ln in enumerate(lines):
            m, e = ln.get("measured"), ln.get("estimated")
            if ln.get("error") or not m:
                continue
            if batch == 1:
                (first if not first and i == 0 else rest).append(m["total_ms"])
            if ln.get("batch_id") in seen or not e:
                continue
            seen.add(ln.get("batch_id"))
            errs.append((e["total_ms"] - m["total_ms"]) / m["total_ms"])
            if batch > 1:
                mates = by_batch[ln.get("batch_id")]
                per_batch.append({"task": s.get("task"), "config": ln.get("config"), "rows": len(mates),
                                  "input_tokens_max": max(int(x.get("input_tokens") or 0) for x in mates),
                                  "output_tokens_max": max(int(x.get("output_tokens") or 0) for x in mates),
                                  "measured": {k: round(float(m[k]), 3) for k in ("prefill_ms", "decode_ms", "total_ms")},
                                  "estimated": {k: round(float(e[k]), 3) for k in ("prefill_ms", "decode_ms", "total_ms") if e.get(k) is not None}})
    import numpy as np

    a = np.abs(np.asarray(errs)) if errs else None
    return {"estimate_error": None if a is None else {
                "per": "batch" if batch > 1 else "sample", "n": int(a.size), "mape_total": round(float(a.mean()), 4),
                "within_10pct": round(float((a <= 0.10).mean()), 4), "within_15pct": round(float((a <= 0.15).mean()), 4),
                "bias": round(float(np.mean(errs)), 4)},
            "batch1_check": checks, "warmup_share_of_wall": round(warm_s / wall, 4) if wall else None,
            "overhead_share": round(max(loop - model_ms / 1000, 0) / loop, 4) if loop else None,
            "first_sample_ms": round(first[0], 3) if first else None,
            "rest_median_ms": round(float(np.median(rest)), 3) if rest else None, "estimator_notes": notes[:3],
            "per_batch": per_batch}


ROW_GROUPS = ((1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64))


def by_rows(rows: list[dict]) -> list[str]:
    """The batched runs' per-batch estimate error by the batch's row count (a batch of one in a
    batched run is where a slow shape shows first), with the decode part's bias."""
    out = []
    for r in rows:
        pb = r.get("per_batch") or []
        if not pb:
            continue
        out += ["", f"{r['engine']}, batch {r['batch']}: per-batch estimate error by rows in the batch", "",
                "| rows | batches | MAPE total | bias total | bias decode | measured decode ms (median) |", "|---|---|---|---|---|---|"]
        for lo, hi in ROW_GROUPS:
            grp = [b for b in pb if lo <= b["rows"] <= hi and b["measured"]["total_ms"] > 0]
            if not grp:
                continue
            tot = [(b["estimated"]["total_ms"] - b["measured"]["total_ms"]) / b["measured"]["total_ms"] for b in grp
                   if "total_ms" in b["estimated"]]
            dec = [(b["estimated"]["decode_ms"] - b["measured"]["decode_ms"]) / b["measured"]["decode_ms"] for b in grp
                   if "decode_ms" in b["estimated"] and b["measured"]["decode_ms"] > 0]
            med = sorted(b["measured"]["decode_ms"] for b in grp)[len(grp) // 2]
            label = str(lo) if lo == hi else f"{lo}-{hi}"
            mape = sum(abs(x) for x in tot) / len(tot) if tot else None
            out.append(f"| {label} | {len(grp)} | {_pct(mape)} | {_pct(sum(tot) / len(tot) if tot else None, 1, '+')} | "
                       f"{_pct(sum(dec) / len(dec) if dec else None, 1, '+')} | {med} |")
    return out


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
    ap.add_argument("--estimator", default="builtin", help="what the runs estimate with (builtin: the fit a new user gets)")
    ap.add_argument("--check-batch1", type=int, default=None, help="--check-batch1 of the batched runs (default: the harness's)")
    ap.add_argument("--timeout-s", type=float, default=600, help="stop one run after this long (recorded as a lower bound)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    ap.add_argument("--tag", default="", help="results file name suffix: policy_gpu_TAG.json / .md")
    ap.add_argument("--torch-recompile-limits", default="0",
                    help="each run under each of these recompile limits (0: the engine's; 8: torch's default, what runs had before)")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in [int(b) for b in args.batches.split(",")]:
            for engine, limit in [(e, int(x)) for e in args.engines.split(",") for x in args.torch_recompile_limits.split(",")]:
                row = run_one(args, engine, batch, Path(tmp) / f"{engine}-b{batch}-l{limit}", limit)
                rows.append(row)
                print(json.dumps(row), flush=True)
    import torch

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    env = {"device": device, "torch": torch.__version__, "model": args.model, "tasks": args.tasks, "limit_per_task": args.limit,
           "knob_space": args.knob_space, "policy": "random",
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Random policy over the `{args.knob_space}` knob space, end to end ({device}, {args.model})", "",
          f"`harness run --task {args.tasks} --policy random --knob-space {args.knob_space} --limit {args.limit} "
          "--batch-size B --engine E --estimator " + args.estimator + "`; wall = the whole command (start, model build, warm-up and "
          "compilation included); \"recompile limit N\": the command under torch's limit of N versions per compiled function "
          "instead of the engine's.", "",
          "| engine | batch | samples | failed | configurations | wall s | samples/s | model load s | run timing | warm-up keys / calls | note |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("timing") or {}
        md.append(f"| {r['engine']} | {r['batch']} | {r.get('n', '')} | {r.get('failed', '')} | {r.get('configurations', '')} | "
                  f"{r['wall_s'] if r['wall_s'] is not None else '> ' + str(r.get('wall_s_lower_bound'))} | {r.get('samples_per_s', '')} | {t.get('model_load_s', '')} | "
                  f"{json.dumps({k: v for k, v in t.items() if k != 'model_load_s'})} | "
                  f"{'{keys} / {calls}'.format(**r['warmup']) if r.get('warmup') else ''} | {r.get('error', '')} |")
    md += ["", "| engine | batch | estimate error (per) | MAPE | within 10% | within 15% | bias | batch-1 check (n, MAPE, within 10%) | warm-up share of wall | overhead share of loop | first sample / median ms |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r.get("estimate_error") or {}
        chk = "; ".join(f"{c['n']}, {100 * c['mape_total']:.1f}%, {100 * c['within_10pct']:.0f}%" for c in r.get("batch1_check") or []
                        if c.get("mape_total") is not None) or "-"
        md.append(f"| {r['engine']} | {r['batch']} | {e.get('per', '-')} n={e.get('n', '-')} | {_pct(e.get('mape_total'))} | "
                  f"{_pct(e.get('within_10pct'), 0)} | {_pct(e.get('within_15pct'), 0)} | {_pct(e.get('bias'), 1, '+')} | {chk} | "
                  f"{_pct(r.get('warmup_share_of_wall'))} | {_pct(r.get('overhead_share'))} | "
                  f"{r.get('first_sample_ms') or '-'} / {r.get('rest_median_ms') or '-'} |")
    md += by_rows(rows)
    for r in rows:
        if r.get("warnings") or r.get("recompile_limit_hits"):
            md += ["", f"{r['engine']}, batch {r['batch']}: torch's recompile limit hit {r.get('recompile_limit_hits', 0)} times; "
                   "warnings: " + ("; ".join(f"`{w}`" for w in r.get("warnings") or []) or "none")]
    name = f"policy_gpu_{args.tag}" if args.tag else "policy_gpu"
    (out / f"{name}.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
