"""The fast engine's batch-1 decode kernels side by side, at the MolmoE-1B shapes: experts
(routing included), decode attention and the single-row projections, each against what it
replaces, over a sweep of tile configurations.

Each candidate is timed as the engine runs it: one CUDA graph of 16 calls, each on its own
layer's weights (and cache), so no weight is served from L2 because the previous call read it;
reported per call (graph replay time / 16, launch gaps included), median of many replays.
Errors are relative to the float32 reference.

- experts: the Triton routing kernel + per-pair GEMVs over tile configurations, batch 1 and 8,
  top_k 2, 4, 8 (the first run, in benchmarks/results/decode_kernels.md, measured "routed" kernels
  here: routing inside the expert kernels and a grid of column tiles that loops over the slots;
  slower at top_k 4 and 8, so they were removed);
- attention: PyTorch's (as the engine calls it, additive mask) against the split-KV Triton kernels
  (chunk and step sizes, warps) at 256 to 2,304 cache columns, and the engine's chunks with the
  combine looped over tiles at run time (``loop_combine``: kernel constants that no longer follow the
  cache width, so the compiled step would need one version per row kind instead of up to eight);
- router: the router product and the routing, the engine's two kernels against one kernel that does
  both (``triton_moe.router_route``, a candidate);
- projections: ``F.linear`` (cuBLAS) against the Triton GEMV (rows per program, columns per load,
  warps) for q/k/v, output, router and LM head.

    python benchmarks/decode_kernels.py        # GPU
Prints a table and writes decode_kernels.json / .md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness.engine import triton_attention as ta  # noqa: E402
from harness.engine import triton_gemv as tg  # noqa: E402
from harness.engine import triton_moe as tm  # noqa: E402
from harness.engine.moe import moe_loop  # noqa: E402
from harness.engine.triton_arrive import counters  # noqa: E402
from _common import copy_bandwidth, cuda_graph_median_ms, write_report  # noqa: E402

E, H, I, KMAX, LAYERS, HEADS, D = 64, 2048, 1024, 8, 16, 16, 128


def time_layers(fn, reps=100):
    """ms per call of ``fn(layer)``: one graph calls it for each of the 16 layers in turn."""
    return cuda_graph_median_ms(lambda: [fn(i) for i in range(LAYERS)], reps) / LAYERS


def rel_err(out, ref):
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def measure(rows, group, shape, name, fn, ref, floor_ms=None, **extra):
    row = {"group": group, "shape": shape, "kernel": name, **extra}
    try:
        row["rel_err"] = rel_err(fn(0), ref)
        row["us"] = round(time_layers(fn) * 1e3, 2)
        if floor_ms:
            row.update(floor_us=round(floor_ms * 1e3, 2), x_floor=round(row["us"] / (floor_ms * 1e3), 2))
    except Exception as exc:  # a configuration that does not compile or launch: recorded, the sweep goes on
        row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    rows.append(row)
    print(json.dumps(row), flush=True)
    return row


def experts(rows, dev, dt, bw, quick, tiles="2,4,8,16;256,1024,2048;4,8"):
    w13 = [(torch.randn(E, 2 * I, H, device=dev) * 0.02).to(dt) for _ in range(LAYERS)]
    w2 = [(torch.randn(E, H, I, device=dev) * 0.02).to(dt) for _ in range(LAYERS)]
    cfgs = list(itertools.product(*([int(v) for v in part.split(",")] for part in tiles.split(";"))))
    if quick:
        cfgs = cfgs[:2]
    for n, k in itertools.product((1, 8), (8, 4, 2)):
        x = [torch.randn(n, H, device=dev).to(dt) for _ in range(LAYERS)]
        logits = [torch.randn(n, E, device=dev).to(dt) for _ in range(LAYERS)]
        kt = torch.tensor([k], dtype=torch.int32, device=dev)
        topv, topi = tm.route(logits[0], kt, KMAX, False, dt)
        ref = moe_loop(x[0].float(), topv.float(), topi, k, w13[0].float(), w2[0].float())
        hit = int(torch.unique(topi[:, :k]).numel())
        floor = hit * 3 * H * I * 2 / bw * 1e3
        shape = f"tokens {n}, top_k {k}"

        def pairwise(c):
            def fn(i):
                v, ix = tm.route(logits[i], kt, KMAX, False, dt)
                return tm.moe_pairwise_parts(x[i], v, ix, kt, w13[i], w2[i], c).sum(1)
            return fn

        d = tm.DEFAULT
        measure(rows, "experts", shape, f"triton pairwise default (bn{d.pair_bn} bk{d.pair_bk} w{d.pair_warps}, + routing kernel)",
                pairwise(d), ref, floor)
        for bn, bk, w in cfgs:
            measure(rows, "experts", shape, f"triton pairwise bn{bn} bk{bk} w{w}",
                    pairwise(tm.Config(pair_bn=bn, pair_bk=bk, pair_warps=w)), ref, floor)


def attention(rows, dev, dt, quick):
    from harness.engine.block import attention_bias

    for width, filled in ((256, 130), (512, 400), (1024, 900), (2304, 2000)):
        q = [torch.randn(1, HEADS, 1, D, device=dev).to(dt) for _ in range(LAYERS)]
        kc = [torch.randn(1, HEADS, width, D, device=dev).to(dt) for _ in range(LAYERS)]
        vc = [torch.randn(1, HEADS, width, D, device=dev).to(dt) for _ in range(LAYERS)]
        allowed = torch.zeros(1, 1, 1, width, dtype=torch.bool, device=dev)
        allowed[..., :filled] = True
        bias = attention_bias(allowed, dt)
        scale = D ** -0.5
        cnt = counters(dev, HEADS)
        ref = F.scaled_dot_product_attention(q[0].float(), kc[0].float(), vc[0].float(), attn_mask=bias.float(), scale=scale)
        shape = f"{width} columns ({filled} filled)"
        measure(rows, "attention", shape, "torch sdpa",
                lambda i: F.scaled_dot_product_attention(q[i], kc[i], vc[i], attn_mask=bias, scale=scale), ref)
        measure(rows, "attention", shape, f"triton default (chunk {ta.chunk_for(width)})",
                lambda i: ta.decode_attention(q[i], kc[i], vc[i], bias, scale, cnt), ref, role="engine")
        for tile in (16, 32):  # the combine in tiles at run time: constants that do not follow the width (docs/engine.md)
            measure(rows, "attention", shape, f"engine's chunk, run-time combine in tiles of {tile}",
                    lambda i, tile=tile: ta.launch(q[i], kc[i], vc[i], bias, scale, ta.chunk_for(width), cnt, loop_combine=tile), ref,
                    role="candidate")
        for ch, bwid, w in itertools.product((32, 64, 128, 256), (32, 64), (2, 4, 8)):
            if bwid > ch or (quick and w != 4) or width // ch > 128:
                continue
            measure(rows, "attention", shape, f"triton chunk {ch} step {bwid} w{w}",
                    lambda i, ch=ch, bwid=bwid, w=w: ta.launch(q[i], kc[i], vc[i], bias, scale, ch, cnt, bwid, w,
                                                               max(ta.MAX_CHUNKS, 1 << (width // ch - 1).bit_length())), ref)


def router(rows, dev, dt, bw):
    """The router product and the routing: the engine's two kernels (the Triton GEMV, then the
    routing kernel) against the candidate that does both in one (``triton_moe.router_route``).
    Error: the routing weights against float32 torch routing of the float32 logits."""
    from harness.engine.block import route as torch_route
    from harness.engine.weights import LMSpec

    spec = LMSpec("olmoe", H, HEADS, HEADS, D, E, KMAX, 1e-5, "full", False, False, None, 1.0)
    w = [(torch.randn(E, H, device=dev) * 0.02).to(dt) for _ in range(LAYERS)]
    for n, k in ((1, 8), (1, 4), (8, 8)):
        x = [torch.randn(n, H, device=dev).to(dt) for _ in range(LAYERS)]
        kt = torch.tensor([k], dtype=torch.int32, device=dev)
        ref = torch_route(spec, F.linear(x[0].float(), w[0].float()), kt, torch.float32)[0]
        floor = E * H * 2 / bw * 1e3
        shape = f"tokens {n}, top_k {k}"
        if n == 1:
            measure(rows, "router", shape, "engine: triton GEMV + routing kernel",
                    lambda i: tm.route(tg.gemv(x[i], w[i]), kt, KMAX, False, dt)[0], ref, floor, role="engine")
        measure(rows, "router", shape, "F.linear + routing kernel" + (" (the engine's above 1 token)" if n > 1 else ""),
                lambda i: tm.route(F.linear(x[i], w[i]), kt, KMAX, False, dt)[0], ref, floor, role="engine" if n > 1 else None)
        for warps in (4, 8):
            measure(rows, "router", shape, f"one kernel: router product + routing (w{warps})",
                    lambda i, warps=warps: tm.router_route(x[i], w[i], kt, KMAX, False, dt, warps)[0], ref, floor,
                    role="candidate")


def projections(rows, dev, dt, bw, quick):
    for label, n in (("q/k/v 2048->6144", 6144), ("output 2048->2048", 2048), ("router 2048->64", 64), ("LM head 2048->50304", 50304)):
        layers = 2 if n > 10000 else LAYERS
        w = [(torch.randn(n, H, device=dev) * 0.02).to(dt) for _ in range(layers)]
        x = [torch.randn(1, 1, H, device=dev).to(dt) for _ in range(layers)]
        ref = F.linear(x[0].float(), w[0].float())
        floor = n * H * 2 / bw * 1e3
        pick = (lambda i: i % layers)
        measure(rows, "projections", label, "torch F.linear (cuBLAS)", lambda i: F.linear(x[pick(i)], w[pick(i)]), ref, floor)
        measure(rows, "projections", label, "triton default (bn{} bk{} w{})".format(*tg.config_for(n, H)), lambda i: tg.gemv(x[pick(i)], w[pick(i)]), ref, floor)
        for bn, bk, wp in itertools.product((1, 2, 4, 8, 16, 32), (256, 512, 1024, 2048), (2, 4, 8)):
            if (quick and wp != 4) or bn * bk > 32768:
                continue
            measure(rows, "projections", label, f"triton bn{bn} bk{bk} w{wp}",
                    lambda i, bn=bn, bk=bk, wp=wp: tg.launch(x[pick(i)], w[pick(i)], bn, bk, wp), ref, floor)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="experts,router,attention,projections")
    ap.add_argument("--tag", default="", help="results file name suffix: decode_kernels_TAG.json / .md")
    ap.add_argument("--quick", action="store_true", help="a few configurations each (a smoke run)")
    ap.add_argument("--pair-tiles", default="2,4,8,16;256,1024,2048;4,8",
                    help="pairwise expert tiles swept: rows per program; columns per load; warps")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("decode_kernels.py times CUDA kernels: run it on a machine with a CUDA GPU")
    t0 = time.time()
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    bw = copy_bandwidth()
    rows: list[dict] = []
    parts = args.parts.split(",")
    if "projections" in parts:
        projections(rows, dev, dt, bw, args.quick)
    if "attention" in parts:
        attention(rows, dev, dt, args.quick)
    if "experts" in parts:
        experts(rows, dev, dt, bw, args.quick, args.pair_tiles)
    if "router" in parts:
        router(rows, dev, dt, bw)
    env = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": __import__("triton").__version__,
           "copy_bandwidth_TBps": round(bw / 1e12, 3), "total_s": round(time.time() - t0, 1),
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    md = [f"# Batch-1 decode kernels, MolmoE-1B shapes ({env['device']}, bf16, torch {env['torch']}, triton {env['triton']})", "",
          "Microseconds per call, timed as the engine runs them: one CUDA graph of 16 calls, each on its own layer's weights "
          "(no L2 reuse between calls), replay time / 16, launch gaps included. Floor = bytes read / "
          f"{env['copy_bandwidth_TBps']} TB/s (experts: the experts hit).", ""]
    for group in ("projections", "attention", "experts", "router"):
        shapes = list(dict.fromkeys(r["shape"] for r in rows if r["group"] == group))
        if not shapes:
            continue
        md += [f"## {group}", "", "| shape | reference | us | default (new) | us | fastest in the sweep | us | x floor | rel. err |",
               "|---|---|---|---|---|---|---|---|---|"]
        for s in shapes:
            sub = [r for r in rows if r["group"] == group and r["shape"] == s and "us" in r]
            ref = sub[0] if sub else {}
            dflt = next((r for r in sub if "default" in r["kernel"] and r is not ref), {})
            fast = min((r for r in sub if r["rel_err"] < 2e-2), key=lambda r: r["us"], default={})
            md.append(f"| {s} | {ref.get('kernel', '')} | {ref.get('us', '')} | {dflt.get('kernel', '')} | {dflt.get('us', '')} | "
                      f"{fast.get('kernel', '')} | {fast.get('us', '')} | {fast.get('x_floor', '')} | {fast.get('rel_err', 0):.1e} |")
        md.append("")
    cands = [r for r in rows if r.get("role") == "candidate"]
    if cands:  # what could replace an engine kernel, beside it
        md += ["## candidates against the engine's kernels", "", "| group | shape | engine | us | candidate | us | ratio | rel. err |",
               "|---|---|---|---|---|---|---|---|"]
        for c in cands:
            eng = next((r for r in rows if r.get("role") == "engine" and r["group"] == c["group"] and r["shape"] == c["shape"]), {})
            ratio = round(c["us"] / eng["us"], 3) if "us" in c and eng.get("us") else ""
            md.append(f"| {c['group']} | {c['shape']} | {eng.get('kernel', '')} | {eng.get('us', '')} | {c['kernel']} | "
                      f"{c.get('us', c.get('error', ''))} | {ratio} | {c.get('rel_err', float('nan')):.1e} |")
        md.append("")
    errors = [r for r in rows if "error" in r]
    md.append(f"{len(rows)} candidates measured, {len(errors)} failed to compile or launch; every row: decode_kernels.json.")
    write_report(args.out, f"decode_kernels_{args.tag}" if args.tag else "decode_kernels", {"env": env, "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
