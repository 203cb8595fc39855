"""``hf:<id-or-path>`` backend: transformers-native MoE language models (OLMoE, Qwen3-MoE,
Mixtral) and LLaVA-style VLMs whose language model is one of those.

The harness owns the forward passes: image features are computed here (vision tower with
``interpolate_pos_encoding`` for non-native sizes, feature layer/strategy from the config,
projector) and scattered into the image placeholder positions, then the language model runs on
``inputs_embeds`` with the harness KV cache, so vision encoder, projector and LM prefill are timed
separately. Qwen3-VL-MoE is recognised (its knob layout is known, so ``describe`` works) but not
loaded: its deepstack features are injected by loop position and its M-RoPE positions need
Qwen's processor; the harness refuses it with a clear message rather than run it incorrectly.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from harness.backends.base import Backend, ModelInfo, set_experts_impl
from harness.backends.hf_inputs import ChatFormat, CheckpointImages
from harness.backends.imaging import preprocess_batch
from harness.backends.layouts import TEXT_LAYOUTS, KnobSwitch, Layout
from harness.backends.modelconfig import ModelSettings
from harness.backends.prompt import build_input_ids
from harness.decode import PreparedBatch, left_pad
from harness.errors import HarnessError
from harness.types import GenRequest

VLM_TYPES = ("llava",)
REFUSED_TYPES = {
    "qwen3_vl_moe": "Qwen3-VL-MoE is not runnable in this harness yet: its deepstack visual features are injected "
                    "into blocks 0..2 by loop position and its M-RoPE positions need Qwen's processor; its knob layout "
                    "is known (harness models), generation is refused rather than run incorrectly",
}


def supported_families() -> str:
    text = sorted({lay.family for lay in TEXT_LAYOUTS.values()} - {"qwen3_vl_moe"})
    return ", ".join(text + [f"llava+{{{','.join(text)}}}", "qwen3_vl_moe (describe only)"])


# -- config-only inspection ---------------------------------------------------------------------
def text_config_of(config):
    return config.text_config if getattr(config, "model_type", None) in VLM_TYPES + ("qwen3_vl_moe",) else config


def layout_for(config, name: str) -> Layout:
    mt = getattr(config, "model_type", None)
    text = text_config_of(config)
    lay = TEXT_LAYOUTS.get(getattr(text, "model_type", None))
    if lay is None:
        inner = f" with a '{text.model_type}' language model" if text is not config else ""
        raise HarnessError(f"{name}: architecture '{mt}'{inner} has no knob layout; supported families: {supported_families()}")
    return lay


def vision_tokens_for_size(config, size: int) -> int:
    vc = config.vision_config
    n = (size // vc.patch_size) ** 2
    has_cls = getattr(vc, "model_type", "").startswith("clip")
    strategy = getattr(config, "vision_feature_select_strategy", "default")
    return n + (1 if has_cls else 0) - (1 if strategy == "default" else 0)


def default_settings(config) -> ModelSettings:
    """Tiers when no TOML exists: the vision tower's native size as 'high', 1/2 and 3/4 of it below."""
    from harness.backends.modelconfig import TierSpec

    if getattr(config, "model_type", None) not in VLM_TYPES:
        return ModelSettings()
    vc = config.vision_config
    native, p = int(vc.image_size), int(vc.patch_size)
    sizes = {"low": max(p, native // 2 // p * p), "medium": max(p, native * 3 // 4 // p * p), "high": native}
    return ModelSettings({k: TierSpec(k, image_size=v) for k, v in sizes.items()}, "high", source="defaults")


def info_from_config(config, name: str, settings: ModelSettings, family_prefix: str = "") -> ModelInfo:
    lay = layout_for(config, name)
    text = text_config_of(config)
    is_vlm = getattr(config, "model_type", None) in VLM_TYPES
    vt = {}
    if is_vlm:
        vt = {t: vision_tokens_for_size(config, s.image_size) for t, s in settings.tiers.items() if s.image_size}
    family = f"llava+{lay.family}" if is_vlm else lay.family
    k = lay.top_k(text)
    positions = getattr(text, "max_position_embeddings", None)
    return ModelInfo(name=name, family=family_prefix + family, n_blocks=lay.n_blocks(text), default_top_k=k,
                     max_top_k=k, tiers=tuple(settings.tiers), default_tier=settings.default_tier,
                     vision_tokens=vt, max_positions=int(positions) if positions else None,
                     vision=is_vlm)


# -- forward plumbing ---------------------------------------------------------------------------
class _LMCall:
    """Calls a transformers base language model with whichever cache keyword it takes
    (``cache`` in transformers >= 5.24, ``past_key_values`` before) and ``cache_position`` when
    its forward still wants one (transformers 5.x < 5.2x)."""

    def __init__(self, lm):
        self.lm = lm
        params = inspect.signature(lm.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.wants_cache_position = "cache_position" in params

    def __call__(self, embeds, mask, positions, cache, past_len):
        kw = {self.cache_kw: cache}
        if self.wants_cache_position:
            kw["cache_position"] = torch.arange(embeds.shape[1], device=embeds.device) + past_len
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, **kw)
        return out.last_hidden_state


def make_hf_cache(text_config, batch_size: int, max_len: int, static: bool, device, dtype):
    from transformers import DynamicCache, StaticCache

    if not static:
        try:
            return DynamicCache(config=text_config)
        except TypeError:
            return DynamicCache()
    try:
        return StaticCache(config=text_config, max_cache_len=max_len)
    except TypeError:  # older 5.x signatures
        return StaticCache(config=text_config, max_batch_size=batch_size, max_cache_len=max_len, device=device, dtype=dtype)


class LlavaVision:
    """Vision tower + feature selection + projector of a LLaVA model, split for timing."""

    def __init__(self, model):
        self.config = model.config
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        self.native = int(self.config.vision_config.image_size)
        self.layer = self.config.vision_feature_layer
        self.strategy = self.config.vision_feature_select_strategy
        self.image_token_id = int(getattr(self.config, "image_token_id", None) or getattr(self.config, "image_token_index"))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kw = {"interpolate_pos_encoding": True} if pixel_values.shape[-1] != self.native else {}
        out = self.tower(pixel_values, output_hidden_states=True, **kw)
        layers = [self.layer] if isinstance(self.layer, int) else list(self.layer)
        hs = [out.hidden_states[i] for i in layers]
        if self.strategy == "default":
            hs = [h[:, 1:] for h in hs]
        return torch.cat(hs, dim=-1)

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        return self.projector(feats)


class HFStepModel:
    """Prefill/step over a transformers base LM (``lm``), its ``lm_head`` and input embedding,
    with an optional vision part (``features``/``project``/``image_token_id``)."""

    def __init__(self, lm, lm_head, embed, vision=None):
        self.vision = vision
        self.lm = lm
        self.text_config = lm.config
        self.lm_head = lm_head
        self.embed = embed
        self.call = _LMCall(lm)
        p = next(lm.parameters())
        self.device, self.dtype = p.device, p.dtype

    @classmethod
    def of(cls, model, vision: LlavaVision | None = None) -> "HFStepModel":
        lm = model.model.language_model if vision is not None else model.model
        return cls(lm, model.lm_head, model.get_input_embeddings(), vision)

    def make_cache(self, batch_size, max_len, static):
        return make_hf_cache(self.text_config, batch_size, max_len, static, self.device, self.dtype)

    def engine_weights(self, blocks):
        """The language model's weights for the fast engine (``blocks``: all of them, in order)."""
        from harness.engine.weights import extract

        return extract(self.lm, self.lm_head, blocks)

    def embed_inputs(self, batch: PreparedBatch, timer, vision=None) -> torch.Tensor:
        """Token embeddings with the image features scattered in (vision and projector timed apart).
        ``vision``: what runs ``features``/``project`` instead of the model's own modules (the fast
        engine's graph replay of them)."""
        ids = batch.input_ids
        pixel_values = batch.extras.get("pixel_values")
        emb = self.embed(ids)
        vision = vision or self.vision
        if self.vision is not None and pixel_values is not None:
            with timer.region("vision"):
                feats = vision.features(pixel_values.to(self.device, self.dtype))
            with timer.region("projector"):
                img = vision.project(feats)
            sel = (ids == self.vision.image_token_id).unsqueeze(-1)
            emb = emb.masked_scatter(sel, img.reshape(-1, img.shape[-1]).to(emb.dtype))
        return emb

    def prefill(self, batch: PreparedBatch, attention_mask, position_ids, cache, timer):
        emb = self.embed_inputs(batch, timer)
        with timer.region("lm_prefill"):
            h = self.call(emb, attention_mask, position_ids, cache, 0)
            logits = self.lm_head(h[:, -1])
        return logits

    def step(self, tokens, attention_mask, position_ids, cache):
        past = cache.get_seq_length() if self.call.wants_cache_position else 0
        h = self.call(self.embed(tokens), attention_mask, position_ids, cache, past)
        return self.lm_head(h[:, -1])


class HFBackend(Backend):
    """A transformers MoE LM or LLaVA VLM behind the harness protocol."""

    def __init__(self, model, tokenizer, info: ModelInfo, settings: ModelSettings, device, dtype,
                 importance=None, engine="auto", experts_impl="eager", images: CheckpointImages | None = None):
        config = model.config
        self.model = model
        self.settings = settings
        self.is_vlm = getattr(config, "model_type", None) in VLM_TYPES
        vision = LlavaVision(model) if self.is_vlm else None
        step = HFStepModel.of(model, vision)
        lay = layout_for(config, info.name)
        switch = KnobSwitch(step.lm, "layers", lay, config)
        self.image_token_id = vision.image_token_id if vision else None
        self.images = images  # the checkpoint's image processor, or None: the harness's square resize
        self.chat = ChatFormat.of(tokenizer, settings.prompt_template, self.image_token_id, info.name)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(tokenizer, "eos_token_id", None)
        eos_ids = eos if isinstance(eos, (list, tuple)) else [eos]
        pad = getattr(tokenizer, "pad_token_id", None)
        pad = pad if pad is not None else (eos_ids[0] if eos_ids and eos_ids[0] is not None else 0)
        super().__init__(info, switch, step, tokenizer, device, dtype, importance, engine, experts_impl, eos_ids, pad)

    # -- inputs -------------------------------------------------------------------------------
    def _n_vision(self, request: GenRequest, tier: str | None) -> int:
        if request.image is None:
            return 0
        if not self.is_vlm:  # never drop an image silently
            raise HarnessError(f"{self.info.name} is a text-only model ({self.info.family}) and this sample has an image; "
                               "use a vision-language model (reference, hf: LLaVA-style, molmoe:) for image tasks")
        return self.info.vision_tokens[tier]

    def _ids(self, request: GenRequest, tier):
        n_vision = self._n_vision(request, tier)
        if self.chat is not None:
            return self.chat.input_ids(request.prompt, n_vision), n_vision
        ids = build_input_ids(self.tokenizer, request.prompt, n_vision, self.image_token_id, self.settings.prompt_template)
        return ids, n_vision

    def count_tokens(self, request: GenRequest, tier: str | None = None) -> tuple[int, int]:
        ids, nv = self._ids(request, self.resolve_tier(tier))
        return len(ids) - nv, nv

    def _prepare(self, requests, tier, device=None):
        device = self.device if device is None else device
        seqs, n_text, n_vis, images = [], [], [], []
        for r in requests:
            ids, nv = self._ids(r, tier)
            seqs.append(ids)
            n_text.append(len(ids) - nv)
            n_vis.append(nv)
            if nv:
                images.append(r.image)
        ids, mask = left_pad(seqs, self.pad_token_id, device)
        extras: dict[str, Any] = {}
        if images:
            size = self.settings.tier(tier).image_size
            pixels = self.images.pixel_values(images, size) if self.images is not None else preprocess_batch(images, size)
            extras["pixel_values"] = pixels.to(device, self.dtype)
        return PreparedBatch(ids, mask, extras), n_text, n_vis


# -- loading ------------------------------------------------------------------------------------
def load_config(path: str, name: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise HarnessError(f"{name}: cannot read a model config from '{path}' ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                           "pass a local model directory or a cached hub id")


def check_runnable(config, name: str) -> None:
    mt = getattr(config, "model_type", None)
    if mt in REFUSED_TYPES:
        raise HarnessError(f"{name}: {REFUSED_TYPES[mt]}")


def load_hf(path: str, info: ModelInfo, settings: ModelSettings, device="cpu", dtype=torch.float32,
            importance=None, experts_impl="grouped_mm", engine="auto") -> HFBackend:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = load_config(path, info.name)
    check_runnable(config, info.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise HarnessError(f"{info.name}: cannot load a tokenizer from '{path}' ({type(exc).__name__}); the model directory needs tokenizer files")
    if getattr(config, "model_type", None) == "llava":
        from transformers import LlavaForConditionalGeneration as cls
    else:
        cls = AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the harness draws its own progress; keep stderr clean
    model = cls.from_pretrained(path, dtype=dtype).to(device).eval()
    # LLaVA does not dispatch experts implementations itself: set it on its language model
    target = model.model.language_model if getattr(config, "model_type", None) in VLM_TYPES else model
    impl = set_experts_impl(target, experts_impl)
    images = CheckpointImages.load(path, info.name) if getattr(config, "model_type", None) in VLM_TYPES else None
    return HFBackend(model, tokenizer, info, settings, device, dtype, importance, engine, impl, images)
