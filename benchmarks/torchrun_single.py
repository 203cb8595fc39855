"""``torchrun --nproc-per-node 1`` gives the one-process result on the device at hand.

Runs the same ``harness run`` twice into fresh run directories -- plainly, then under torchrun with
one process -- and compares per-sample predictions, scores, configurations and batches, and the
summaries with timing aside (latency figures, timing, host load, creation time, notes' numbers).
Writes ``benchmarks/results/torchrun_nproc1-<device>.json`` and ``.md``; exit 1 when they differ.

    python benchmarks/torchrun_single.py --model random:molmoe-1b --task scienceqa --limit 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS_DIR, write_report

# summary fields measured on the way, not results
TIMING_FIELDS = {"created", "timing", "host_load", "latency_ms", "estimated_vs_measured_total_ms", "estimator_error",
                 "clock"}


def run(cmd: list[str], env: dict) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return proc.returncode, time.perf_counter() - t0, proc.stderr[-2000:]


def read(folder: Path) -> tuple[dict, dict]:
    summary = json.loads((folder / "summary.json").read_text())
    lines = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines() if x.strip()]
    per_id = {ln["id"]: (ln["prediction"], ln["score"], ln["config"], ln["batch_id"], ln["error"]) for ln in lines}
    return summary, per_id


def notes(summary: dict) -> list[str]:
    return [re.sub(r"\d+(\.\d+)?", "#", n) for n in summary.get("notes", [])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="reference")
    ap.add_argument("--task", default="scienceqa")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--extra", default="--estimator none",
                    help="more `harness run` options (default: no estimator, so that a first-use fit in the first "
                         "run does not make the two differ), e.g. '--estimator none --policy random'")
    ap.add_argument("--results", default=str(RESULTS_DIR))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="torchrun-single-"))
    common = ["run", "--task", args.task, "--model", args.model, "--limit", str(args.limit), "--batch-size",
              str(args.batch_size), "--device", args.device, "--quiet", *args.extra.split()]
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # torchrun would set 1: the same for both
    plain = [sys.executable, "-m", "harness", *common, "--output", str(work / "plain")]
    under = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "harness",
             *common, "--output", str(work / "torchrun")]
    rc_a, wall_a, err_a = run(plain, env)
    rc_b, wall_b, err_b = run(under, env)
    if rc_a or rc_b:
        print(f"a run failed (plain exit {rc_a}, torchrun exit {rc_b}):\n{err_a}\n{err_b}", file=sys.stderr)
        return 2
    sa, la = read(work / "plain")
    sb, lb = read(work / "torchrun")
    differing_samples = sorted(k for k in set(la) | set(lb) if la.get(k) != lb.get(k))
    differing_fields = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k) and k not in TIMING_FIELDS
                              and not (k == "notes" and notes(sa) == notes(sb)))
    same = not differing_samples and not differing_fields
    device = sa.get("device_name") or sa.get("device") or "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", str(device).lower()).strip("-")
    report = {"command": " ".join(common), "model": args.model, "device": sa.get("device"), "device_name": device,
              "n": sa.get("n"), "score_plain": sa.get("score"), "score_torchrun": sb.get("score"), "same": same,
              "differing_samples": differing_samples, "differing_summary_fields": differing_fields,
              "wall_s": {"plain": round(wall_a, 2), "torchrun": round(wall_b, 2)},
              "loop_s": {"plain": (sa.get("timing") or {}).get("loop_s"), "torchrun": (sb.get("timing") or {}).get("loop_s")}}
    md = (f"# `torchrun --nproc-per-node 1` vs one process: {args.model} on {device}\n\n"
          f"`harness {' '.join(common)}`: {sa.get('n')} samples; score {sa.get('score')} (plain) vs "
          f"{sb.get('score')} (torchrun).\n\n"
          f"- per-sample predictions, scores, configurations and batches: "
          f"{'identical' if not differing_samples else f'{len(differing_samples)} differ'}\n"
          f"- summary fields other than timing: {'identical' if not differing_fields else ', '.join(differing_fields)}\n"
          f"- wall clock (process start to exit): {wall_a:.1f} s plain, {wall_b:.1f} s under torchrun\n")
    write_report(args.results, f"torchrun_nproc1-{slug}", report, md)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
