"""Prefill and decode latency of ``random:molmoe-1b`` per knob configuration on each execution
engine (``fast``: the harness engine, the default on CUDA; ``eager``: transformers' forward with
the grouped_mm experts), through the harness backend and decode loop, so the numbers are what
``harness run`` measures. Also: the fast engine's one-time warm-up (compilation + graph capture)
and its agreement with the eager engine (same weights).

    python benchmarks/knobs_gpu.py                       # GPU, bf16, full MolmoE-1B shape
    python benchmarks/knobs_gpu.py --shape tiny --device cpu --dtype float32 --decode-tokens 4 --engines eager,fast   # dry run

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
from harness.types import GenRequest  # noqa: E402
from _common import bytes_ratio, copy_bandwidth, cuda_median_ms, decode_floor_ms  # noqa: E402

CONFIGS = ("16,8", "16,6", "16,4", "16,2", "14,6", "12,8", "12,4", "12,2")
# importance order used by the earlier GPU probes (shared/baselines): block 0 then 5, 3, 1, 14, ...
IMPORTANCE = {b: 16 - r for r, b in enumerate([0, 5, 3, 1, 14, 2, 11, 9, 15, 4, 10, 13, 8, 6, 7, 12])}


def prompt_of(n_tokens: int) -> str:
    # ByteTokenizer: one token per byte, plus BOS
    return ("the quick brown fox jumps over the lazy dog " * (n_tokens // 44 + 1))[: n_tokens - 1]


def median(xs):
    return float(statistics.median(xs)) if xs else None


def measure(backend, prompt_tokens, decode_tokens, reps, batch=1, decode_prompt_tokens=120):
    """(prefill ms median, decode ms/step median) at ``batch``, after the backend's warm-up."""
    long_req = [GenRequest(prompt_of(prompt_tokens))] * batch
    short_req = [GenRequest(prompt_of(decode_prompt_tokens))] * batch
    backend.eos_token_ids = []  # random weights: never stop early
    pre, dec = [], []
    for _ in range(reps):
        pre.append(backend.generate(long_req, 1)[0].timings.prefill_ms)
    for _ in range(max(1, reps // 2)):
        dec.append(statistics.mean(backend.generate(short_req, decode_tokens)[0].timings.decode_step_ms))
    return median(pre), median(dec)


def prefill_replay_ms(backend, batch: int) -> float | None:
    """GPU time of the language model's prompt pass alone: the longest captured prompt graph of the
    active blocks at this batch size, replayed 20 times between CUDA events (median). None
    without prompt graphs."""
    sm = backend.step_model
    graphs = getattr(getattr(sm, "_graphs", None), "graphs", {})
    keys = [k for k in graphs if k[0] == "prefill" and k[1] == backend.active_blocks and k[2] == batch]
    if not getattr(sm, "prefill_graphs", False) or not keys:
        return None
    graph, _ = graphs[max(keys, key=lambda k: k[3])]
    return cuda_median_ms(graph.replay, reps=20)


def vision_ms(backend, image):
    out = None
    for _ in range(2):
        out = backend.generate([GenRequest("describe", image=image)], 1, tier="high")[0]
    return out.timings.vision_ms, out.timings.projector_ms, out.timings.lm_prefill_ms, out.input_tokens


def prefill_floor_ms(shape: rm.Shape, blocks: int, top_k: int, tokens: int, bandwidth: float, flops: float) -> float:
    """max(all weights once / bandwidth, matmul FLOPs / measured bf16 rate) for one prompt."""
    h = shape.hidden
    expert = 3 * h * shape.expert_hidden
    weights = 2 * (blocks * (4 * h * h + shape.experts * expert) + 2 * shape.vocab * h)
    macs = tokens * (blocks * 4 * h * h + (shape.top_k + (blocks - 1) * top_k) * expert) + shape.vocab * h
    return max(weights / bandwidth, 2 * macs / flops) * 1e3


def matmul_rate(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        a @ a
    e.record()
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (s.elapsed_time(e) / 1e3)


def agreement(fast, eager, configs, n_new=16):
    """Greedy tokens of the two engines on the same weights (bf16: small numeric differences may
    flip near-ties): four short prompts in one batch (a 256-column cache), thirty-two short ones
    (the grouped expert kernels at decode) and four long ones (1,000 columns: the fast engine's
    long-cache attention), each batch left-padded, and one long prompt alone (the batch-1 kernels)."""
    rows = []
    batches = {"short": [GenRequest(prompt_of(60 + 37 * i)) for i in range(4)],
               "32 short": [GenRequest(prompt_of(40 + 5 * i)) for i in range(32)],
               "long": [GenRequest(prompt_of(700 + 90 * i)) for i in range(4)],
               "one long, batch 1": [GenRequest(prompt_of(900))]}  # the batch-1 kernels (GEMVs)
    for cfg in configs:
        for label, reqs in batches.items():
            res = {}
            for b in (fast, eager):
                b.apply_knobs(cfg)
                b.eos_token_ids = []
                res[b.engine] = b.generate_ids(reqs, n_new).tokens
            same = sum(int(a == c) for x, y in zip(res["fast"], res["eager"]) for a, c in zip(x, y))
            first = sum(int(x[0] == y[0]) for x, y in zip(res["fast"], res["eager"]))
            rows.append({"knobs": cfg, "prompts": label, "tokens_equal": f"{same}/{len(reqs) * n_new}",
                         "first_token_equal": f"{first}/{len(reqs)}"})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("molmoe-1b", "tiny"), default="molmoe-1b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--engines", default="fast,eager")
    ap.add_argument("--configs", default=";".join(CONFIGS), help="knob configs separated by ';'")
    ap.add_argument("--eager-configs", default="16,8;14,6;12,4", help="configs measured on the eager engine")
    ap.add_argument("--batch32-configs", default="16,8;12,4", help="configs also measured at batch 32")
    ap.add_argument("--prompt-tokens", type=int, default=700)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--decode-prompt-tokens", type=int, default=120,
                    help="prompt before the measured decode steps (2,000: a tier-high image's cache length)")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--fast-variants", default="",
                    help="also measure the fast engine with kernel overrides, on the same weights and lease: "
                         "'VAR=value,VAR=value;VAR=value' (one variant per ';')")
    ap.add_argument("--variant-configs", default="16,8;12,4", help="configs measured on each variant (batch 1)")
    ap.add_argument("--variant-batch32-configs", default="16,8", help="configs measured on each variant at batch 32")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    t0 = time.time()
    shape = rm.MOLMOE_1B if args.shape == "molmoe-1b" else rm.TINY
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[args.dtype]
    split = lambda s: [c.strip() for c in s.split(";") if c.strip()]  # noqa: E731
    settings = load_settings(find_config("random-molmoe-1b"))
    info = rm.describe("random:molmoe-1b", settings, shape)
    import transformers

    cuda = torch.device(args.device).type == "cuda"
    device_name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
    env = {"device": device_name, "dtype": args.dtype, "torch": torch.__version__, "transformers": transformers.__version__,
           "shape": args.shape, "n_params": info.n_params, "prompt_tokens": args.prompt_tokens,
           "decode_tokens": args.decode_tokens, "importance": "baseline probe order"}
    print(json.dumps(env), flush=True)
    bw, rate = copy_bandwidth(args.device), matmul_rate(args.device)
    env["copy_bandwidth_TBps"] = round(bw / 1e12, 3) if bw else None
    env["bf16_matmul_TFLOPs"] = round(rate / 1e12, 1) if rate else None
    lm, vision = rm.build(shape, args.device, dtype)
    backends = {}
    for name in [e for e in args.engines.split(",") if e]:
        ts = time.time()
        backends[name] = rm.RandomMolmoeBackend(lm, vision, info, settings, args.device, dtype, IMPORTANCE, engine=name,
                                                experts_impl="grouped_mm")
        env[f"{name}_engine_setup_s"] = round(time.time() - ts, 2)
    variants = {}
    for spec in split(args.fast_variants):
        assigns = dict(a.split("=", 1) for a in spec.split(",") if "=" in a)
        saved = {k: os.environ.get(k) for k in assigns}
        os.environ.update(assigns)
        try:  # the overrides are read when the engine is built (and name its variant)
            b = rm.RandomMolmoeBackend(lm, vision, info, settings, args.device, dtype, IMPORTANCE, engine="fast",
                                       experts_impl="grouped_mm")
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        backends[b.engine_variant] = variants[b.engine_variant] = b
    print(f"model built in {time.time() - t0:.1f}s", flush=True)
    from PIL import Image

    image = Image.new("RGB", (640, 480), (120, 80, 40))
    rows = []
    if "fast" in backends:  # one-time warm-up: compilation of the block step and graph captures
        fast = backends["fast"]
        fast.apply_knobs("16,8")
        ts = time.time()
        fast.generate([GenRequest(prompt_of(120))], 4)
        env["fast_first_call_s"] = round(time.time() - ts, 2)
        env["fast_engine_settings"] = fast.engine_settings
        print(f"fast engine first call (compile + capture): {env['fast_first_call_s']} s", flush=True)

    def record(engine, cfg, batch):
        b, k = (int(x) for x in cfg.split(","))
        row = {"engine": engine, "knobs": cfg, "batch": batch}
        backend = backends[engine]
        try:
            backend.apply_knobs(cfg)
            ts = time.time()
            pre, dec = measure(backend, args.prompt_tokens, args.decode_tokens, args.reps, batch, args.decode_prompt_tokens)
            row.update(prefill_ms=round(pre, 2), decode_ms_per_step=round(dec, 3), wall_s=round(time.time() - ts, 1))
            replay = prefill_replay_ms(backend, batch) if cuda and engine.startswith("fast") else None
            if replay is not None:
                row["lm_prefill_graph_ms"] = round(replay, 2)
            if bw and batch == 1:
                fl = decode_floor_ms(shape, b, k, bw)
                pf = prefill_floor_ms(shape, b, k, args.prompt_tokens, bw, rate)
                row.update(floor_ms_per_token=round(fl, 3), x_floor=round(dec / fl, 2), prefill_floor_ms=round(pf, 2),
                           prefill_x_floor=round(pre / pf, 2))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            traceback.print_exc(limit=6)
        rows.append(row)
        print(json.dumps(row), flush=True)

    for engine in backends:
        if engine in variants:
            variants[engine].generate([GenRequest(prompt_of(120))], 4)  # its compilation and first capture
            env[f"{engine}_settings"] = variants[engine].engine_settings
        configs = {"fast": args.configs, "eager": args.eager_configs}.get(engine, args.variant_configs)
        for cfg in split(configs):
            record(engine, cfg, 1)
        for cfg in split(args.variant_batch32_configs if engine in variants else args.batch32_configs):
            record(engine, cfg, 32)
        try:
            backends[engine].apply_knobs("16,8")
            vis, proj, lmp, n_in = vision_ms(backends[engine], image)
            env[f"{engine}_tier_high"] = {"vision_ms": vis, "projector_ms": proj, "lm_prefill_ms": lmp, "input_tokens": n_in}
            print(json.dumps({engine: env[f"{engine}_tier_high"]}), flush=True)
        except Exception as exc:
            env[f"{engine}_tier_high"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    agree = agreement(backends["fast"], backends["eager"], ["16,8", "12,4"]) if {"fast", "eager"} <= set(backends) else []
    env["total_s"] = round(time.time() - t0, 1)
    ratio = {}
    by = {(r["engine"], r["knobs"], r["batch"]): r for r in rows if "decode_ms_per_step" in r}
    for eng in backends:
        a, c = by.get((eng, "12,4", 1)), by.get((eng, "16,8", 1))
        if a and c:
            ratio[eng] = {"measured": round(a["decode_ms_per_step"] / c["decode_ms_per_step"], 3),
                          "bytes_ratio": round(bytes_ratio(shape, "12,4", "16,8"), 3)}
    env["decode_ratio_12_4_over_16_8"] = ratio
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "knobs_gpu.json").write_text(json.dumps({"env": env, "rows": rows, "agreement": agree}, indent=1))
    md = [f"# random:molmoe-1b knob latency per engine ({env['device']}, {args.dtype}, torch {env['torch']}, transformers {env['transformers']})", "",
          f"Prefill = {args.prompt_tokens}-token text prompt; decode = mean ms per step over {args.decode_tokens} tokens after a "
          f"{args.decode_prompt_tokens}-token prompt; harness backend + decode loop, CUDA events, after the backend's warm-up. Floor = bytes a decode step "
          "reads (the active blocks' attention, norms, router and top_k experts, block 0 at its own top_k; the final norm, "
          f"the LM head and one embedding row, not the table) / measured copy bandwidth ({env['copy_bandwidth_TBps']} TB/s); prefill floor = max(all weights once / "
          f"bandwidth, FLOPs / measured bf16 matmul rate {env['bf16_matmul_TFLOPs']} TFLOP/s).", "",
          f"Fast engine first call (compilation + graph capture, 120-token prompt): {env.get('fast_first_call_s')} s.", "",
          f"Engine settings: {json.dumps(env.get('fast_engine_settings'))}; LM prompt graph = GPU time of the language "
          "model's prompt pass replayed alone (its CUDA graph, padded length).", "",
          "| engine | knobs | batch | prefill ms | LM prompt graph ms | prefill floor | x | decode ms/step | floor ms/token | x floor | note |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['engine']} | {r['knobs']} | {r['batch']} | {r.get('prefill_ms', '')} | {r.get('lm_prefill_graph_ms', '')} | "
                  f"{r.get('prefill_floor_ms', '')} | "
                  f"{r.get('prefill_x_floor', '')} | {r.get('decode_ms_per_step', '')} | {r.get('floor_ms_per_token', '')} | "
                  f"{r.get('x_floor', '')} | {r.get('error', '')} |")
    md += ["", "decode(12,4)/decode(16,8): " + "; ".join(f"{e} {r['measured']} (bytes ratio {r['bytes_ratio']})"
                                                         for e, r in ratio.items()), "",
           "Tier high (13 crops, image + prompt): " + json.dumps({e: env.get(f"{e}_tier_high") for e in backends}), "",
           "Fast vs eager greedy tokens (same weights, bf16): " + json.dumps(agree)]
    (out / "knobs_gpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
