"""The analytic roofline estimate: what a run shows when no fit exists for its execution mode.

Time = bytes of weights (and KV cache) read / memory bandwidth + FLOPs / peak compute, from the
loaded model's own parameter counts (vision encoder and projector, each block's dense part, one
expert, the output head) and a short micro-benchmark of this device (a large copy and a large
matrix product, about a second). It counts neither kernel launches nor framework overhead, so it
is a lower bound, labelled as such; ``harness profile`` makes a real fit.

:func:`lm_flops` and :func:`vision_flops` count the compute of a given piece of work (one
sequence at given knobs; one image at a tier) for compute rooflines such as
``benchmarks/grid_throughput.py``'s.
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
    own_vision = getattr(backend, "vision", None)
    for mod in mods:
        # a backend's own vision module (random:molmoe-1b's ``tower`` and ``w1/w2/w3``) is vision
        # whatever its parameters are called; elsewhere the names say it
        all_vision = mod is own_vision
        for name, p in mod.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            n = p.numel()
            low = name.lower()
            if all_vision or any(w in low for w in ("vision", "visual", "projector", "image")):
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


def lm_flops(counts: dict, blocks: int, top_k: int, default_top_k: int, prompt_tokens: int,
             decode_steps: int) -> dict:
    """Matmul FLOPs (2 per multiply-add) of one sequence through the language model, from
    :func:`model_counts`: ``prefill``, ``prompt_tokens`` positions through ``blocks`` active blocks
    (block 0 routes each token to ``default_top_k`` experts, the others to ``top_k``), causal
    attention, and the output head on the last position; ``decode``, ``decode_steps`` one-token
    steps, step ``j`` attending over ``prompt_tokens + j`` positions, the head on each. Norms, the
    routing softmax and sampling are left out (a few per mille)."""
    a, L, s = max(1, int(blocks)), int(prompt_tokens), max(0, int(decode_steps))
    per_token = 2 * (a * counts["dense_per_block"] + (default_top_k + (a - 1) * top_k) * counts["per_expert"])
    d, head = counts["hidden"], 2 * counts["head"]
    prefill = L * per_token + a * 2 * d * L * (L + 1) + head  # QK^T and AV: 4*d per (query, key) pair
    decode = s * (per_token + head) + a * 4 * d * (s * L + s * (s + 1) / 2)
    return {"prefill": float(prefill), "decode": float(decode)}


def vision_flops(backend, request, tier) -> dict | None:
    """Counted FLOPs of the vision tower and the projector on ``request``'s image at ``tier``
    (``torch.utils.flop_counter`` over the backend's own ``features`` and ``project``, attention in
    PyTorch's math kernel so that it is counted on every device; a backend loaded on the ``meta``
    device counts without computing): ``{"vision", "projector", "vision_tokens"}``, or None when the
    backend has no such vision part or the request no image."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    vision = getattr(getattr(backend, "step_model", None), "vision", None)
    if vision is None or not hasattr(vision, "features") or not hasattr(vision, "project") or request.image is None:
        return None
    batch, _, n_vis = backend.prepared([request], tier)
    pixels = batch.extras.get("pixel_values")
    if pixels is None:
        return None
    p = next(vision.parameters()) if isinstance(vision, torch.nn.Module) else None
    device = p.device if p is not None else backend.device
    dtype = p.dtype if p is not None else backend.dtype
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as tower:
            feats = vision.features(pixels.to(device, dtype))
        with FlopCounterMode(display=False) as proj:
            vision.project(feats)
    return {"vision": float(tower.get_total_flops()), "projector": float(proj.get_total_flops()),
            "vision_tokens": int(sum(n_vis))}


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
