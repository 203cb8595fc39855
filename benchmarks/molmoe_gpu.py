"""MolmoE-1B's *real* remote code (``modeling_molmoe.py`` and its config, read from a folder such
as ``../shared/molmoe-remote``) at full size with random weights, through the harness ``molmoe:``
backend and decode loop on each engine: ``fast`` (the harness engine on the remote model's own
weights) and ``eager`` (the remote ``forward``, which loops over all 64 experts per block). Per knob
configuration: prefill of a ~700-token text prompt and decode ms/token; an image prompt's vision
encoder, projector and LM prefill; the fast engine's first call (compile + capture); greedy-token
agreement of the two engines on the same weights.

Images go through Molmo's real processor where torchvision imports; otherwise through the test
suite's stand-in with the processor's output schema (``tests/molmoe_real.py``; the JSON says which).

    python benchmarks/molmoe_gpu.py --remote ../shared/molmoe-remote           # GPU, bf16, full size
    python benchmarks/molmoe_gpu.py --remote ../shared/molmoe-remote --small --device cpu --dtype float32 --decode-tokens 3 --reps 1   # dry run
    python benchmarks/molmoe_gpu.py --remote ../shared/molmoe-remote --save-checkpoint /tmp/molmoe-random   # for harness run

Prints a table and writes molmoe_gpu.json / .md to $OUT (if set) or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the processor stand-in and the small-config writer

import torch  # noqa: E402

from harness.backends import random_molmoe as rm  # noqa: E402
from harness.backends.modelconfig import find_config, load_settings  # noqa: E402
from harness.backends.molmoe import MolmoeBackend, info_from_dict  # noqa: E402
from harness.types import GenRequest  # noqa: E402
from _common import bytes_ratio, copy_bandwidth, decode_floor_ms, write_report  # noqa: E402
from knobs_gpu import IMPORTANCE  # noqa: E402

CONFIGS = ("16,8", "14,6", "12,4")


def build(remote: Path, folder: Path, small: bool, device: str, dtype):
    """The remote ``MolmoForCausalLM`` with random weights, experts created directly on ``device``
    in ``dtype`` (the class as it is: the harness's transformers-5 class is for ``from_pretrained``,
    whose weight initialisation the remote code does not support)."""
    from molmoe_real import write_checkpoint
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from harness.backends.molmoe_remote import lenient_import_scan

    if small:
        write_checkpoint(folder, weights=False)  # links to the remote files, sizes of the test checkpoint
    else:
        folder.mkdir(parents=True, exist_ok=True)
        for f in remote.iterdir():
            (folder / f.name).symlink_to(f.resolve())
    with lenient_import_scan():
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        cls = get_class_from_dynamic_module(config.auto_map["AutoModelForCausalLM"], folder)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # the 64 x 16 expert modules; the remote code puts the rest on the CPU first
            model = cls(config)
    finally:
        torch.set_default_dtype(old)
    model = model.to(device, dtype).eval()
    with torch.no_grad():
        model.model.transformer.wte.reset_parameters()  # the remote __init__ leaves the embeddings zero
        model.model.vision_backbone.pad_embed.normal_(0.0, 0.02)
    return model


def save_checkpoint(remote: Path, folder: Path, small: bool, device: str, dtype) -> None:
    from safetensors.torch import save_file

    ts = time.time()
    model = build(remote, folder, small, device, dtype)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors", metadata={"format": "pt"})
    print(f"random MolmoE checkpoint written to {folder} in {time.time() - ts:.1f} s", flush=True)


def processor_for(folder: Path):
    from transformers import AutoTokenizer

    try:
        from harness.backends.molmoe_remote import load_processor

        return load_processor(str(folder), "molmoe"), "real (MolmoProcessor)"
    except Exception as exc:  # noqa: BLE001 - torchvision missing or not importable here
        from molmoe_real import StandInProcessor

        return StandInProcessor(AutoTokenizer.from_pretrained(folder)), f"stand-in ({str(exc)[:120]})"


def text_of(backend, n_tokens: int) -> str:
    words = "the quick brown fox jumps over the lazy dog and keeps running through the field "
    text = words
    while backend.count_tokens(GenRequest(text))[0] < n_tokens:
        text += words
    return text


def median(xs):
    return round(float(statistics.median(xs)), 3) if xs else None


def measure(backend, long_text, short_text, decode_tokens, reps):
    pre, dec = [], []
    for _ in range(reps):
        pre.append(backend.generate([GenRequest(long_text)], 1)[0].timings.prefill_ms)
        dec.append(statistics.mean(backend.generate([GenRequest(short_text)], decode_tokens)[0].timings.decode_step_ms))
    return median(pre), median(dec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--remote", default=os.environ.get("MOLMOE_REMOTE") or str(ROOT.parent / "shared" / "molmoe-remote"))
    ap.add_argument("--small", action="store_true", help="the test checkpoint's sizes (a CPU dry run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--engines", default="fast,eager")
    ap.add_argument("--configs", default=";".join(CONFIGS))
    ap.add_argument("--prompt-tokens", type=int, default=700)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--save-checkpoint", metavar="DIR", help="only write the random model as a checkpoint folder "
                    "(config, links to the remote files, model.safetensors) for `harness run --model molmoe:DIR`")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    t0 = time.time()
    dtype = getattr(torch, args.dtype)
    if args.save_checkpoint:
        return save_checkpoint(Path(args.remote), Path(args.save_checkpoint), args.small, args.device, dtype)
    cuda = torch.device(args.device).type == "cuda"
    configs = [c for c in args.configs.split(";") if c]
    import transformers

    env = {"device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu", "dtype": args.dtype,
           "torch": torch.__version__, "transformers": transformers.__version__, "model": "MolmoE-1B remote code, random weights"
           + (" (small test sizes)" if args.small else ""), "prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens}
    bw = copy_bandwidth(args.device)
    env["copy_bandwidth_TBps"] = round(bw / 1e12, 3) if bw else None
    rows, agree = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "molmoe"
        ts = time.time()
        model = build(Path(args.remote), folder, args.small, args.device, dtype)
        env["build_s"] = round(time.time() - ts, 1)
        processor, env["processor"] = processor_for(folder)
        settings = load_settings(find_config("molmoe-1b"))
        info = info_from_dict(json.loads((folder / "config.json").read_text()), "molmoe-1b-random", settings)
        backends = {}
        for name in args.engines.split(","):  # both on the one model: the fast engine reads its weights in place
            ts = time.time()
            b = MolmoeBackend(model, processor, info, settings, args.device, dtype, IMPORTANCE, name)
            b.eos_token_ids = []  # random weights: decode a fixed number of tokens
            backends[name] = b
            env[f"{name}_setup_s"] = round(time.time() - ts, 2)
        print(json.dumps(env), flush=True)
        any_b = next(iter(backends.values()))
        long_text, short_text = text_of(any_b, args.prompt_tokens), text_of(any_b, 120)
        from PIL import Image

        image = Image.new("RGB", (1200, 900), (120, 80, 40))
        for name, b in backends.items():
            b.apply_knobs("16,8")
            ts = time.time()
            b.generate([GenRequest(short_text)], 4)
            env[f"{name}_first_call_s"] = round(time.time() - ts, 2)
            for cfg in configs:
                b.apply_knobs(cfg)
                nb, k = (int(x) for x in cfg.split(","))
                pre, dec = measure(b, long_text, short_text, args.decode_tokens, args.reps)
                row = {"engine": name, "knobs": cfg, "prefill_ms": pre, "decode_ms_per_token": dec}
                if bw:
                    fl = decode_floor_ms(rm.MOLMOE_1B, nb, k, bw)
                    row.update(floor_ms=round(fl, 3), x_floor=round(dec / fl, 2))
                rows.append(row)
                print(json.dumps(row), flush=True)
            b.apply_knobs("16,8")
            for _ in range(2):  # the second call: vision graphs captured (fast)
                out = b.generate([GenRequest("Describe the image.", image=image)], 1, tier="medium")[0]
            t = out.timings
            r2 = lambda v: None if v is None else round(v, 2)  # noqa: E731
            env[f"{name}_image_tier_medium"] = {"vision_ms": r2(t.vision_ms), "projector_ms": r2(t.projector_ms),
                                               "lm_prefill_ms": r2(t.lm_prefill_ms), "prefill_ms": r2(t.prefill_ms),
                                               "input_tokens": out.input_tokens, "vision_tokens": out.vision_tokens}
            print(json.dumps({name: env[f"{name}_image_tier_medium"]}), flush=True)
        if {"fast", "eager"} <= set(backends):
            reqs = {"text, batch 4": [GenRequest(text_of(any_b, 40 + 60 * i)) for i in range(4)],
                    "image, batch 1": [GenRequest("What is in the image?", image=image)]}
            for cfg in ("16,8", "12,4"):
                for label, batch in reqs.items():
                    got = {}
                    for name in ("fast", "eager"):
                        backends[name].apply_knobs(cfg)
                        got[name] = backends[name].generate_ids(batch, 16, tier="medium").tokens
                    same = sum(int(a == c) for x, y in zip(got["fast"], got["eager"]) for a, c in zip(x, y))
                    agree.append({"knobs": cfg, "prompts": label, "tokens_equal": f"{same}/{16 * len(batch)}",
                                  "first_token_equal": f"{sum(int(x[0] == y[0]) for x, y in zip(got['fast'], got['eager']))}/{len(batch)}"})
                    print(json.dumps(agree[-1]), flush=True)
    env["total_s"] = round(time.time() - t0, 1)
    md = [f"# MolmoE-1B remote code, random weights: fast against eager engine ({env['device']}, {args.dtype})", "",
          f"Batch 1; prefill of a {args.prompt_tokens}-token text prompt, decode ms/token over {args.decode_tokens} tokens "
          f"after a 120-token prompt (median of {args.reps}); floor = bytes a decode step reads (the active blocks' attention, "
          "norms, router and top_k experts, block 0 at its own top_k; the final norm, the LM head and one embedding row, not "
          f"the table) / copy bandwidth ({env['copy_bandwidth_TBps']} TB/s). Processor: "
          f"{env['processor']}.", "", "| engine | knobs | prefill ms | decode ms/token | floor ms | x floor |", "|---|---|---|---|---|---|"]
    md += [f"| {r['engine']} | {r['knobs']} | {r['prefill_ms']} | {r['decode_ms_per_token']} | {r.get('floor_ms', '')} | "
           f"{r.get('x_floor', '')} |" for r in rows]
    by = {(r["engine"], r["knobs"]): r["decode_ms_per_token"] for r in rows}
    ratios = [f"{e} {by[(e, '12,4')] / by[(e, '16,8')]:.3f}" for e in backends if (e, "12,4") in by and (e, "16,8") in by]
    if ratios:
        md += ["", f"decode(12,4)/decode(16,8): {', '.join(ratios)} (MolmoE-1B bytes ratio {bytes_ratio(rm.MOLMOE_1B, '12,4', '16,8'):.3f})"]
    md += ["", "| engine | first call s | image (tier medium): vision ms | projector ms | LM prefill ms | input tokens |",
           "|---|---|---|---|---|---|"]
    for name in backends:
        im = env.get(f"{name}_image_tier_medium", {})
        md.append(f"| {name} | {env.get(f'{name}_first_call_s')} | {im.get('vision_ms')} | {im.get('projector_ms')} | "
                  f"{im.get('lm_prefill_ms')} | {im.get('input_tokens')} |")
    if agree:
        md += ["", "| knobs | prompts | tokens equal (fast vs eager) | first tokens equal |", "|---|---|---|---|"]
        md += [f"| {a['knobs']} | {a['prompts']} | {a['tokens_equal']} | {a['first_token_equal']} |" for a in agree]
    write_report(args.out, "molmoe_gpu", {"env": env, "rows": rows, "agreement": agree}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
