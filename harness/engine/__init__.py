"""Execution engines behind the harness decode loop.

- ``eager``: the model's own transformers forward with a growing cache (any supported family);
- ``fast``: :class:`harness.engine.step.FastStepModel`, a functional block step whose weights,
  caches and ``top_k`` are inputs: one compiled step for every knob configuration, CUDA graphs per
  (active blocks, batch bucket, cache width) on GPU, no compilation when knobs change;
- ``auto`` (the default): ``fast`` on CUDA, ``eager`` on the CPU (and ``eager`` wherever the fast
  engine does not cover the model, with a warning).
"""

from __future__ import annotations

import os
import sys

import torch

from harness.errors import HarnessError

ENGINES = ("auto", "fast", "eager")


def check(name: str) -> str:
    if name not in ENGINES:
        raise HarnessError(f"unknown engine '{name}'; use one of {', '.join(ENGINES)}")
    return name


def wanted(name: str, device) -> str:
    """``auto`` -> ``fast`` on CUDA, ``eager`` elsewhere (before the model is looked at)."""
    check(name)
    if name == "auto":
        return "fast" if torch.device(device).type == "cuda" else "eager"
    return name


FAST_FAMILIES = ("olmoe", "qwen3_moe", "mixtral", "molmoe")  # families the weights adapters read (the first three also under llava+)


def covers(family: str) -> bool:
    """Whether the fast engine covers a model family (``ModelInfo.family``), from configs only."""
    base = family.split(" ")[0]
    base = base[len("llava+"):] if base.startswith("llava+") else base
    return base in FAST_FAMILIES


def resolve(name: str, device, family: str) -> str:
    """The engine a run will use ("fast" or "eager"), decided before any weights load. An explicit
    ``fast`` for a family the engine does not cover is a :class:`HarnessError`."""
    want = wanted(name, device)
    if want == "fast" and not covers(family):
        if name == "fast":
            raise HarnessError(f"the fast engine does not cover the '{family}' family (it covers "
                               f"{', '.join(FAST_FAMILIES)} and LLaVA with one of them); use --engine eager or auto")
        return "eager"
    return want


def start_compile_workers(engine: str, device) -> bool:
    """Start torch inductor's compile workers now, for a CUDA run of the fast engine: the moment a
    run resolves its engine, before its data and weights load. torch starts them at the first
    compilation otherwise, and where its caches already hold the compiled code (any run after the
    first on a machine) that compilation is over within seconds: the workers' start-up (a process
    importing torch, then one worker per CPU) then ran into the first samples of the run loop, on
    the cores its host preparation uses. Returns whether they were started; never fails a run."""
    if engine != "fast" or torch.device(device).type != "cuda":
        return False
    try:
        from torch._inductor.async_compile import maybe_warm_pool

        maybe_warm_pool()
        return True
    except Exception:  # noqa: BLE001 - an optimisation of the start-up order, not a requirement
        return False


def configure_attention(device) -> str | None:
    """Attention kernels for a CUDA run, set once before any model code runs or compiles.

    cuDNN's attention (which PyTorch prefers on Hopper) builds an execution plan for every new
    input shape: on an H200 the first prefill of each new prompt length paid 40-70 ms for it
    inside the measured region, so a run's per-sample prefill times spread 3x with the prompt
    lengths seen before (benchmarks/results/prefill_spread_scienceqa.md). The harness switches
    it off, leaving PyTorch's flash and memory-efficient kernels, which need no per-shape plan;
    ``HARNESS_CUDNN_SDPA=1`` keeps it. Returns what was decided (None off CUDA)."""
    if torch.device(device).type != "cuda":
        return None
    keep = os.environ.get("HARNESS_CUDNN_SDPA", "") == "1"
    torch.backends.cuda.enable_cudnn_sdp(keep)
    return "cudnn+flash+efficient" if keep else "flash+efficient (cuDNN off)"


def variant(engine: str, device) -> str:
    """The engine as latency fits are keyed by it: its name, plus every kernel override set in the
    environment that acts on it (``fast+attn=triton``; the table is
    :data:`harness.latency.fit_files.KERNEL_OVERRIDES`), so that a fit made with other kernels is another
    execution mode, never used silently."""
    from harness.latency.fit_files import KERNEL_OVERRIDES

    cuda = torch.device(device).type == "cuda"
    parts = [f"{short}={os.environ[var]}" for var, short, engines, cuda_only in KERNEL_OVERRIDES
             if os.environ.get(var) and engine in engines and (cuda or not cuda_only)]
    return "+".join([engine] + parts)


def build(name: str, device, hf_step, switch, model_name: str):
    """-> (step model, engine name actually used). ``hf_step`` is the eager step model; the fast
    engine takes its weights (``engine_weights``), token embedding (``embed``) and prompt
    embedding with the image features in (``embed_inputs``) from it."""
    from harness.engine.weights import Unsupported

    configure_attention(device)
    want = wanted(name, device)
    if want == "eager":
        return hf_step, "eager"
    try:
        from harness.engine.step import FastStepModel

        if not all(hasattr(hf_step, a) for a in ("engine_weights", "embed", "embed_inputs")):
            raise Unsupported("no fast-engine weights adapter for this model family")
        return FastStepModel(hf_step, switch), "fast"
    except (Unsupported, ImportError) as exc:
        if name == "fast":
            raise HarnessError(f"{model_name}: the fast engine cannot run this model ({exc}); use --engine eager")
        print(f"warning: {model_name}: the fast engine cannot run this model ({exc}); using the eager engine", file=sys.stderr)
        return hf_step, "eager"
