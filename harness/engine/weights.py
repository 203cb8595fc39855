"""Weights of a MoE language model as plain tensors, for the fast engine: one adapter per model
family that reads its module layout (:func:`extract` for transformers' own classes,
:func:`extract_molmoe` for MolmoE's remote code).

Nothing is copied: every tensor is a detached view of the loaded module's parameter, so the
engine and the eager path share one set of weights. Where the engine wants one tensor and the
model keeps several (transformers' separate q/k/v projections; MolmoE's 64 separate expert
modules per block and its two embedding tables), they are concatenated once and the module's own
parameters are re-pointed at views of the result, so memory does not grow and the eager forward
reads the same numbers. The families covered are the ones whose blocks are "pre-norm attention +
top-k routed SwiGLU experts": OLMoE (q/k RMSNorm over the whole projection, no renormalisation of
the top-k weights), Qwen3-MoE (q/k RMSNorm per head, renormalised), Mixtral (no q/k norm,
renormalised) in transformers' fused-expert layout (``mlp.gate.weight`` ``[E, H]``,
``mlp.experts.gate_up_proj`` ``[E, 2I, H]``, ``mlp.experts.down_proj`` ``[E, H, I]``), and
MolmoE-1B's remote code (OLMoE's block, with RoPE applied in float32). Anything else raises
:class:`Unsupported` with the reason.
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
    rope_fp32: bool = False  # RoPE applied to float32 q/k (MolmoE's rope_full_precision), else in the model dtype


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
    return concat_params([(att.q_proj, "weight"), (att.k_proj, "weight"), (att.v_proj, "weight")])


def concat_params(owners: list[tuple[object, str]], dim: int = 0) -> torch.Tensor:
    """The parameters ``getattr(owner, name)`` concatenated along ``dim``, each parameter re-pointed
    at its view of the result (same values, no second copy). Idempotent: a second call returns
    the same tensor."""
    params = [getattr(o, n) for o, n in owners]
    base = getattr(params[0], "_harness_concat", None)
    if base is not None and base.shape[dim] == sum(p.shape[dim] for p in params):  # still the views of it?
        starts = [0]
        for p in params[:-1]:
            starts.append(starts[-1] + p.shape[dim])
        if all(p.data_ptr() == base.narrow(dim, s, p.shape[dim]).data_ptr() and p.dtype == base.dtype
               for p, s in zip(params, starts)):
            return base
    with torch.no_grad():
        base = torch.cat([p.detach() for p in params], dim)
        start = 0
        for p in params:
            n = p.shape[dim]
            p.data = base.narrow(dim, start, n)
            p._harness_concat = base
            start += n
    return base


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


def _molmoe_refusals(cfg, model) -> list[str]:
    """What in a MolmoE config or model the engine's block does not implement (empty: covered)."""
    def get(name, default=None):
        return getattr(cfg, name, default)

    gaps = [f"{name}={get(name)!r}" for name, ok in (
        ("norm_after", lambda v: not v), ("rope", bool), ("use_position_ids", bool), ("alibi", lambda v: not v),
        ("rope_impl", lambda v: v in (None, "llama")), ("attn_logit_softcapping", lambda v: v is None),
        ("final_logit_softcapping", lambda v: v is None), ("scale_logits", lambda v: not v),
        ("normalize_input_embeds", lambda v: not v), ("use_cls_feature", lambda v: not v),
        ("unconditioned", lambda v: not v), ("moe_shared_expert", lambda v: not v),
        ("block_group_size", lambda v: v in (None, 1)), ("weight_tying", lambda v: not v),
        ("clip_qkv", lambda v: v is None)) if not ok(get(name))]  # (MolmoE clips before the q/k norms, OLMoE after)
    if int(get("moe_num_experts", 0) or 0) <= 0:
        gaps.append("dense blocks (moe_num_experts=0)")
    if any(p.ndim == 1 and n.endswith(".bias") for n, p in model.model.transformer.named_parameters()):
        gaps.append("biases in the language model")
    return gaps


def extract_molmoe(model, blocks) -> LMWeights:
    """Weights of MolmoE's remote ``MolmoForCausalLM`` (``model.model.transformer``: ``wte``
    with ``embedding`` and ``new_embedding``, ``ln_f``; ``blocks`` every ``MolmoDecoderLayer`` in
    model order: ``attn.attn_norm``, fused ``attn.att_proj``, ``attn.q_norm``/``k_norm`` over the
    whole projection, ``attn.attn_out``; ``mlp.ff_norm``, router ``mlp.gate``, 64 ``mlp.experts[e]``
    with ``gate_proj``/``up_proj``/``down_proj``) and ``model.lm_head``.

    The block is OLMoE's: softmax routing in float32, top-k without renormalisation, weights cast
    to the model dtype; RoPE in float32 (``rope_full_precision``). Per block, the expert weights
    are concatenated once into ``[E, 2I, H]`` (gate rows then up rows) and ``[E, H, I]`` and the
    expert modules re-pointed at views of them (about 12.9 GB of bf16 for MolmoE-1B, rearranged
    in place, not copied); the two embedding tables become one ``[V + new, H]`` table."""
    cfg = model.config
    gaps = _molmoe_refusals(cfg, model)
    if gaps:
        raise Unsupported(f"this MolmoE config has what the fast engine's block does not implement: {', '.join(gaps)}")
    heads = int(cfg.n_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.d_model // heads)
    kv_heads = int(getattr(cfg, "n_kv_heads", None) or heads)
    out = []
    for i, b in enumerate(blocks):
        att, mlp = b.attn, b.mlp
        experts = getattr(mlp, "experts", None)
        if experts is None or not hasattr(mlp, "gate"):
            raise Unsupported(f"block {i} is not a MolmoE routed-experts block")
        n_exp, inter, hid = len(experts), experts[0].gate_proj.weight.shape[0], experts[0].gate_proj.weight.shape[1]
        w13 = concat_params([(getattr(e, name), "weight") for e in experts for name in ("gate_proj", "up_proj")])
        w2 = concat_params([(e.down_proj, "weight") for e in experts])
        has_qk = att.q_norm is not None and att.k_norm is not None
        if has_qk and (att.q_norm.weight is None or att.k_norm.weight is None):
            raise Unsupported("q/k norms without a weight are not in the fast engine")
        out.append(BlockWeights(
            ln1=_d(att.attn_norm.weight), wqkv=_d(att.att_proj.weight), wo=_d(att.attn_out.weight),
            q_norm=_d(att.q_norm.weight) if has_qk else None, k_norm=_d(att.k_norm.weight) if has_qk else None,
            ln2=_d(mlp.ff_norm.weight), router=_d(mlp.gate.weight), w13=w13.view(n_exp, 2 * inter, hid),
            w2=w2.view(n_exp, hid, inter)))
    has_qk = out[0].q_norm is not None
    wte = model.model.transformer.wte
    embed = concat_params([(wte, "embedding"), (wte, "new_embedding")]) if hasattr(wte, "new_embedding") else wte.weight
    theta = float(getattr(cfg, "rope_theta", 10000.0))
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=embed.device) / head_dim))
    spec = LMSpec(family="molmoe", hidden=int(cfg.d_model), heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                  experts=int(out[0].router.shape[0]), max_top_k=int(cfg.moe_top_k), eps=float(cfg.layer_norm_eps or 1e-5),
                  qk_norm="full" if has_qk else "none", renormalize=False, weights_in_float=False,
                  clip_qkv=None, rope_scaling=1.0,
                  rope_fp32=bool(getattr(cfg, "rope_full_precision", True)))
    return LMWeights(spec=spec, embed=_d(embed), norm=_d(model.model.transformer.ln_f.weight),
                     lm_head=_d(model.lm_head.weight), inv_freq=inv_freq, blocks=out)
