"""Prefill and decode latency of ``random:molmoe-1b`` at knob configs 16,8 / 14,6 / 12,4 with each
experts implementation (eager, grouped_mm, batched_mm), batch 1, through the harness backend and
decode loop (so the numbers are what ``harness run`` measures). Optionally the same with
``--compile`` (static KV cache + torch.compile of the decode step).

    python benchmarks/knobs_gpu.py                       # GPU, bf16, full MolmoE-1B shape
    python benchmarks/knobs_gpu.py --shape tiny --device cpu --dtype float32 --decode-tokens 4   # dry run

Prints a table and writes knobs_gpu.json / knobs_gpu.md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.backends import random_molmoe as rm  # noqa: E402
from harness.backends.modelconfig import find_config, load_settings  # noqa: E402
from harness.decode import Decoder  # noqa: E402
from harness.types import GenRequest  # noqa: E402

CONFIGS = ("16,8", "14,6", "12,4")
IMPLS = ("eager", "grouped_mm", "batched_mm")
# importance order used by the earlier GPU probes (shared/baselines): block 0 then 5, 3, 1, 14, ...
IMPORTANCE = {b: 16 - r for r, b in enumerate([0, 5, 3, 1, 14, 2, 11, 9, 15, 4, 10, 13, 8, 6, 7, 12])}


def prompt_of(n_tokens: int) -> str:
    # ByteTokenizer: one token per byte, plus BOS
    return ("the quick brown fox jumps over the lazy dog " * (n_tokens // 44 + 1))[: n_tokens - 1]


def median(xs):
    return float(statistics.median(xs)) if xs else None


def measure(backend, prompt_tokens, decode_tokens, reps, image=None, tier="high"):
    """(prefill ms median, decode ms/token median, vision ms, projector ms) at batch 1."""
    long_req = [GenRequest(prompt_of(prompt_tokens))]
    short_req = [GenRequest(prompt_of(120))]
    backend.eos_token_ids = []  # random weights: never stop early
    pre, dec = [], []
    for _ in range(reps):
        out = backend.generate(long_req, 1)[0]
        pre.append(out.timings.prefill_ms)
    for _ in range(max(1, reps // 2)):
        out = backend.generate(short_req, decode_tokens)[0]
        dec.append(statistics.mean(out.timings.decode_step_ms))
    vis = proj = None
    if image is not None:
        try:
            out = backend.generate([GenRequest("describe", image=image)], 1, tier=tier)[0]
            out = backend.generate([GenRequest("describe", image=image)], 1, tier=tier)[0]
            vis, proj = out.timings.vision_ms, out.timings.projector_ms
        except torch.OutOfMemoryError as exc:  # batched_mm on a ~1.9k-token image prefill
            print(f"image prefill skipped: {str(exc)[:120]}", flush=True)
            torch.cuda.empty_cache()
    return median(pre), median(dec), vis, proj


def floor_ms(shape: rm.Shape, blocks: int, top_k: int, bandwidth: float) -> float:
    h = shape.hidden
    attn = 4 * h * h
    expert = 3 * h * shape.expert_hidden
    per = attn + h * shape.experts + expert * top_k
    first = attn + h * shape.experts + expert * shape.top_k
    nbytes = 2 * (first + (blocks - 1) * per + 2 * shape.vocab * h)
    return nbytes / bandwidth * 1e3


def copy_bandwidth(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        y.copy_(x)
    e.record()
    torch.cuda.synchronize()
    bw = 10 * 2 * x.numel() * 2 / (s.elapsed_time(e) / 1e3)
    del x, y
    return bw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("molmoe-1b", "tiny"), default="molmoe-1b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--configs", default=";".join(CONFIGS), help="knob configs separated by ';'")
    ap.add_argument("--prompt-tokens", type=int, default=700)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--compile", default="batched_mm,grouped_mm", help="experts impls to also run with --compile ('' = none)")
    ap.add_argument("--budget-s", type=float, default=330, help="skip remaining compile runs after this many seconds")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    t0 = time.time()
    shape = rm.MOLMOE_1B if args.shape == "molmoe-1b" else rm.TINY
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[args.dtype]
    configs = [c.strip() for c in args.configs.split(";") if c.strip()]
    settings = load_settings(find_config("random-molmoe-1b"))
    info = rm.describe("random:molmoe-1b", settings, shape)
    import transformers

    device_name = torch.cuda.get_device_name(0) if torch.device(args.device).type == "cuda" else platform.processor() or "cpu"
    env = {"device": device_name, "dtype": args.dtype, "torch": torch.__version__, "transformers": transformers.__version__,
           "shape": args.shape, "n_params": info.n_params, "prompt_tokens": args.prompt_tokens,
           "decode_tokens": args.decode_tokens, "batch_size": 1, "importance": "baseline probe order"}
    print(json.dumps(env), flush=True)
    bw = copy_bandwidth(args.device)
    env["copy_bandwidth_TBps"] = round(bw / 1e12, 3) if bw else None
    backend = rm.load(info, settings, args.device, dtype, IMPORTANCE, "eager", shape=shape)
    print(f"model built in {time.time() - t0:.1f}s", flush=True)
    from PIL import Image

    image = Image.new("RGB", (640, 480), (120, 80, 40))
    rows = []

    def record(mode, impl, cfg, fn):
        b, k = (int(x) for x in cfg.split(","))
        row = {"mode": mode, "experts_impl": impl, "knobs": cfg}
        try:
            backend.apply_knobs(cfg)
            ts = time.time()
            pre, dec, vis, proj = fn()
            row.update(prefill_ms=round(pre, 2) if pre is not None else None, decode_ms_per_token=round(dec, 3),
                       vision_ms_high=round(vis, 2) if vis else None, projector_ms_high=round(proj, 3) if proj else None,
                       wall_s=round(time.time() - ts, 1))
            if bw:
                fl = floor_ms(shape, b, k, bw)
                row.update(floor_ms_per_token=round(fl, 3), x_floor=round(dec / fl, 1))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            traceback.print_exc(limit=4)
        rows.append(row)
        print(json.dumps(row), flush=True)

    for impl in [i for i in args.impls.split(",") if i]:
        got = backend.set_experts_impl(impl)
        if got != impl:
            rows.append({"mode": "eager", "experts_impl": impl, "error": f"unavailable (fell back to {got})"})
            continue
        for i, cfg in enumerate(configs):
            img = image if i == 0 else None
            record("eager", impl, cfg, lambda img=img: measure(backend, args.prompt_tokens, args.decode_tokens, args.reps, img))
    for impl in [i for i in args.compile.split(",") if i]:
        backend.set_experts_impl(impl)
        backend.decoder = Decoder(backend.step_model, compile=True)
        backend._warm.clear()
        for cfg in configs:
            if time.time() - t0 > args.budget_s:
                rows.append({"mode": "compile", "experts_impl": impl, "knobs": cfg, "error": "skipped: time budget"})
                continue

            def fn():
                tc = time.time()
                backend.eos_token_ids = []
                out = backend.generate([GenRequest(prompt_of(120))], args.decode_tokens)[0]  # includes warm-up/compile
                warm = time.time() - tc
                outs = [backend.generate([GenRequest(prompt_of(120))], args.decode_tokens)[0] for _ in range(2)]
                dec = median([statistics.mean(o.timings.decode_step_ms) for o in outs + [out]])
                print(f"compile warm-up+first call {warm:.1f}s", flush=True)
                return None, dec, None, None

            record("compile", impl, cfg, fn)
    env["total_s"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "knobs_gpu.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    md = [f"# random:molmoe-1b knob latency ({env['device']}, {args.dtype}, torch {env['torch']}, transformers {env['transformers']})", "",
          f"Batch 1; prefill = {args.prompt_tokens}-token text prompt; decode = mean ms per step over {args.decode_tokens} tokens after a 120-token prompt; "
          "harness backend + decode loop, CUDA events after warm-up. Floor = active weight bytes per token / measured copy bandwidth "
          f"({env['copy_bandwidth_TBps']} TB/s). Vision = ViT on 13 crops (tier high) when measured.", "",
          "| mode | experts impl | knobs | prefill ms | decode ms/token | floor ms/token | x floor | vision ms (high) | note |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r.get('mode')} | {r.get('experts_impl')} | {r.get('knobs', '')} | {r.get('prefill_ms', '')} | {r.get('decode_ms_per_token', '')} | "
                  f"{r.get('floor_ms_per_token', '')} | {r.get('x_floor', '')} | {r.get('vision_ms_high') or ''} | {r.get('error', '')} |")
    (out / "knobs_gpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
