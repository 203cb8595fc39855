"""Expert (MoE) kernels side by side: the MolmoE-1B expert shape (64 experts, 2048 -> 1024 -> 2048,
top-8 routing, a runtime top_k), at decode batches 1, 8, 32 and a 700-token prefill, in one run.

Kernels: ``grouped_mm`` (torch._grouped_mm over pairs sorted by expert), the engine's Triton
``pairwise`` and ``grouped`` kernels (a few tile configurations each), and transformers' own
``grouped_mm`` experts implementation (the eager engine's kernel, for reference), and the experts
kernels of kernel libraries from the package index where installed (FlashInfer's CUTLASS fused MoE,
``pip install -e '.[gpu]'``; FlagGems' Triton fused MoE, ``pip install --no-deps flag-gems sqlalchemy``;
see ``_kernel_libraries.py``). Each is checked
against the ``loop`` reference (relative error) and timed by CUDA-graph replay (decode sizes) or
events (prefill), median of many repeats. Floor = weight bytes of the experts the batch hits
(slots < top_k) / measured copy bandwidth.

    python benchmarks/moe_kernels.py            # GPU
Prints a table and writes moe_kernels.json / .md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.engine import triton_moe as tm  # noqa: E402
from harness.engine.moe import moe_grouped_mm, moe_loop  # noqa: E402
from _common import copy_bandwidth, cuda_graph_median_ms, cuda_median_ms, write_report  # noqa: E402
import _kernel_libraries  # noqa: E402

E, H, I, KMAX = 64, 2048, 1024, 8


def time_events(fn, reps=30):
    return cuda_median_ms(fn, reps, warm=3)


def timed(fn, graph: bool):
    """(median ms, how it was timed): CUDA-graph replay where asked and capturable, else events."""
    if graph:
        try:
            return cuda_graph_median_ms(fn), "graph"
        except Exception as exc:  # e.g. a library kernel that allocates or syncs on the host
            torch.cuda.synchronize()
            return time_events(fn), f"events (graph capture failed: {type(exc).__name__})"
    return time_events(fn), "events"


def torch_bookkeeping(fn, *args):
    """``fn`` with the grouped kernels' bookkeeping done by torch ops (a sort, scatter, cumsums,
    searchsorted: some fifteen launches) instead of the one-program ``_align`` kernel."""
    saved, tm.ALIGN_MAX_PAIRS = tm.ALIGN_MAX_PAIRS, 0
    try:
        return fn(*args)
    finally:
        tm.ALIGN_MAX_PAIRS = saved


def hf_experts(w13, w2):
    """transformers' OLMoE experts module with the grouped_mm implementation, on these weights."""
    from transformers import OlmoeConfig
    from transformers.models.olmoe.modeling_olmoe import OlmoeExperts

    cfg = OlmoeConfig(hidden_size=H, intermediate_size=I, num_experts=E, num_experts_per_tok=KMAX)
    cfg._experts_implementation = "grouped_mm"
    with torch.device("meta"):
        mod = OlmoeExperts(cfg)
    mod.gate_up_proj = torch.nn.Parameter(w13, requires_grad=False)
    mod.down_proj = torch.nn.Parameter(w2, requires_grad=False)
    return mod


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="1,8,32,700")
    ap.add_argument("--top-k", default="8,4")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    bw = copy_bandwidth()
    w13 = (torch.randn(E, 2 * I, H, device=dev) * 0.02).to(dt)
    w2 = (torch.randn(E, H, I, device=dev) * 0.02).to(dt)
    router = torch.randn(E, H, device=dev) * 0.05
    try:
        hf = hf_experts(w13, w2)
    except Exception as exc:  # reference only
        print(f"transformers experts unavailable: {exc}", flush=True)
        hf = None
    libs, libs_missing = _kernel_libraries.expert_kernels(w13, w2)
    for name, why in libs_missing.items():
        print(f"{name}: {why}", flush=True)
    pair_cfgs = [tm.Config(pair_bn=bn, pair_bk=bk, pair_warps=w) for bn, bk, w in ((16, 128, 4), (8, 256, 4), (32, 128, 4), (16, 256, 8))]
    grp_cfgs = [tm.Config(bn=bn, bk=bk, bn_large=bn, bk_large=bk, warps=w, stages=s, fused_act=f) for bn, bk, w, s, f in (
        (64, 64, 4, 3, True), (128, 64, 4, 3, True), (64, 128, 4, 3, True), (128, 64, 8, 3, True),
        (64, 64, 4, 4, False), (128, 64, 4, 4, False), (128, 64, 8, 3, False), (128, 128, 8, 3, False), (256, 64, 8, 3, False))]
    rows = []
    for n in [int(x) for x in args.tokens.split(",")]:
        x = torch.randn(n, H, device=dev).to(dt)
        probs = torch.softmax((x.float() @ router.T), -1)
        topv, topi = torch.topk(probs, KMAX)
        topv = topv.to(dt)
        for k in [int(x) for x in args.top_k.split(",")]:
            kt = torch.tensor([k], dtype=torch.int32, device=dev)
            masked = torch.where(torch.arange(KMAX, device=dev) < k, topv, torch.zeros_like(topv))
            ref = moe_loop(x.float(), masked.float(), topi, k, w13.float(), w2.float())
            hit = int(torch.unique(topi[:, :k]).numel())
            floor = hit * 3 * H * I * 2 / bw * 1e3
            cands = {"torch grouped_mm": lambda: moe_grouped_mm(x, masked, topi, kt, w13, w2)}
            if hf is not None:
                cands["transformers grouped_mm (eager engine)"] = lambda: hf(x, topi[:, :k].contiguous(), topv[:, :k].contiguous())
            ids, scales = _kernel_libraries.routing(topv, topi, k)
            for lname, run in libs.items():
                cands[lname] = lambda run=run, ids=ids, scales=scales: run(x, ids, scales)
            for c in pair_cfgs if n <= 64 else []:
                cands[f"triton pairwise bn{c.pair_bn} bk{c.pair_bk} w{c.pair_warps}"] = lambda c=c: tm.moe_pairwise(x, masked, topi, kt, w13, w2, c)
            if n * KMAX <= tm.ALIGN_MAX_PAIRS:  # the default tiles with the bookkeeping of torch ops instead of one launch
                d = tm.DEFAULT
                cands[f"triton grouped, torch-op bookkeeping, bm{d.bm} bn{d.bn} bk{d.bk} w{d.warps} s{d.stages}"] = lambda: torch_bookkeeping(
                    tm.moe_grouped, x, masked, topi, kt, w13, w2)
            for c in grp_cfgs:
                for bm in ((16, 32) if n <= 64 else (64, 128)):
                    cands[f"triton grouped{'' if c.fused_act else ' unfused'} bm{bm} bn{c.bn} bk{c.bk} w{c.warps} s{c.stages}"] = lambda c=c, bm=bm: tm.moe_grouped(x, masked, topi, kt, w13, w2, c, bm=bm)
            for name, fn in cands.items():
                row = {"tokens": n, "top_k": k, "kernel": name, "experts_hit": hit, "floor_ms": round(floor, 4)}
                try:
                    out = fn().float()
                    row["rel_err"] = float((out - ref).norm() / ref.norm())
                    ms, how = timed(fn, graph=n <= 64 and not name.startswith("transformers"))
                    row.update(ms=round(ms, 4), x_floor=round(ms / floor, 2), timing=how)
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                rows.append(row)
                print(json.dumps(row), flush=True)
    best = {}
    for r in rows:
        if "ms" in r and r["rel_err"] < 2e-2:
            key = (r["tokens"], r["top_k"])
            if key not in best or r["ms"] < best[key]["ms"]:
                best[key] = r
    env = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "copy_bandwidth_TBps": round(bw / 1e12, 3),
           "triton": __import__("triton").__version__, "shape": {"experts": E, "hidden": H, "expert_hidden": I, "routing": KMAX},
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    env["libraries_unavailable"] = libs_missing
    md = [f"# Expert kernels, MolmoE-1B expert shape ({env['device']}, bf16, torch {env['torch']}, triton {env['triton']})", "",
          "Median ms per MoE layer call (gate_up + SwiGLU + down + weighted sum); decode sizes timed by CUDA-graph replay, "
          f"prefill by events. Floor = weight bytes of the experts hit / {env['copy_bandwidth_TBps']} TB/s.", "",
          "| tokens | top_k | kernel | ms | floor ms | x floor | rel. err | timed by |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['tokens']} | {r['top_k']} | {r['kernel']} | {r.get('ms', r.get('error', ''))} | {r['floor_ms']} | "
                  f"{r.get('x_floor', '')} | {r.get('rel_err', 0):.1e} | {r.get('timing', '')} |")
    md += ["", "Fastest per size:", ""] + [f"- {n} tokens, top_k {k}: {r['kernel']} {r['ms']} ms ({r['x_floor']}x floor)"
                                           for (n, k), r in sorted(best.items())]
    md += [f"- Not measured: {name}: {why}" for name, why in libs_missing.items()]
    write_report(args.out, "moe_kernels", {"env": env, "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
