"""Shared by the benchmark scripts: the repo on ``sys.path``, models by spec (``tiny:<family>``
included), device/dtype resolution, writing a report as ``<stem>.json`` + ``<stem>.md``, the
measured copy bandwidth, and the bytes a decode step reads (the decode floor of every GPU
benchmark: :func:`decode_step_bytes` / :func:`copy_bandwidth`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "benchmarks" / "results"


def pct(x, digits=1, sign="") -> str:
    """A share as a percentage for a report table; "-" for None."""
    return "-" if x is None else f"{100 * x:{sign}.{digits}f}%"

_TINY = {}


def describe(spec: str):
    """``tiny:<family>`` (a seconds-fast random model from fixtures.tiny, for CPU smoke runs)
    or any ``harness run --model`` spec."""
    if spec.startswith("tiny:"):
        return load(spec).info
    from harness import backends

    return backends.describe(spec)


def load(spec: str, **kw):
    """The backend for ``spec``; a ``tiny:`` model is built once per process."""
    if spec.startswith("tiny:"):
        from fixtures import tiny

        if spec not in _TINY:
            _TINY[spec] = tiny.backend(spec.split(":", 1)[1])
        return _TINY[spec]
    from harness import backends

    return backends.load(spec, **kw)


def resolve_setup(device: str, dtype: str, experts_impl: str | None) -> tuple[str, str, str]:
    """``--device``, ``--dtype``, ``--experts-impl`` -> (device, dtype, experts implementation)."""
    from harness.run_setup import resolve_device, resolve_dtype

    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev), experts_impl or "grouped_mm"


def write_report(results: str | Path, stem: str, report: dict, markdown: str) -> None:
    """``<results>/<stem>.json`` and ``.md``; the markdown is also printed."""
    out_dir = Path(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown)
    print(markdown)


def copy_bandwidth(device="cuda") -> float | None:
    """Measured device copy bandwidth in bytes/s (2 GiB copied 10 times after 3 warm-up copies,
    timed with CUDA events); None off CUDA. The memory floor of every GPU benchmark divides by it."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    x = torch.empty(1024**3, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize(device)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        y.copy_(x)
    e.record()
    torch.cuda.synchronize(device)
    bw = 10 * 2 * x.numel() * 2 / (s.elapsed_time(e) / 1e3)
    del x, y
    return bw


def decode_step_bytes(shape, blocks: int, top_k: int, dtype_bytes: int = 2) -> int:
    """Weight bytes one batch-1 decode step reads at knobs ``blocks,top_k`` on a MolmoE-shaped model
    (``shape``: a ``harness.backends.random_molmoe.Shape``): each active block's attention (q, k, v,
    output), its four norms (q, k, input, post-attention), its router and ``top_k`` experts (block 0
    at the model's own ``shape.top_k``); then the final norm, the LM head, and one row of the input
    embedding (the step looks up one token; the table is never read whole). The KV cache is left out."""
    h = shape.hidden
    block = 4 * h * h + 4 * h + h * shape.experts
    expert = 3 * h * shape.expert_hidden
    blocks = max(1, int(blocks))
    params = blocks * block + (shape.top_k + (blocks - 1) * int(top_k)) * expert + h + shape.vocab * h + h
    return dtype_bytes * params


def decode_floor_ms(shape, blocks: int, top_k: int, bandwidth: float) -> float:
    """The decode floor in ms per token: :func:`decode_step_bytes` over ``bandwidth`` (bytes/s)."""
    return decode_step_bytes(shape, blocks, top_k) / bandwidth * 1e3


def bytes_ratio(shape, knobs: str, base: str) -> float:
    """:func:`decode_step_bytes` at ``knobs`` over that at ``base`` (``"blocks,top_k"`` each): what
    a measured ratio of their decode times would be at the floor."""
    a, b = (tuple(int(x) for x in k.split(",")[:2]) for k in (knobs, base))
    return decode_step_bytes(shape, *a) / decode_step_bytes(shape, *b)


def cuda_median_ms(fn, reps: int = 30, warm: int = 0) -> float:
    """Median of ``reps`` calls of ``fn`` (after ``warm`` untimed ones), each between CUDA events
    and synchronised: device time of one call."""
    import statistics

    import torch

    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return statistics.median(ts)


def cuda_graph_median_ms(fn, reps: int = 200) -> float:
    """Median ms of ``fn`` replayed from a CUDA graph (no launch overhead, as in the engine): three
    warm-up calls on a side stream (compilation, autotuning), one capture, five untimed replays."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return cuda_median_ms(g.replay, reps, warm=5)
