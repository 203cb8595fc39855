"""Weights of a transformers MoE language model as plain tensors, for the fast engine.

Nothing is copied: every tensor is a detached view of the loaded module's parameter, so the
engine and the eager path share one set of weights. The one rearrangement: each block's q, k and
v projections are stacked into one matrix (one matrix product per block instead of three) and the
module's three parameters are re-pointed at views of it, so memory does not grow. The text families covered are the ones whose
blocks are "pre-norm attention + top-k routed SwiGLU experts" in transformers' fused-expert layout
(``mlp.gate.weight`` ``[E, H]``, ``mlp.experts.gate_up_proj`` ``[E, 2I, H]``,
``mlp.experts.down_proj`` ``[E, H, I]``): OLMoE (q/k RMSNorm over the whole projection, no
renormalisation of the top-k weights), Qwen3-MoE (q/k RMSNorm per head, renormalised) and Mixtral
(no q/k norm, renormalised). Anything else raises :class:`Unsupported` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class Unsupported(Exception):
    """The model cannot run on the fast engine (the message says why)."""


@dataclass(frozen=True)
class LMSpec:
    """Static facts of the language model (constants of the compiled code, not inputs)."""

    family: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    max_top_k: int
    eps: float
    qk_norm: str  # "full" (OLMoE), "head" (Qwen3-MoE) or "none" (Mixtral)
    renormalize: bool  # divide the kept top-k weights by their sum
    weights_in_float: bool  # routing weights stay float32 (Mixtral) instead of the model dtype
    clip_qkv: float | None
    rope_scaling: float


@dataclass
class BlockWeights:
    ln1: torch.Tensor
    wqkv: torch.Tensor  # [q rows; k rows; v rows]
    wo: torch.Tensor
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    ln2: torch.Tensor
    router: torch.Tensor  # [E, H]
    w13: torch.Tensor  # [E, 2I, H]: gate rows then up rows
    w2: torch.Tensor  # [E, H, I]

    def attn_inputs(self) -> tuple:
        """The tensors the compiled attention step takes (same order for every block)."""
        extra = tuple(t for t in (self.q_norm, self.k_norm) if t is not None)
        return (self.ln1, self.wqkv, self.wo, self.ln2) + extra


@dataclass
class LMWeights:
    spec: LMSpec
    embed: torch.Tensor
    norm: torch.Tensor
    lm_head: torch.Tensor
    inv_freq: torch.Tensor
    blocks: list[BlockWeights]


_FAMILIES = {  # model_type -> (qk_norm, renormalize default, routing weights in float)
    "olmoe": ("full", None, False),
    "qwen3_moe": ("head", None, False),
    "mixtral": ("none", True, True),
}


def _d(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def stack_qkv(att) -> torch.Tensor:
    """The block's q, k and v projection weights as one [q+k+v rows, H] matrix; the module's
    parameters become views of it (same values, no second copy). Idempotent."""
    ps = [att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]
    stacked = getattr(att, "_harness_qkv", None)
    if stacked is not None:
        offsets = [0, ps[0].shape[0], ps[0].shape[0] + ps[1].shape[0]]
        if all(p.data_ptr() == stacked[o].data_ptr() for p, o in zip(ps, offsets)):
            return stacked
    with torch.no_grad():
        stacked = torch.cat([p.detach() for p in ps], 0)
        row = 0
        for p in ps:
            n = p.shape[0]
            p.data = stacked[row:row + n]
            row += n
    att._harness_qkv = stacked
    return stacked


def extract(lm, lm_head, blocks) -> LMWeights:
    """Weights of a transformers base LM (``lm``: embed_tokens, norm, rotary_emb), its ``lm_head``
    and the full list of its decoder blocks (all of them, in model order)."""
    cfg = lm.config
    mt = getattr(cfg, "model_type", None)
    if mt not in _FAMILIES:
        raise Unsupported(f"the fast engine covers {', '.join(sorted(_FAMILIES))} language models, not '{mt}'")
    qk_norm, renorm, in_float = _FAMILIES[mt]
    renorm = bool(getattr(cfg, "norm_topk_prob", False)) if renorm is None else renorm
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) and mt != "olmoe":
        raise Unsupported(f"sliding-window attention ({mt}, window {cfg.sliding_window}) is not in the fast engine")
    rot = lm.rotary_emb
    if getattr(rot, "rope_type", "default") != "default":
        raise Unsupported(f"rope type '{rot.rope_type}' is not in the fast engine (default RoPE only)")
    out = []
    for i, b in enumerate(blocks):
        att, mlp = b.self_attn, b.mlp
        ex = getattr(mlp, "experts", None)
        if ex is None or not hasattr(ex, "gate_up_proj") or getattr(mlp, "shared_expert", None) is not None:
            raise Unsupported(f"block {i} is not a routed-experts block in transformers' fused layout")
        if any(getattr(att, n, None) is not None and getattr(att, n).bias is not None for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
            raise Unsupported("attention projections with bias are not in the fast engine")
        out.append(BlockWeights(
            ln1=_d(b.input_layernorm.weight), wqkv=stack_qkv(att), wo=_d(att.o_proj.weight), q_norm=_d(att.q_norm.weight) if qk_norm != "none" else None,
            k_norm=_d(att.k_norm.weight) if qk_norm != "none" else None, ln2=_d(b.post_attention_layernorm.weight),
            router=_d(mlp.gate.weight), w13=_d(ex.gate_up_proj), w2=_d(ex.down_proj)))
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    act = getattr(cfg, "hidden_act", "silu")
    if act != "silu":
        raise Unsupported(f"expert activation '{act}' is not in the fast engine (silu only)")
    spec = LMSpec(family=mt, hidden=int(cfg.hidden_size), heads=heads, kv_heads=int(cfg.num_key_value_heads),
                  head_dim=head_dim, experts=int(out[0].router.shape[0]), max_top_k=int(cfg.num_experts_per_tok),
                  eps=float(cfg.rms_norm_eps), qk_norm=qk_norm, renormalize=renorm, weights_in_float=in_float,
                  clip_qkv=getattr(cfg, "clip_qkv", None), rope_scaling=float(getattr(rot, "attention_scaling", 1.0)))
    return LMWeights(spec=spec, embed=_d(lm.embed_tokens.weight), norm=_d(lm.norm.weight), lm_head=_d(lm_head.weight),
                     inv_freq=rot.inv_freq.detach().float(), blocks=out)
