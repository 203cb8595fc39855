"""``random:molmoe-1b``: the MolmoE-1B shape with random weights, for latency profiling without
downloading weights.

- Language model: transformers ``OlmoeForCausalLM`` with MolmoE-1B's shape (2048 hidden, 16 blocks,
  16 heads, 64 experts of 1024 intermediate, top-8, vocab 50304), so the OLMoE knob layout and
  transformers' experts implementations apply unchanged.
- Vision: ``CLIPVisionModel`` shaped as ViT-L/14-336 with 23 layers; features of layers -2 and -9
  concatenated (as MolmoE), 2x2 average pooling (24x24 -> 144 tokens per crop; MolmoE pools with
  attention, same token count), and a SwiGLU projector 2048 -> 2048. A tier runs ``max_crops``
  crops plus one global view of the image (copies of the resized image: random weights, only the
  compute shape matters), so vision tokens = (max_crops + 1) * 144.
- Weights are created directly on the target device in the target dtype (``torch.device`` context
  and default dtype), never materialised on the CPU at full size.
- Tokenizer: :class:`harness.backends.bytetok.ByteTokenizer` (no tokenizer is available offline).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from harness.backends.base import Backend, ModelInfo, set_experts_impl
from harness.backends.bytetok import ByteTokenizer
from harness.backends.hf import HFStepModel
from harness.backends.imaging import preprocess
from harness.backends.layouts import OLMOE, KnobSwitch
from harness.backends.modelconfig import ModelSettings
from harness.backends.prompt import build_input_ids
from harness.decode import PreparedBatch, left_pad
from harness.types import GenRequest


MAX_POSITIONS = 4096  # the language model's context, as MolmoE-1B's


@dataclass(frozen=True)
class Shape:
    hidden: int = 2048
    layers: int = 16
    heads: int = 16
    experts: int = 64
    expert_hidden: int = 1024
    top_k: int = 8
    vocab: int = 50304
    vit_hidden: int = 1024
    vit_layers: int = 23
    vit_heads: int = 16
    vit_mlp: int = 4096
    image_size: int = 336
    patch: int = 14
    pool: int = 2
    vit_feature_layers: tuple = (-2, -9)


MOLMOE_1B = Shape()
# a CPU-sized shape with the same structure (tests, script dry runs)
TINY = Shape(hidden=64, layers=16, heads=4, experts=8, expert_hidden=32, top_k=8, vocab=512, vit_hidden=32,
             vit_layers=3, vit_heads=2, vit_mlp=64, image_size=56, patch=14, vit_feature_layers=(-1, -2))


def tokens_per_crop(shape: Shape) -> int:
    side = shape.image_size // shape.patch // shape.pool
    return side * side


def n_params(shape: Shape) -> int:
    h, e = shape.hidden, shape.experts
    attn = 4 * h * h + 2 * h
    moe = e * 3 * h * shape.expert_hidden + h * e
    lm = shape.layers * (attn + moe + 2 * h) + 2 * shape.vocab * h + h
    vit = shape.vit_layers * (4 * shape.vit_hidden ** 2 + 2 * shape.vit_hidden * shape.vit_mlp) \
        + (shape.image_size // shape.patch) ** 2 * shape.vit_hidden
    proj = 3 * len(shape.vit_feature_layers) * shape.vit_hidden * h
    return lm + vit + proj


def describe(name: str, settings: ModelSettings, shape: Shape = MOLMOE_1B) -> ModelInfo:
    per = tokens_per_crop(shape)
    vt = {t: (s.max_crops + 1) * per for t, s in settings.tiers.items() if s.max_crops}
    return ModelInfo(name=name, family="olmoe (random MolmoE-1B shape)", n_blocks=shape.layers, default_top_k=shape.top_k,
                     max_top_k=shape.top_k, tiers=tuple(settings.tiers), default_tier=settings.default_tier,
                     vision_tokens=vt, n_params=n_params(shape), notes="random weights; latency only",
                     max_positions=MAX_POSITIONS)


@contextmanager
def _default_dtype(dtype):
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(prev)


class RandomVision(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        vc = CLIPVisionConfig(hidden_size=shape.vit_hidden, intermediate_size=shape.vit_mlp,
                              num_hidden_layers=shape.vit_layers, num_attention_heads=shape.vit_heads,
                              image_size=shape.image_size, patch_size=shape.patch, hidden_act="quick_gelu")
        vc._attn_implementation = "sdpa"
        self.shape = shape
        self.tower = CLIPVisionModel(vc)
        d_in = shape.vit_hidden * len(shape.vit_feature_layers)
        self.w1 = nn.Linear(d_in, shape.hidden, bias=False)
        self.w3 = nn.Linear(d_in, shape.hidden, bias=False)
        self.w2 = nn.Linear(shape.hidden, shape.hidden, bias=False)
        self.image_token_id = shape.vocab - 1

    def features(self, pixel_values):  # [n_crops_total, 3, S, S] -> [n_crops_total, 144, d_in]
        out = self.tower(pixel_values, output_hidden_states=True)
        h = torch.cat([out.hidden_states[i][:, 1:] for i in self.shape.vit_feature_layers], dim=-1)
        n, p, d = h.shape
        side = int(p ** 0.5)
        h = h.view(n, side, side, d).permute(0, 3, 1, 2)
        h = nn.functional.avg_pool2d(h, self.shape.pool).permute(0, 2, 3, 1)
        return h.reshape(n, -1, d)

    def project(self, feats):
        return self.w2(nn.functional.silu(self.w1(feats)) * self.w3(feats))


def build(shape: Shape = MOLMOE_1B, device="cpu", dtype=torch.bfloat16, seed: int = 0):
    """(OlmoeForCausalLM, RandomVision), created on ``device`` in ``dtype``."""
    from transformers import OlmoeConfig, OlmoeForCausalLM

    cfg = OlmoeConfig(hidden_size=shape.hidden, intermediate_size=shape.expert_hidden, num_hidden_layers=shape.layers,
                      num_attention_heads=shape.heads, num_key_value_heads=shape.heads, num_experts=shape.experts,
                      num_experts_per_tok=shape.top_k, vocab_size=shape.vocab, max_position_embeddings=MAX_POSITIONS,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device), _default_dtype(dtype), torch.no_grad():
        lm = OlmoeForCausalLM(cfg)
        vision = RandomVision(shape)
        for mod in (lm, vision):
            for p in mod.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.02)
    return lm.eval(), vision.eval()


class RandomMolmoeBackend(Backend):
    def __init__(self, lm, vision: RandomVision, info: ModelInfo, settings: ModelSettings, device, dtype,
                 importance=None, engine="auto", experts_impl="grouped_mm"):
        self.lm_model, self.vision, self.settings = lm, vision, settings
        impl = set_experts_impl(lm, experts_impl)
        step = HFStepModel(lm.model, lm.lm_head, lm.get_input_embeddings(), vision)
        switch = KnobSwitch(lm.model, "layers", OLMOE, lm.config)
        tok = ByteTokenizer(vision.shape.vocab)
        super().__init__(info, switch, step, tok, device, dtype, importance, engine, impl, [tok.eos_token_id], tok.pad_token_id)

    def set_experts_impl(self, impl: str) -> str:
        self.experts_impl = set_experts_impl(self.lm_model, impl)
        return self.experts_impl

    def _n_vision(self, request, tier):
        return 0 if request.image is None else self.info.vision_tokens[tier]

    def count_tokens(self, request: GenRequest, tier=None):
        tier = self.resolve_tier(tier)
        nv = self._n_vision(request, tier)
        ids = build_input_ids(self.tokenizer, request.prompt, nv, self.vision.image_token_id, self.settings.prompt_template)
        return len(ids) - nv, nv

    def _prepare(self, requests, tier, device=None):
        device = self.device if device is None else device
        seqs, n_text, n_vis, crops = [], [], [], []
        for r in requests:
            nv = self._n_vision(r, tier)
            ids = build_input_ids(self.tokenizer, r.prompt, nv, self.vision.image_token_id, self.settings.prompt_template)
            seqs.append(ids)
            n_text.append(len(ids) - nv)
            n_vis.append(nv)
            if nv:  # the one view in the model's dtype, repeated for every crop (a cast per crop cost 3 ms a sample)
                view = preprocess(r.image, self.vision.shape.image_size).to(self.dtype)
                crops.append(view.unsqueeze(0).expand(self.settings.tier(tier).max_crops + 1, -1, -1, -1))
        ids, mask = left_pad(seqs, self.pad_token_id, device)
        extras = {"pixel_values": torch.cat(crops).to(device)} if crops else {}
        return PreparedBatch(ids, mask, extras), n_text, n_vis


def load(info: ModelInfo, settings: ModelSettings, device="cpu", dtype=torch.bfloat16, importance=None,
         experts_impl="grouped_mm", engine="auto", shape: Shape = MOLMOE_1B) -> RandomMolmoeBackend:
    lm, vision = build(shape, device, dtype)
    return RandomMolmoeBackend(lm, vision, info, settings, device, dtype, importance, engine, experts_impl)
