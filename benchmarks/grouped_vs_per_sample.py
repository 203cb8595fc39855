"""Grouped execution vs per-sample execution of policy-chosen knobs.

The old way: knobs are global model state, so each sample is run alone -- apply its knobs,
generate at batch 1, next sample. The harness way (``harness.runner.Runner``): the policy chooses
knobs for every sample, samples that chose the same configuration form a group, each group is
ordered by prompt length and run in batches (left padding), and the loaded model switches
configurations between groups without reloading.

Setup: N synthetic samples with MolmoE-like prompt lengths (uniform in 100-700 text + vision
tokens, calibrated on the backend's tokenizer; about half carry an image, which at the ``low``
tier costs 432 vision tokens on random:molmoe-1b, the rest are text-only), a
``random`` policy over a knob space of 6-12 configurations, greedy decoding of up to
``--max-new-tokens`` tokens. Reported:

- throughput (samples/s) of per-sample execution, timed on the first ``--per-sample-subset``
  samples and extrapolated (throughput of a sample stream does not depend on its length once
  the subset is representative: both use the same generated samples);
- throughput of grouped execution through the real runner at each ``--batch-sizes``, on all N
  samples, wall clock of ``Runner.run`` (policy, token counting, records included);
- the speed-up over per-sample execution;
- greedy agreement between batch 1 and batch ``--agreement-batch`` on the per-sample subset
  (exact match of the generated text, and the share of identical leading characters).

Usage (GPU)::

    PYTHONPATH=. python benchmarks/grouped_vs_per_sample.py --model random:molmoe-1b --device cuda --dtype bfloat16

CPU smoke run with a tiny real transformers model (seconds)::

    python benchmarks/grouped_vs_per_sample.py --tiny   # random:molmoe-1b code, tiny shape, CPU fp32

Writes ``benchmarks/results/grouped_vs_per_sample[-TAG].json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.knobs import Knobs  # noqa: E402
from harness.types import GenRequest, Sample  # noqa: E402

WORDS = ("what is the color of the object near left side picture how many people are there in this image "
         "which animal appears small large red blue green table chair window door street car tree sky").split()


class BenchTask:
    """A bare task: the prompt is the question; no metric (random weights answer nothing)."""

    name = "bench"
    metric = None
    max_new_tokens = 16

    def prompt(self, sample: Sample, style=None) -> str:
        return sample.question

    def postprocess(self, text: str) -> str:
        return text.strip()

    def metric_item(self, sample: Sample, prediction: str) -> dict:
        return {"id": sample.id, "prediction": prediction, "references": list(sample.references or [])}


def make_samples(backend, n: int, seed: int, tokens: tuple[int, int], tier: str | None,
                 image_share: float = 0.5) -> list[Sample]:
    """Synthetic samples whose prompt (text + vision tokens at ``tier``) is uniform in ``tokens``.

    Calibrated on the backend's own tokenizer: a question of ``w`` words costs about
    ``overhead + w * per_word`` text tokens. A sample carries a random-noise image (336x336, one
    crop's worth) when the draw says so and the image's vision tokens leave room for a question."""
    from PIL import Image

    rng = random.Random(seed)
    probe = " ".join(rng.choice(WORDS) for _ in range(100))
    t100, _ = backend.count_tokens(GenRequest(probe), tier)
    t0, _ = backend.count_tokens(GenRequest("?"), tier)
    per_word = max((t100 - t0) / 100.0, 1e-3)
    image = Image.frombytes("RGB", (336, 336), rng.randbytes(336 * 336 * 3))
    _, vision = backend.count_tokens(GenRequest("?", image), tier)
    out = []
    for i in range(n):
        target = rng.randint(*tokens)
        with_image = rng.random() < image_share and target - vision >= t0 + 5 * per_word
        text_target = target - (vision if with_image else 0)
        words = max(1, round((text_target - t0) / per_word))
        q = " ".join(rng.choice(WORDS) for _ in range(words)) + "?"
        img = Image.frombytes("RGB", (336, 336), rng.randbytes(336 * 336 * 3)) if with_image else None
        out.append(Sample(id=f"b{i:04d}", task="bench", question=q, image=img, references=["x"]))
    return out


class MemoryRecord:
    """What ``Runner.run`` writes into, kept in memory (the benchmark times execution, not disk)."""

    def __init__(self):
        self.finished: dict[str, dict] = {}
        self.lines: list[dict] = []

    def append(self, line: dict) -> None:
        self.lines.append(line)
        self.finished[line["id"]] = line


def sync(backend) -> None:
    dev = str(getattr(backend, "device", "cpu"))
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def per_sample(backend, samples, knobs_of, max_new) -> tuple[float, dict[str, str], int]:
    """The old way: apply each sample's knobs, generate it alone. Returns (seconds, texts, tokens)."""
    texts, n_tok = {}, 0
    sync(backend)
    t0 = time.perf_counter()
    for s in samples:
        k = knobs_of[s.id]
        backend.apply_knobs(k)
        out = backend.generate([GenRequest(prompt=s.question, image=s.image, sample_id=s.id)], max_new, k.tier)[0]
        texts[s.id] = out.text
        n_tok += out.output_tokens
    sync(backend)
    return time.perf_counter() - t0, texts, n_tok


def grouped(backend, task, policy, samples, batch_size, max_new, seed):
    from harness.runner import Runner, RunOptions

    opts = RunOptions(batch_size=batch_size, max_new_tokens=max_new, seed=seed)
    runner = Runner(backend, task, None, policy, None, opts)
    rec = MemoryRecord()
    sync(backend)
    t0 = time.perf_counter()
    runner.run(rec, samples)
    sync(backend)
    dt = time.perf_counter() - t0
    failed = [ln for ln in rec.lines if ln.get("error")]
    if failed:
        raise SystemExit(f"grouped run at batch {batch_size}: {len(failed)} samples failed, e.g. {failed[0]['error']}")
    texts = {ln["id"]: ln["raw_output"] for ln in rec.lines}
    n_tok = sum(int(ln["output_tokens"] or 0) for ln in rec.lines)
    n_batches = len({ln["batch_id"] for ln in rec.lines})
    switches = len({ln["config"] for ln in rec.lines})
    return dt, texts, n_tok, n_batches, switches, runner.timing


def agreement(a: dict[str, str], b: dict[str, str]) -> dict:
    ids = sorted(set(a) & set(b))
    exact = sum(a[i] == b[i] for i in ids)
    prefix = []
    for i in ids:
        x, y = a[i], b[i]
        m = 0
        while m < min(len(x), len(y)) and x[m] == y[m]:
            m += 1
        prefix.append(1.0 if x == y else m / max(len(x), len(y)))
    return {"n": len(ids), "exact": exact, "exact_rate": exact / len(ids) if ids else None,
            "mean_common_prefix": sum(prefix) / len(prefix) if prefix else None}


def load_backend(args):
    if args.tiny:  # random:molmoe-1b's code path at a CPU-sized shape
        from harness.backends import random_molmoe as rm
        from harness.backends.modelconfig import find_config, load_settings

        settings = load_settings(find_config("random-molmoe-1b"))
        info = rm.describe("random:molmoe-1b (tiny shape)", settings, rm.TINY)
        import torch

        return rm.load(info, settings, "cpu", torch.float32, experts_impl=args.experts_impl, shape=rm.TINY)
    from harness.backends import load

    return load(args.model, device=args.device, dtype=args.dtype, experts_impl=args.experts_impl, compile=args.compile)


def knob_space(args, info) -> list[Knobs]:
    from harness.policies import load_knob_space
    from harness.policies.knob_space import default_knob_space

    if args.knob_space:
        return load_knob_space(args.knob_space, info)
    grid = default_knob_space(info)
    rng = random.Random(args.seed)
    return sorted(rng.sample(grid, min(8, len(grid))))


def device_name(backend) -> str:
    dev = str(getattr(backend, "device", "cpu"))
    if dev.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(dev))
    return f"CPU ({platform.processor() or platform.machine()})"


def benchmark(backend, args, batch_sizes: list[int]) -> dict:
    """Run both modes on a loaded backend; returns the result document (no files written)."""
    from harness.policies import PolicyContext, build

    info = backend.info
    if args.knob_space is None and info.n_blocks == 16:
        args.knob_space = "bench-low"
    space = knob_space(args, info)
    ctx = PolicyContext(model_info=info, knob_space=space, estimator=None, accuracy_table=None, seed=args.seed,
                        max_new_tokens=args.max_new_tokens)
    policy = build("random", {"seed": str(args.seed)}, ctx)

    tier = space[0].tier
    lo, hi = (int(x) for x in args.prompt_tokens.split(","))
    samples = make_samples(backend, args.n, args.seed, (lo, hi), tier)
    task = BenchTask()
    chosen = policy.choose([_pinput(backend, s, info) for s in samples])
    knobs_of = {s.id: k for s, k in zip(samples, chosen)}
    lengths = sorted(sum(backend.count_tokens(GenRequest(s.question, s.image), knobs_of[s.id].tier)) for s in samples)
    n_configs = len(set(chosen))

    # warm-up: every configuration once at batch 1 and at the largest batch (kernels, allocator)
    warm = samples[: max(batch_sizes)]
    for k in sorted(set(chosen)):
        backend.apply_knobs(k)
        backend.generate([GenRequest(warm[0].question, warm[0].image)], 2, k.tier)
    for b in sorted(set(batch_sizes)):
        backend.apply_knobs(chosen[0])
        backend.generate([GenRequest(s.question, s.image) for s in warm[:b]], 2, chosen[0].tier)
    sync(backend)

    subset = samples[: args.per_sample_subset]
    ps_s, ps_texts, ps_tok = per_sample(backend, subset, knobs_of, args.max_new_tokens)
    ps_tput = len(subset) / ps_s
    switches = sum(1 for a, b in zip(subset, subset[1:]) if knobs_of[a.id] != knobs_of[b.id]) + 1
    rows = [{"mode": "per-sample (batch 1, knobs applied per sample)", "batch_size": 1, "samples": len(subset),
             "seconds": ps_s, "samples_per_s": ps_tput, "speedup": 1.0, "batches": len(subset),
             "config_switches": switches, "output_tokens": ps_tok, "extrapolated_seconds_for_n": args.n / ps_tput}]
    texts_at = {}
    for b in batch_sizes:
        dt, texts, n_tok, n_batches, n_groups, timing = grouped(backend, task, policy, samples, b, args.max_new_tokens, args.seed)
        texts_at[b] = texts
        rows.append({"mode": f"grouped (batch {b})", "batch_size": b, "samples": len(samples), "seconds": dt,
                     "samples_per_s": len(samples) / dt, "speedup": (len(samples) / dt) / ps_tput, "batches": n_batches,
                     "config_switches": n_groups, "output_tokens": n_tok,
                     "model_share": (timing.get("model_ms", 0.0) / 1000.0) / dt if dt > 0 else None})
    agree = agreement(ps_texts, texts_at[args.agreement_batch])
    result = {
        "benchmark": "grouped_vs_per_sample",
        "model": args.model if not args.tiny else "random:molmoe-1b at a tiny shape (CPU smoke run)",
        "experts_impl": getattr(backend, "experts_impl", args.experts_impl), "compile": bool(args.compile),
        "device": str(backend.device), "device_name": device_name(backend), "dtype": args.dtype,
        "n_samples": len(samples), "per_sample_subset": len(subset), "max_new_tokens": args.max_new_tokens,
        "policy": {"name": "random", "seed": args.seed, "knob_space": [str(k) for k in space],
                   "configs_used": n_configs},
        "prompt_tokens": {"min": lengths[0], "p50": lengths[len(lengths) // 2], "max": lengths[-1],
                          "mean": sum(lengths) / len(lengths)},
        "rows": rows,
        "agreement_batch1_vs_batch": {"batch_size": args.agreement_batch, **agree},
        "notes": [
            f"per-sample throughput timed on the first {len(subset)} samples and extrapolated to {len(samples)}",
            "grouped throughput: wall clock of harness.runner.Runner.run over all samples (policy, token counting, "
            "grouping, padding and record lines included; records kept in memory)",
            "outputs are greedy; both modes use the same max_new_tokens and stop at EOS",
            f"experts implementation {getattr(backend, 'experts_impl', args.experts_impl)}, "
            f"{'static cache + torch.compile' if args.compile else 'no compilation'} (harness run defaults)",
        ] + ([f"{args.model} has random weights: the agreement figure shows how batching perturbs bf16 numerics "
              "on this shape, not how often a trained model's answers flip"] if str(args.model).startswith("random:") else []),
        "versions": _versions(),
    }
    return result


def parse_args(argv=None) -> tuple[argparse.Namespace, list[int]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tiny", action="store_true", help="CPU fp32 smoke run: random:molmoe-1b's code at a tiny shape")
    ap.add_argument("--experts-impl", default="grouped_mm", help="eager, grouped_mm or batched_mm (as harness run)")
    ap.add_argument("--compile", action="store_true", help="static cache + torch.compile (as harness run --compile)")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--per-sample-subset", type=int, default=64)
    ap.add_argument("--batch-sizes", default="8,32,64")
    ap.add_argument("--agreement-batch", type=int, default=32)
    ap.add_argument("--knob-space", default=None, help="NAME or FILE.toml (default: bench-low for 16-block models)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", default="100,700", help="LO,HI: prompt length (text + vision tokens) range")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None, help="suffix of the result files (default: the device kind)")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.tiny:
        args.device, args.dtype = "cpu", "float32"
        args.n = min(args.n, 48) if args.n == 512 else args.n
        args.per_sample_subset = min(args.per_sample_subset, 16)
        if args.batch_sizes == "8,32,64":
            args.batch_sizes = "4,8,16"
        if args.agreement_batch == 32:
            args.agreement_batch = 8
        args.max_new_tokens = min(args.max_new_tokens, 8)
        if args.prompt_tokens == "100,700":
            args.prompt_tokens = "20,200"  # keep the CPU run short
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.agreement_batch not in batch_sizes:
        batch_sizes.append(args.agreement_batch)
    return args, batch_sizes


def main(argv=None) -> int:
    args, batch_sizes = parse_args(argv)
    t_load = time.perf_counter()
    backend = load_backend(args)
    load_s = time.perf_counter() - t_load
    result = benchmark(backend, args, batch_sizes)
    result["load_seconds"] = load_s
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = args.tag or ("cpu-tiny" if args.tiny else _slug(result["device_name"]))
    stem = out_dir / f"grouped_vs_per_sample-{tag}"
    md = to_markdown(result)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


def _pinput(backend, s: Sample, info):
    from harness.policies import PolicyInput

    req = GenRequest(s.question, s.image)
    vt, text = {}, 0
    for tier in (info.tiers or ()):
        text, v = backend.count_tokens(req, tier)
        vt[tier] = v
    return PolicyInput(s.id, s.task, s.question, s.image_size, text, vt, None, {})


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["python"] = platform.python_version()
    return out


def to_markdown(r: dict) -> str:
    lines = [f"# Grouped vs per-sample execution: {r['model']} on {r['device_name']} ({r['dtype']})", "",
             f"{r['n_samples']} samples, prompt tokens (text + vision) min {r['prompt_tokens']['min']}, "
             f"median {r['prompt_tokens']['p50']}, max {r['prompt_tokens']['max']}; policy `random` over "
             f"{len(r['policy']['knob_space'])} configurations ({r['policy']['configs_used']} used); greedy, "
             f"max {r['max_new_tokens']} new tokens.", "",
             "| mode | samples timed | seconds | samples/s | speed-up vs per-sample | batches | config switches |",
             "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['mode']} | {row['samples']} | {row['seconds']:.2f} | {row['samples_per_s']:.2f} | "
                     f"{row['speedup']:.1f}x | {row['batches']} | {row['config_switches']} |")
    a = r["agreement_batch1_vs_batch"]
    lines += ["", f"Greedy agreement, batch 1 vs batch {a['batch_size']} ({r['dtype']}, {a['n']} samples): "
              f"{a['exact']}/{a['n']} identical outputs ({100 * (a['exact_rate'] or 0):.1f}%), "
              f"mean shared prefix {100 * (a['mean_common_prefix'] or 0):.1f}% of the output.", ""]
    lines += [f"- {n}" for n in r["notes"]]
    lines.append(f"- versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
