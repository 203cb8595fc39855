"""Where one fast-engine decode step spends its time: the step as the decode loop measures it,
the step's CUDA graph replayed alone (with the state restore after it, a few copies), and the
kernels of one step by CUDA time (inside the graph under torch.profiler on CUDA; on the CPU the
steps run without graphs).

    python benchmarks/engine_profile.py                    # GPU, random:molmoe-1b, bf16
    python benchmarks/engine_profile.py --shape tiny --device cpu --dtype float32   # dry run

Prints a table and writes engine_profile.json / .md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.backends import random_molmoe as rm  # noqa: E402
from harness.backends.modelconfig import find_config, load_settings  # noqa: E402
from harness.types import GenRequest  # noqa: E402
from _common import cuda_median_ms  # noqa: E402


def _profiled(fn, cuda: bool):
    """(kernel name, calls, device microseconds) of one call of ``fn`` (host ops on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        fn()
    out = []
    for e in prof.key_averages():
        if cuda:
            if getattr(e, "device_type", None) is None or str(e.device_type).endswith("CPU"):
                continue
            us = getattr(e, "self_device_time_total", 0) or 0
        else:
            us = e.self_cpu_time_total
        if us > 0:
            out.append((e.key, e.count, float(us)))
    return out


def _prefill_kernels(backend, n_tokens: int, cuda: bool, top: int) -> list[dict]:
    """Kernels of one ``n_tokens`` text prefill by device time."""
    from harness.types import GenRequest

    text = " ".join(["word"] * n_tokens)
    while len(text) > 1 and sum(backend.count_tokens(GenRequest(text))) > n_tokens:  # any tokenizer: trim to n
        text = text[: max(1, len(text) * n_tokens // sum(backend.count_tokens(GenRequest(text))))]
    req = [GenRequest(text)]
    backend.generate(req, 1)
    rows = sorted(_profiled(lambda: backend.generate(req, 1), cuda), key=lambda r: -r[2])[:top]
    return [{"name": n[:90], "calls": c, "us": round(t, 1)} for n, c, t in rows]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("molmoe-1b", "tiny"), default="molmoe-1b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--configs", default="16,8;16,2;12,4")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--prefill-tokens", type=int, default=700, help="also list the kernels of one prefill this long (0: no)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    shape = rm.MOLMOE_1B if args.shape == "molmoe-1b" else rm.TINY
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    settings = load_settings(find_config("random-molmoe-1b"))
    info = rm.describe("random:molmoe-1b", settings, shape)
    backend = rm.load(info, settings, args.device, dtype, None, "grouped_mm", engine="fast", shape=shape)
    backend.eos_token_ids = []
    step_model = backend.step_model
    cuda = torch.device(args.device).type == "cuda"
    req = [GenRequest("the quick brown fox jumps over the lazy dog " * 3)]
    rows, kernels = [], {}
    for cfg in [c for c in args.configs.split(";") if c]:
        backend.apply_knobs(cfg)
        backend.generate(req, 8)
        loop = statistics.median(backend.generate(req, 32)[0].timings.decode_step_ms)
        row = {"knobs": cfg, "decode_loop_ms_per_step": round(loop, 4)}
        if cuda and step_model.cuda_graphs:
            # the decode step's graph (bookkeeping included) replayed alone, then its kernels under the
            # profiler; the loop's state is put back between calls so the replays stay inside the cache
            graph, _ = next(v for k, v in step_model._graphs.graphs.items()
                            if k[0] == "greedy" and k[1] == backend.active_blocks and k[2] == 1)
            cache = next(c for (r, _w), c in step_model._caches.items() if r == 1)
            state = step_model.loop_state(cache)
            saved = state.snapshot()

            def replay():
                graph.replay()
                with torch.inference_mode():  # the state's tensors were made in inference mode
                    state.restore(saved)

            row["graph_replay_ms"] = round(cuda_median_ms(replay, reps=50), 4)
            per = {name: (calls, us) for name, calls, us in _profiled(lambda: [replay() for _ in range(8)], cuda)}
        else:
            # decode steps under the profiler: kernels by device time per step, from the difference
            # between a prompt + 9 tokens and the same prompt + 1 token (the prompt cancels)
            per = {}
            for n_tok, sign in ((9, 1), (1, -1)):
                for name, calls, us in _profiled(lambda n=n_tok: backend.generate(req, n), cuda):
                    c, t = per.get(name, (0, 0.0))
                    per[name] = (c + sign * calls, t + sign * us)
        top = sorted(((n, c / 8, t / 8) for n, (c, t) in per.items() if t > 0.5 and c > 0), key=lambda r: -r[2])[: args.top]
        kernels[cfg] = [{"name": n[:90], "calls_per_step": round(c, 2), "us_per_step": round(t, 2)} for n, c, t in top]
        row["kernels_per_step"] = round(sum(c for n, c, _ in top), 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    prefill = {}
    if args.prefill_tokens:
        backend.apply_knobs(args.configs.split(";")[0])
        prefill = _prefill_kernels(backend, args.prefill_tokens, cuda, args.top)
    env = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__, "shape": args.shape,
           "moe_kernel": step_model.moe_kernel}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_profile.json").write_text(json.dumps({"env": env, "rows": rows, "kernels": kernels, "prefill_kernels": prefill}, indent=1))
    md = [f"# Fast-engine decode step, where the time goes ({env['device']}, {args.dtype}, batch 1)", "",
          "| knobs | decode loop ms/step | graph replay + state restore ms | kernels per step |", "|---|---|---|---|"]
    md += [f"| {r['knobs']} | {r['decode_loop_ms_per_step']} | {r.get('graph_replay_ms', '')} | {r.get('kernels_per_step', '')} |" for r in rows]
    for cfg, ks in kernels.items():
        md += ["", f"Kernels of one decode step, {cfg} (device time per step; in the graph on CUDA, with the state restore's copies):", "",
               "| kernel | calls per step | us per step |", "|---|---|---|"]
        md += [f"| {k['name']} | {k['calls_per_step']} | {k['us_per_step']} |" for k in ks]
    if prefill:
        md += ["", f"Kernels of one {args.prefill_tokens}-token prefill, {args.configs.split(';')[0]}:", "",
               "| kernel | calls | us |", "|---|---|---|"] + [f"| {k['name']} | {k['calls']} | {k['us']} |" for k in prefill]
    (out / "engine_profile.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
