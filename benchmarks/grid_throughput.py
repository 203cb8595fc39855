"""Throughput of a whole knob grid, end to end, beside the compute roofline of the same work.

    python benchmarks/grid_throughput.py                        # GPU: random:molmoe-1b, reference-full, scienceqa, batch 64
    python benchmarks/grid_throughput.py --model reference --device cpu --limit 4 --grid ci --batch-size 4   # smoke run

Runs ``harness sweep --grid GRID --task TASK --batch-size B --engine fast --estimator none`` as a
user runs it (a subprocess, timed from the outside: process start, imports, model build, warm-up,
every run directory written), then reads what the sweep wrote:

- **samples/s** of the whole command, and without warm-up (the wall time less the warm-up seconds
  that each run's ``summary.json`` timing block holds), beside the run loops' and the model's own;
- **the compute roofline of the same work**: FLOPs of the vision tower and the projector (counted
  with ``torch.utils.flop_counter`` on one image per tier, the model built on the ``meta`` device,
  scaled by each sample's vision tokens), and of the language model's prefill and decode
  (``harness.latency.roofline.lm_flops`` from the model's parameter counts: each configuration's
  active blocks and top_k, each sample's measured text, vision and output tokens from the run's
  sample lines), over a matmul rate measured here (a large ``torch.matmul`` in the run's dtype:
  bfloat16 on CUDA, float32 on the CPU). The work counted is each sample's own: no padding, no
  rows that decode on after their end.

The goal (issue 30): at least ``--goal-samples-per-s`` (100) samples/s, or within
``--goal-ratio`` (2x) of the roofline. Prints the report and writes
``grid_throughput_<model>__<device>[__<grid>][__b<batch>].json`` / ``.md`` to ``--out``
($OUT when set, else benchmarks/results/); the grid and batch parts only when they are not
reference-full and 64.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, ROOT, cuda_median_ms, write_report  # noqa: E402  (also puts the repo on sys.path)

PARTS = ("vision", "projector", "lm_prefill", "lm_decode")


def sweep_command(args, folder: Path) -> list[str]:
    cmd = [sys.executable, "-m", "harness", "sweep", "--grid", args.grid, "--task", args.task, "--model", args.model,
           "--data", args.data, "--batch-size", str(args.batch_size), "--device", args.device, "--dtype", args.dtype,
           "--engine", args.engine, "--estimator", args.estimator, "--seed", str(args.seed), "--quiet",
           "--output", str(folder)]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    if args.max_new_tokens is not None:
        cmd += ["--max-new-tokens", str(args.max_new_tokens)]
    return cmd


def run_sweep(args, folder: Path) -> tuple[float, list[str]]:
    """Run the sweep as a subprocess; -> (wall seconds, the command). Fails loudly (its stderr) on error."""
    cmd = sweep_command(args, folder)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout_s,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        raise SystemExit(f"the sweep did not finish within {args.timeout_s:.0f} s: {shlex.join(cmd)}")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write((proc.stderr or proc.stdout)[-4000:])
        raise SystemExit(f"the sweep failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return wall, cmd


def read_runs(folder: Path) -> list[dict]:
    """One entry per run directory of the sweep: its summary and sample lines."""
    runs = []
    for summary in sorted(folder.rglob("summary.json")):
        s = json.loads(summary.read_text())
        lines = [json.loads(x) for x in (summary.parent / "samples.jsonl").read_text().splitlines() if x.strip()]
        runs.append({"summary": s, "lines": [ln for ln in lines if not ln.get("error")], "failed": sum(1 for ln in lines if ln.get("error"))})
    if not runs:
        raise SystemExit(f"the sweep wrote no summary.json under {folder}")
    return runs


def counting_model(model: str, dtype: str):
    """The model built on the ``meta`` device (shapes only: nothing allocated, nothing computed)
    with the eager engine, for counting parameters and FLOPs."""
    from harness import backends

    return backends.load(model, device="meta", dtype=dtype, engine="eager")


def decode_steps(line: dict) -> int:
    """One-token steps the sample needed: its tokens after the first (which the prefill gives), plus
    the step that produced its end-of-sequence token when it stopped there."""
    generated = int(line.get("output_tokens") or 0) + (1 if line.get("finish_reason") == "eos" else 0)
    return max(generated - 1, 0)


def work_flops(backend, runs: list[dict], image) -> tuple[list[dict], dict]:
    """FLOPs per part for every run (configuration), from its sample lines; and the per-image vision
    counts per tier they used."""
    from harness.latency.roofline import lm_flops, model_counts, n_experts_of, vision_flops
    from harness.types import GenRequest

    info = backend.info
    counts = model_counts(backend, n_experts_of(backend, info))
    if counts is None:
        raise SystemExit(f"{info.name}: no parameter counts (the backend exposes no torch modules)")
    k0 = int(info.default_top_k)
    per_tier = {}
    out = []
    for run in runs:
        s = run["summary"]
        knobs = s["knobs"]
        tier = knobs.get("tier")
        if tier not in per_tier and image is not None:
            per_tier[tier] = vision_flops(backend, GenRequest("?", image), tier)
        vis = per_tier.get(tier)
        f = dict.fromkeys(PARTS, 0.0)
        toks = {"text": 0, "vision": 0, "output": 0, "decode_steps": 0}
        for ln in run["lines"]:
            v, t = int(ln.get("vision_tokens") or 0), int(ln.get("text_tokens") or 0)
            steps = decode_steps(ln)
            if v and vis:
                scale = v / vis["vision_tokens"]  # exact where a tier's images cost the same, a proxy otherwise
                f["vision"] += vis["vision"] * scale
                f["projector"] += vis["projector"] * scale
            lm = lm_flops(counts, knobs["num_blocks"], knobs["top_k"], k0, v + t, steps)
            f["lm_prefill"] += lm["prefill"]
            f["lm_decode"] += lm["decode"]
            toks["text"] += t
            toks["vision"] += v
            toks["output"] += int(ln.get("output_tokens") or 0)
            toks["decode_steps"] += steps
        out.append({"flops": f, "tokens": toks})
    return out, {"counts": counts, "vision_per_image": per_tier}


def matmul_rate(device: str, dtype_name: str) -> dict:
    """Measured matmul throughput on ``device``: an n x n product in the run's dtype (bfloat16 on
    CUDA, float32 on the CPU), n = 8192 on CUDA (median of 20 after 5 warm-up, CUDA events) and 1024
    on the CPU (best of 5)."""
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    dtype = getattr(torch, dtype_name) if cuda else torch.float32
    n = 8192 if cuda else 1024
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    if cuda:
        ms = cuda_median_ms(lambda: torch.matmul(a, b), reps=20, warm=5)
    else:
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        ms = best * 1e3
    del a, b
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "ms": ms, "flops_per_s": 2 * n ** 3 / (ms / 1e3)}


def first_image(task: str, data: str, limit):
    """An image of the task's data (the vision FLOPs are counted on it), or None when none has one."""
    from harness.tasks import get_task
    from harness.tasks.data import load_samples

    for s in load_samples(get_task(task), data, limit, 0).samples:
        if s.image is not None:
            return s.image
    return None


def _sum(runs, key):
    return sum(float((r["summary"].get("timing") or {}).get(key) or 0.0) for r in runs)


def build_report(args, wall: float, cmd: list[str], runs: list[dict], work: list[dict], model_facts: dict,
                 rate: dict) -> dict:
    from harness.environment import device_identity

    n = sum(len(r["lines"]) for r in runs)
    failed = sum(r["failed"] for r in runs)
    timing0 = runs[0]["summary"].get("timing") or {}
    warm, loop = _sum(runs, "warmup_s"), _sum(runs, "loop_s")
    gen, model_s = _sum(runs, "generate_s"), _sum(runs, "model_ms") / 1e3
    startup, load = float(timing0.get("startup_s") or 0.0), float(timing0.get("model_load_s") or 0.0)
    fl = rate["flops_per_s"]
    totals = {p: sum(w["flops"][p] for w in work) for p in PARTS}
    total_flops = sum(totals.values())
    roof_s = total_flops / fl
    per_config = []
    for r, w in zip(runs, work):
        s, t = r["summary"], r["summary"].get("timing") or {}
        f = sum(w["flops"].values())
        m = len(r["lines"])
        per_config.append({
            "config": s["config"], "n": m, "failed": r["failed"], "engine": s.get("engine"),
            "batches": t.get("batches"), "warmup_s": t.get("warmup_s"), "warmup_keys": (t.get("warmup") or {}).get("keys"),
            "loop_s": t.get("loop_s"), "model_s": round(float(t.get("model_ms") or 0.0) / 1e3, 4),
            "mean_tokens": {k: round(v / m, 2) if m else None for k, v in w["tokens"].items()},
            "flops": {k: v for k, v in w["flops"].items()}, "flops_total": f,
            "roofline_s": f / fl, "loop_x_roofline": (float(t.get("loop_s") or 0.0) / (f / fl)) if f else None,
        })
    per_config.sort(key=lambda c: (c["flops_total"] / max(1, c["n"])))
    sps = lambda s: n / s if s > 0 else None  # noqa: E731
    roof_sps = sps(roof_s)
    measured = {"whole_command": sps(wall), "without_warmup": sps(wall - warm), "run_loops": sps(loop), "model": sps(model_s)}
    ratio = {k: (roof_sps / v if v else None) for k, v in measured.items()}

    def goal(key):
        return bool((measured[key] or 0) >= args.goal_samples_per_s or (ratio[key] is not None and ratio[key] <= args.goal_ratio))

    ident = device_identity(args.device_resolved)
    s0 = runs[0]["summary"]
    return {
        "benchmark": "grid_throughput",
        "command": shlex.join(["harness"] + cmd[3:]),
        "model": s0.get("model"), "task": args.task, "grid": args.grid, "configurations": len(runs),
        "batch_size": args.batch_size, "engine": sorted({str(r["summary"].get("engine")) for r in runs}),
        "engine_settings": s0.get("engine_settings"),
        "device": args.device_resolved, "device_name": s0.get("device_name"), "device_identity": ident,
        "dtype": s0.get("dtype"), "estimator": args.estimator,
        "samples": n, "samples_per_configuration": n // max(1, len(runs)), "failed": failed,
        "mean_tokens_per_sample": {k: round(sum(w["tokens"][k] for w in work) / max(1, n), 2)
                                   for k in ("text", "vision", "output", "decode_steps")},
        "timing_s": {"wall": round(wall, 3), "startup": startup, "model_load": load, "warmup": round(warm, 3),
                     "run_loops": round(loop, 3), "generate": round(gen, 3), "model": round(model_s, 3),
                     "other": round(wall - startup - load - warm - loop, 3)},
        "warmup_keys": sum(int(((r["summary"].get("timing") or {}).get("warmup") or {}).get("keys") or 0) for r in runs),
        "samples_per_s": measured,
        "matmul": rate,
        "flops": {**totals, "total": total_flops, "per_sample": total_flops / max(1, n)},
        "roofline": {"seconds": roof_s, "samples_per_s": roof_sps},
        "x_of_roofline": ratio,
        "goal": {"samples_per_s": args.goal_samples_per_s, "within_x_of_roofline": args.goal_ratio,
                 "met_whole_command": goal("whole_command"), "met_without_warmup": goal("without_warmup")},
        "model_counts": model_facts["counts"],
        "vision_flops_per_image": model_facts["vision_per_image"],
        "per_config": per_config,
        "notes": [
            "wall: the whole sweep command timed from outside (process start, imports, model build, warm-up, "
            "every run directory written); without warm-up: wall less the summaries' warmup_s",
            "roofline: counted FLOPs of each sample's own work (vision tower, projector, LM prefill and decode; "
            "no padding, no steps past a row's end) over the measured matmul rate; memory traffic, launches and "
            "the host are not in it, so it is a floor that no run reaches",
            "x of roofline = roofline samples/s / measured samples/s (1.0 = at the floor)",
        ],
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _versions() -> dict:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version()}


def _g(v, digits=1):
    """``digits`` decimals, more below 10 (a CPU smoke run's small rates stay readable)."""
    if v is None:
        return "-"
    return f"{v:.{digits if abs(v) >= 10 else max(digits, 2)}f}"


def to_markdown(r: dict) -> str:
    t, m, x = r["timing_s"], r["samples_per_s"], r["x_of_roofline"]
    mt = r["mean_tokens_per_sample"]
    lines = [
        f"# Grid throughput: `{r['grid']}` ({r['configurations']} configurations) on {r['task']}, {r['model']}, "
        f"{r['device_name']}",
        "",
        f"`{r['command']}`",
        "",
        f"{r['samples']} samples ({r['samples_per_configuration']} per configuration, {r['failed']} failed), batch "
        f"{r['batch_size']}, engine {', '.join(r['engine'])}, {r['dtype']}; mean per sample {mt['text']:.0f} text + "
        f"{mt['vision']:.0f} vision tokens in, {mt['output']:.1f} out. Created {r['created']}.",
        "",
        "| | seconds | samples/s | roofline samples/s | x of roofline |",
        "|---|---|---|---|---|",
        f"| whole command | {t['wall']:.1f} | {_g(m['whole_command'])} | {_g(r['roofline']['samples_per_s'])} | {_g(x['whole_command'], 2)} |",
        f"| without warm-up ({t['warmup']:.1f} s, {r['warmup_keys']} keys) | {t['wall'] - t['warmup']:.1f} | "
        f"{_g(m['without_warmup'])} | | {_g(x['without_warmup'], 2)} |",
        f"| run loops only | {t['run_loops']:.1f} | {_g(m['run_loops'])} | | {_g(x['run_loops'], 2)} |",
        f"| model forward passes only | {t['model']:.1f} | {_g(m['model'])} | | {_g(x['model'], 2)} |",
        "",
        f"Whole command: start-up {t['startup']:.1f} s, model load {t['model_load']:.1f} s, warm-up {t['warmup']:.1f} s, "
        f"run loops {t['run_loops']:.1f} s, the rest {t['other']:.1f} s (process start, imports, estimator, summaries).",
        "",
        f"Roofline: {r['flops']['total'] / 1e12:.3f} TFLOP ({r['flops']['per_sample'] / 1e9:.2f} GFLOP per sample: "
        + ", ".join(f"{p} {100 * r['flops'][p] / r['flops']['total']:.1f}%" for p in PARTS)
        + f") over {_g(r['matmul']['flops_per_s'] / 1e12)} TFLOP/s ({r['matmul']['dtype']} {r['matmul']['n']}x"
        f"{r['matmul']['n']} matmul measured here) = {r['roofline']['seconds']:.2f} s.",
        "",
        f"Goal: at least {r['goal']['samples_per_s']:g} samples/s or within {r['goal']['within_x_of_roofline']:g}x of the "
        f"roofline: whole command {'met' if r['goal']['met_whole_command'] else 'NOT met'}, without warm-up "
        f"{'met' if r['goal']['met_without_warmup'] else 'NOT met'}.",
        "",
        "| configuration | samples | batches | warm-up s | loop s | samples/s (loop) | GFLOP/sample | roofline s | loop x roofline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["per_config"]:
        loop = float(c["loop_s"] or 0.0)
        lines.append(f"| {c['config']} | {c['n']} | {c['batches']} | {_g(c['warmup_s'], 2)} | {loop:.2f} | "
                     f"{_g(c['n'] / loop if loop else None)} | {c['flops_total'] / max(1, c['n']) / 1e9:.2f} | "
                     f"{c['roofline_s']:.3f} | {_g(c['loop_x_roofline'], 2)} |")
    lines += [""] + [f"- {n}" for n in r["notes"]]
    lines.append(f"- versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b", help="a harness model spec (default random:molmoe-1b)")
    ap.add_argument("--grid", default="reference-full", help="a harness sweep --grid (name, TOML file or inline)")
    ap.add_argument("--task", default="scienceqa")
    ap.add_argument("--data", default="bundled")
    ap.add_argument("--limit", type=int, default=None, help="samples per configuration (default: all of --data)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on the CPU")
    ap.add_argument("--engine", default=None, help="fast, eager or auto (default: fast on CUDA, auto = eager elsewhere)")
    ap.add_argument("--estimator", default="none", help="as harness sweep --estimator (default none: the evaluation's "
                    "own cost; builtin adds a first-use fit where none is shipped)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's own (scienceqa: 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=3000)
    ap.add_argument("--goal-samples-per-s", type=float, default=100.0)
    ap.add_argument("--goal-ratio", type=float, default=2.0)
    ap.add_argument("--keep", default=None, help="write the sweep here and keep it (default: a temporary folder)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(RESULTS_DIR), help="results folder ($OUT when set)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from harness.environment import device_identity, identity_key
    from harness.latency.fit_files import slugify
    from harness.run_setup import resolve_device, resolve_dtype

    args.device_resolved = resolve_device(args.device)
    if args.engine is None:
        args.engine = "fast" if args.device_resolved.startswith("cuda") else "auto"
    dtype = resolve_dtype(args.dtype, args.device_resolved)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp) / "sweep"
        if args.keep and folder.exists() and any(folder.iterdir()):
            raise SystemExit(f"--keep {folder} is not empty: a resumed sweep would not be timed whole")
        wall, cmd = run_sweep(args, folder)
        runs = read_runs(folder)
    rate = matmul_rate(args.device_resolved, dtype)
    backend = counting_model(args.model, dtype)
    work, facts = work_flops(backend, runs, first_image(args.task, args.data, args.limit))
    report = build_report(args, wall, cmd, runs, work, facts, rate)
    stem = f"grid_throughput_{slugify(backend.info.name)}__{identity_key(device_identity(args.device_resolved))}"
    if args.grid != "reference-full":
        stem += f"__{slugify(args.grid)}"
    if args.batch_size != 64:
        stem += f"__b{args.batch_size}"
    report["files"] = f"{stem}.json, {stem}.md"
    write_report(args.out, stem, report, to_markdown(report))
    return report


if __name__ == "__main__":
    main()
