"""A small stand-in for allenai/MolmoE-1B-0924's remote code with the same module layout and
calling convention, so the ``molmoe:`` adapter can be tested offline (the real code cannot be
downloaded here). It mirrors what the adapter touches:

- ``model.model.transformer.{wte, blocks, ln_f, ff_out}``, ``model.model.config.n_layers``;
- ``Molmo.forward(input_ids, attention_mask, position_ids, past_key_values, use_cache,
  last_logits_only, images, image_masks, image_input_idx)`` asserting
  ``len(past_key_values) == config.n_layers``, indexing the list cache by loop position, adding
  image features at ``image_input_idx`` and returning ``logits`` and ``past_key_values``;
- blocks ``block(x, attention_bias, position_ids, layer_past, use_cache) -> (x, (k, v))`` with an
  MoE ``mlp`` holding ``top_k`` (router ``gate`` + ``experts(x, top_k_index, top_k_weights)``);
- a processor with ``process(text, images, images_kwargs={"max_crops": N})`` and ``.tokenizer``.
The numerics are not MolmoE's; only the interface is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from harness.backends.bytetok import ByteTokenizer
from harness.backends.imaging import preprocess

VOCAB = 320
IMAGE_PATCH, IM_START, IM_END = 316, 317, 318
CROP, PATCH = 8, 2  # crop side (pixels) and patch side: 16 patches/crop, pooled 2x2 -> 4 tokens
PATCH_DIM = PATCH * PATCH * 3
N_PATCH = (CROP // PATCH) ** 2
TOK_PER_CROP = N_PATCH // 4


@dataclass
class StandinConfig:
    n_layers: int = 6
    d_model: int = 32
    n_heads: int = 4
    vocab_size: int = VOCAB
    moe_num_experts: int = 8
    moe_top_k: int = 4
    expert_hidden: int = 16
    block_group_size: int = 1
    use_position_ids: bool = True


def _rope(x, pos):  # x [B, H, T, D], pos [B, T]
    d = x.shape[-1] // 2
    inv = 1.0 / (10000 ** (torch.arange(d, dtype=torch.float32, device=x.device) / d))
    ang = pos.float()[:, None, :, None] * inv
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Experts(nn.Module):
    def __init__(self, c: StandinConfig):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(c.moe_num_experts, c.d_model, c.expert_hidden) * 0.3)
        self.w2 = nn.Parameter(torch.randn(c.moe_num_experts, c.expert_hidden, c.d_model) * 0.3)

    def forward(self, x, top_k_index, top_k_weights):
        out = torch.zeros_like(x)
        for slot in range(top_k_index.shape[-1]):
            e = top_k_index[:, slot]
            h = torch.einsum("nd,ndh->nh", x, self.w1[e]).relu()
            out = out + top_k_weights[:, slot, None] * torch.einsum("nh,nhd->nd", h, self.w2[e])
        return out


class SparseMoe(nn.Module):
    def __init__(self, c: StandinConfig):
        super().__init__()
        self.top_k = c.moe_top_k
        self.gate = nn.Linear(c.d_model, c.moe_num_experts, bias=False)
        self.experts = Experts(c)

    def forward(self, x):
        b, t, d = x.shape
        flat = x.reshape(-1, d)
        probs = F.softmax(self.gate(flat).float(), dim=-1)
        w, idx = torch.topk(probs, self.top_k, dim=-1)
        return self.experts(flat, idx, w.to(flat.dtype)).reshape(b, t, d)


class Block(nn.Module):
    def __init__(self, c: StandinConfig, layer_id: int):
        super().__init__()
        self.layer_id, self.n_heads = layer_id, c.n_heads
        self.attn_norm = nn.LayerNorm(c.d_model)
        self.att_proj = nn.Linear(c.d_model, 3 * c.d_model, bias=False)
        self.attn_out = nn.Linear(c.d_model, c.d_model, bias=False)
        self.ff_norm = nn.LayerNorm(c.d_model)
        self.mlp = SparseMoe(c)

    def forward(self, x, attention_bias=None, position_ids=None, layer_past=None, use_cache=False):
        b, t, d = x.shape
        q, k, v = self.att_proj(self.attn_norm(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, -1).transpose(1, 2) for z in (q, k, v))
        q, k = _rope(q, position_ids), _rope(k, position_ids)
        if layer_past is not None:
            k = torch.cat([layer_past[0], k], dim=-2)
            v = torch.cat([layer_past[1], v], dim=-2)
        present = (k, v) if use_cache else None
        bias = attention_bias[:, :, -t:, : k.shape[-2]]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, t, d))
        x = x + self.mlp(self.ff_norm(x))
        return x, present


class VisionBackbone(nn.Module):
    def __init__(self, c: StandinConfig):
        super().__init__()
        self.proj = nn.Linear(PATCH_DIM, c.d_model)
        self.out = nn.Linear(c.d_model, c.d_model)

    def forward(self, images, image_masks):  # [B, n_crops, N_PATCH, PATCH_DIM]
        h = self.proj(images).gelu() if hasattr(torch.Tensor, "gelu") else F.gelu(self.proj(images))
        b, n, p, d = h.shape
        side = int(math.isqrt(p))
        h = h.view(b * n, side, side, d).permute(0, 3, 1, 2)
        h = F.avg_pool2d(h, 2).permute(0, 2, 3, 1).reshape(b, n, -1, d)
        return self.out(h), None


class Molmo(nn.Module):
    def __init__(self, c: StandinConfig):
        super().__init__()
        self.config = c
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.d_model),
            blocks=nn.ModuleList([Block(c, i) for i in range(c.n_layers)]),
            ln_f=nn.LayerNorm(c.d_model),
            ff_out=nn.Linear(c.d_model, c.vocab_size, bias=False),
        ))
        self.vision_backbone = VisionBackbone(c)

    def forward(self, input_ids, input_embeddings=None, attention_mask=None, images=None, image_masks=None,
                image_input_idx=None, position_ids=None, past_key_values=None, use_cache=False,
                last_logits_only=False, **unused):
        if past_key_values:
            assert len(past_key_values) == self.config.n_layers
        assert not (images is not None and past_key_values is not None)
        b, t = input_ids.shape
        past = 0 if past_key_values is None else past_key_values[0][0].size(-2)
        if attention_mask is None:
            attention_mask = torch.ones((b, past + t), dtype=torch.long, device=input_ids.device)
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
        x = self.transformer.wte(input_ids * (input_ids != -1))
        if images is not None:
            feats, _ = self.vision_backbone(images, image_masks)
            feats = feats.reshape(b, -1, feats.shape[-1])
            idx = image_input_idx.reshape(b, -1)
            valid = idx >= 0
            bi = torch.arange(b, device=x.device)[:, None].expand_as(idx)
            x = x.clone()
            x[bi[valid], idx[valid]] += feats[valid]
        kv = past + t
        causal = torch.ones(kv, kv, dtype=torch.bool, device=x.device).tril()[None, None, -t:, :]
        allowed = causal & attention_mask[:, None, None, :kv].bool()
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=x.device).masked_fill(~allowed, torch.finfo(torch.float32).min)
        cache = [] if use_cache else None
        for i, block in enumerate(self.transformer.blocks):
            layer_past = None if past_key_values is None else past_key_values[i]
            x, present = block(x, attention_bias=bias, position_ids=position_ids, layer_past=layer_past, use_cache=use_cache)
            if cache is not None:
                cache.append(present)
        if last_logits_only:
            x = x[:, -1:]
        logits = self.transformer.ff_out(self.transformer.ln_f(x))
        return SimpleNamespace(logits=logits, attn_key_values=cache)


class StandinMolmoForCausalLM(nn.Module):
    def __init__(self, c: StandinConfig):
        super().__init__()
        self.config = c
        self.model = Molmo(c)

    def forward(self, input_ids=None, attention_mask=None, images=None, image_masks=None, image_input_idx=None,
                position_ids=None, past_key_values=None, use_cache=None, last_logits_only=None, **kw):
        out = self.model(input_ids, attention_mask=attention_mask, images=images, image_masks=image_masks,
                         image_input_idx=image_input_idx, position_ids=position_ids, past_key_values=past_key_values,
                         use_cache=bool(use_cache), last_logits_only=bool(last_logits_only))
        return SimpleNamespace(logits=out.logits, past_key_values=out.attn_key_values)


class StandinProcessor:
    """Molmo-processor-like: image crops (at most ``max_crops``, plus one global view) of
    ``CROP`` pixels, patch tokens after the BOS, then " User: <text> Assistant:"."""

    def __init__(self, max_crops: int = 4):
        self.tokenizer = ByteTokenizer(VOCAB)
        self.max_crops = max_crops

    def process(self, text, images=None, images_kwargs=None, **_):
        max_crops = int((images_kwargs or {}).get("max_crops", self.max_crops))
        ids = [self.tokenizer.bos_token_id]
        out = {}
        if images:
            img = images[0]
            w, h = img.size
            n = max(1, min(max_crops, math.ceil(w / CROP) * math.ceil(h / CROP)))
            crops = [preprocess(img, CROP)] + [preprocess(img.rotate(90 * (j + 1)), CROP) for j in range(n)]
            pix = torch.stack(crops)  # [n+1, 3, CROP, CROP]
            patches = pix.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH)  # [n, 3, s, s, P, P]
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(pix.shape[0], N_PATCH, PATCH_DIM)
            idx = []
            for _c in range(pix.shape[0]):
                ids.append(IM_START)
                idx.append(list(range(len(ids), len(ids) + TOK_PER_CROP)))
                ids.extend([IMAGE_PATCH] * TOK_PER_CROP)
                ids.append(IM_END)
            out.update(images=patches, image_masks=torch.ones(pix.shape[0], N_PATCH), image_input_idx=torch.tensor(idx))
        ids.extend(self.tokenizer(f" User: {text} Assistant:")["input_ids"])
        out["input_ids"] = torch.tensor(ids)
        return out


def build(seed: int = 0, n_layers: int = 6, top_k: int = 4) -> StandinMolmoForCausalLM:
    torch.manual_seed(seed)
    model = StandinMolmoForCausalLM(StandinConfig(n_layers=n_layers, moe_top_k=top_k))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "wte" not in name and "experts" not in name:
                p.normal_(0.0, 0.2)
    return model.eval()


def backend(model=None, importance=None, max_crops=(1, 2, 4)):
    from harness.backends.modelconfig import ModelSettings, TierSpec
    from harness.backends.molmoe import MolmoeBackend, info_from_dict

    model = model if model is not None else build()
    tiers = {t: TierSpec(t, max_crops=m) for t, m in zip(("low", "medium", "high"), max_crops)}
    settings = ModelSettings(tiers, "high", source="stand-in")
    info = info_from_dict({"num_hidden_layers": model.model.config.n_layers, "moe_top_k": model.config.moe_top_k},
                          "molmoe-standin", settings)
    return MolmoeBackend(model, StandinProcessor(), info, settings, "cpu", torch.float32, importance)
