"""The functional block step of the fast engine: attention over a static KV cache, up to the
experts' normalised input (the router product, routing and experts are
:func:`harness.engine.moe.run_moe`). Weights and caches are inputs, so one compiled version of
:func:`attn_block` serves every block and every knob configuration.

Numerics follow transformers' eager OLMoE/Qwen3-MoE/Mixtral code (and MolmoE's remote code): RMSNorm
in float32 then cast, RoPE cos/sin cast to the model dtype (float32 for MolmoE, :func:`rope`), softmax of the router logits in float32 over all experts,
top-``max_top_k`` selection (sorted, so the first ``top_k`` slots are exactly a top-``top_k``
selection), the routing weights of slots ``>= top_k`` zeroed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.engine.weights import LMSpec


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, scaling: float, dtype):
    """``positions`` [B, T] -> cos, sin [B, 1, T, D] in ``dtype``."""
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype)[:, None], (emb.sin() * scaling).to(dtype)[:, None]


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` [B, heads, T, D] in the precision of the tables: tables in the
    model dtype rotate in it (transformers' families); float32 tables rotate a float32 copy and
    cast back (:attr:`LMSpec.rope_fp32`, MolmoE's ``rope_full_precision``)."""
    xr = x.to(cos.dtype)
    return (xr * cos + _rotate_half(xr) * sin).to(x.dtype)


def allowed_mask(mask: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask [B, 1, T, W] for queries written at cache columns ``cols`` [T]:
    a query sees filled columns (``mask`` [B, W] = 1) at or before its own, and always itself
    (so padding queries never see an empty row and nothing turns NaN)."""
    w = torch.arange(mask.shape[1], device=mask.device)
    c = cols[:, None]
    ok = (w[None, :] <= c)[None] & (mask[:, None, :] != 0)
    return (ok | (w[None, :] == c)[None])[:, None]


def attention_bias(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """The additive form of :func:`allowed_mask` (0 or -inf in ``dtype``), made once per forward
    pass instead of once per block (what attention does with a boolean mask internally)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def add_expert_parts(x: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """The residual stream after a block's experts: ``x`` [B, T, H] plus the per-slot expert
    outputs ``parts`` [B*T, S, H] summed (in their own precision, then cast to ``x``'s dtype).
    Deferred to the start of the next block's compiled step so that the sum, the residual add
    and the next RMSNorm are one fused kernel."""
    return x + parts.sum(1).to(x.dtype).view(x.shape)


def attn_block(spec: LMSpec, x, parts, kc, vc, cos, sin, bias, cols, ln1, wqkv, wo, ln2, *qk, decode_attention=None,
               attention_max_width: int = 0, gemv=None, counters=None):
    """One block up to the experts. ``x`` [B, T, H] and ``parts`` (the previous block's expert
    outputs, :func:`add_expert_parts`; zeros for the first block); ``kc``/``vc`` [B, kvH, W, D]
    (written at ``cols``); ``bias`` [B, 1, T, W] (:func:`attention_bias`); ``wqkv`` the q, k and v
    projections stacked (one matrix product). Returns (residual stream after attention,
    normalised input of the experts [B*T, H]).
    ``decode_attention`` (:mod:`harness.engine.triton_attention`), when given, replaces PyTorch's
    attention for single-query steps over caches of up to ``attention_max_width`` columns (with
    ``counters``, its zeroed int32 buffer, :mod:`harness.engine.triton_arrive`); ``gemv``
    (:mod:`harness.engine.triton_gemv`), when given, replaces ``F.linear`` for the projections of a
    single row (batch-1 decode steps)."""
    x = add_expert_parts(x, parts)
    B, T, _ = x.shape
    linear = gemv if gemv is not None and B * T == 1 else F.linear
    H, KV, D = spec.heads, spec.kv_heads, spec.head_dim
    h = rms_norm(x, ln1, spec.eps)
    q, k, v = linear(h, wqkv).split((H * D, KV * D, KV * D), dim=-1)
    if spec.qk_norm == "full":
        q, k = rms_norm(q, qk[0], spec.eps), rms_norm(k, qk[1], spec.eps)
    if spec.clip_qkv is not None:
        q, k, v = (t.clamp(-spec.clip_qkv, spec.clip_qkv) for t in (q, k, v))
    q, k, v = q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)
    if spec.qk_norm == "head":
        q, k = rms_norm(q, qk[0], spec.eps), rms_norm(k, qk[1], spec.eps)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    kc.index_copy_(2, cols, k)
    vc.index_copy_(2, cols, v)
    if decode_attention is not None and T == 1 and kc.shape[2] <= attention_max_width:
        a = decode_attention(q.contiguous(), kc, vc, bias, D ** -0.5, counters)
    elif T > 1 and B == 1:  # one prompt, no padding, empty cache: causal attention over its own keys (flash)
        if KV != H:
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=D ** -0.5)
    else:
        keys, vals = kc, vc
        if KV != H:
            keys, vals = keys.repeat_interleave(H // KV, dim=1), vals.repeat_interleave(H // KV, dim=1)
        a = F.scaled_dot_product_attention(q, keys, vals, attn_mask=bias, scale=D ** -0.5)
    x = x + linear(a.transpose(1, 2).reshape(B, T, H * D), wo)
    return x, rms_norm(x, ln2, spec.eps).view(B * T, -1)


def route(spec: LMSpec, logits: torch.Tensor, top_k: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [N, E] -> (routing weights [N, K], expert ids [N, K]) for ``K = max_top_k``:
    softmax in float32 over all experts, the top ``K`` sorted, the weights of slots ``>= top_k``
    (a 1-element int tensor) zeroed, optionally renormalised, cast to ``dtype`` unless the family
    keeps them in float32."""
    probs = torch.softmax(logits.float(), dim=-1)
    topv, topi = torch.topk(probs, spec.max_top_k, dim=-1)
    keep = torch.arange(spec.max_top_k, device=logits.device)[None, :] < top_k
    topv = torch.where(keep, topv, torch.zeros_like(topv))
    if spec.renormalize:
        topv = topv / topv.sum(-1, keepdim=True)
    return (topv if spec.weights_in_float else topv.to(dtype)), topi
