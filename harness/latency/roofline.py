"""The analytic roofline estimate: what a run shows when no fit exists for its execution mode.

Time = bytes of weights (and KV cache) read / memory bandwidth + FLOPs / peak compute, from the
loaded model's own parameter counts (vision encoder and projector, each block's dense part, one
expert, the output head) and a short micro-benchmark of this device (a large copy and a large
matrix product, about a second). It counts neither kernel launches nor framework overhead, so it
is a lower bound, labelled as such; ``harness profile`` makes a real fit.
"""

from __future__ import annotations

import re
import time

from harness.latency.estimator import LinearEstimator
from harness.latency.linear_model import DEFAULT_N_EXPERTS

_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _modules(backend):
    import torch

    seen = []
    for attr in ("model", "lm_model", "vision"):
        m = getattr(backend, attr, None)
        if isinstance(m, torch.nn.Module) and all(m is not s for s in seen):
            seen.append(m)
    return seen


def n_experts_of(backend, info) -> int:
    """Experts per block: the model info's, else its config's (``num_experts``, ``num_local_experts``)."""
    n = getattr(info, "n_experts", None)
    if n:
        return int(n)
    for mod in _modules(backend):
        cfg = getattr(mod, "config", None)
        for c in (getattr(cfg, "text_config", None), cfg):
            for attr in ("num_experts", "num_local_experts", "moe_num_experts"):
                if getattr(c, attr, None):
                    return int(getattr(c, attr))
    return DEFAULT_N_EXPERTS


def model_counts(backend, n_experts: int) -> dict | None:
    """Parameter counts by role, or None when the backend exposes no torch modules."""
    mods = _modules(backend)
    if not mods:
        return None
    vis = dense = experts = head = 0
    blocks: set = set()
    kv_dim = hidden = 0
    seen: set = set()
    for mod in mods:
        for name, p in mod.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            n = p.numel()
            low = name.lower()
            if any(w in low for w in ("vision", "visual", "projector", "image")):
                vis += n
            elif "experts" in low:
                experts += n
            elif _BLOCK.search(name):
                blocks.add(int(_BLOCK.search(name).group(1)))
                dense += n
                if low.endswith(("k_proj.weight", "v_proj.weight")):
                    kv_dim += p.shape[0]
                if low.endswith("q_proj.weight"):
                    hidden = max(hidden, p.shape[1])
            elif "lm_head" in low or "embed_tokens" in low or "wte" in low:
                head = max(head, n)  # tied or not, one vocab x hidden matrix is read per step
    n_blocks = max(1, len(blocks))
    if experts == 0:
        return None
    return {"vision": vis, "dense_per_block": dense / n_blocks, "per_expert": experts / n_blocks / n_experts,
            "head": head, "kv_dim_per_block": kv_dim / n_blocks, "hidden": hidden, "blocks": n_blocks}


def device_peaks(device: str, dtype) -> dict:
    """Measured copy bandwidth (bytes/ms) and matmul throughput (FLOP/ms) on ``device`` in ``dtype``."""
    import torch

    from harness.latency.measure import synchronize

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    nbytes = (256 if cuda else 32) << 20
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=dev)
    y = torch.empty_like(x)
    best_copy = float("inf")
    for _ in range(3):
        synchronize(dev)
        t0 = time.perf_counter()
        y.copy_(x)
        synchronize(dev)
        best_copy = min(best_copy, time.perf_counter() - t0)
    n = 4096 if cuda else 512
    a = torch.randn(n, n, device=dev).to(dtype)
    best_mm = float("inf")
    for _ in range(3):
        synchronize(dev)
        t0 = time.perf_counter()
        a @ a
        synchronize(dev)
        best_mm = min(best_mm, time.perf_counter() - t0)
    return {"bandwidth_bytes_per_ms": 2 * nbytes / (best_copy * 1e3), "flops_per_ms": 2 * n ** 3 / (best_mm * 1e3)}


def roofline_estimator(backend, info, key=None) -> LinearEstimator | None:
    """The roofline as a :class:`LinearEstimator` over the built-in features (sum of memory and
    compute time per term, no overlap, no overheads). None when the model's shape is unknown."""
    import torch

    n_experts = n_experts_of(backend, info)
    c = model_counts(backend, n_experts)
    if c is None:
        return None
    dtype = getattr(backend, "dtype", torch.float32)
    dtype = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype).replace("torch.", ""), torch.float32)
    beta = torch.empty(0, dtype=dtype).element_size()
    peaks = device_peaks(str(getattr(backend, "device", "cpu")), dtype)
    bw, fl = peaks["bandwidth_bytes_per_ms"], peaks["flops_per_ms"]
    k0 = int(getattr(info, "default_top_k", 8) or 8)  # block 0 keeps the model's own top_k
    mem = lambda params: params * beta / bw  # noqa: E731
    pre = [mem(c["vision"] + c["head"] + k0 * c["per_expert"]), 2 * c["vision"] / fl,
           mem(c["dense_per_block"]), 2 * c["dense_per_block"] / fl, 2 * c["per_expert"] / fl, mem(c["per_expert"]),
           2 * c["hidden"] * 1000 / fl, 0.0]
    dec = [mem(c["head"] + k0 * c["per_expert"]), mem(c["dense_per_block"]), mem(c["per_expert"]),
           2 * c["dense_per_block"] / fl, 2 * c["per_expert"] / fl, c["kv_dim_per_block"] * beta / bw + 4 * c["hidden"] / fl,
           0.0]
    est = LinearEstimator(pre, dec, name=f"roofline:{getattr(info, 'name', 'model')} (analytic lower bound, not a fit)",
                          n_experts=n_experts, meta={"peaks": peaks, "counts": c, "key": key.to_dict() if key else None})
    est.describe = lambda: {"name": est.name, "kind": "roofline", "key": est.meta["key"], "peaks": peaks,
                            "note": "weights and KV bytes / measured bandwidth + FLOPs / measured peak; no overheads"}
    return est
