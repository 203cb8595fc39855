"""``molmoe:<id-or-path>`` backend: allenai/MolmoE-1B-0924 through ``trust_remote_code``.

Facts of the remote code this adapter relies on (its layout, read from the published
``modeling_molmoe.py``):
- blocks at ``model.model.transformer.blocks`` (``block_group_size`` 1), each with ``mlp.top_k``;
- ``Molmo.forward`` takes ``past_key_values`` as a list with one ``(k, v)`` per *executed* block,
  asserts ``len(past_key_values) == config.n_layers`` (``model.model.config``), and indexes it by
  loop position. The knob switch therefore replaces the blocks list with the kept blocks and sets
  ``n_layers`` to the active count; the cache built during a call has exactly that many entries;
- images enter as ``images``/``image_masks``/``image_input_idx`` from the Molmo processor's
  ``process(text=..., images=[...], images_kwargs={"max_crops": N})``; ``max_crops`` is the tier.
- its ``generate()`` does not work on transformers 5 (``cache_position`` KeyError); the harness
  decode loop calls ``forward`` with ``last_logits_only=True`` and an explicit attention mask and
  position ids instead.

Loading goes through :mod:`harness.backends.molmoe_remote` (the remote files as they are, fitted to
transformers 5 in memory) and only with the user's ``trust_remote_code``.

What is verified here, on a small random checkpoint of the real remote classes built at test time
(``tests/test_molmoe_real.py``): loading, only the selected blocks executing, experts per token (8
at block 0, ``top_k`` after), ``n_layers`` bookkeeping, greedy tokens equal to a greedy loop over the
remote forward, batch 2 equal to batch 1; where torchvision imports, tier -> the real processor's
``max_crops`` and batches of images with different crop counts (``tests/test_molmoe_processor.py``).
Not verified: MolmoE-1B's own weights and scores.

Engines: ``eager`` calls the remote ``forward``; ``fast`` (the default on CUDA) runs its own block
step on the remote model's weights (:func:`harness.engine.weights.extract_molmoe`), with the
embedding and the image features added here (:meth:`MolmoeStepModel.embed_inputs`), and on the CPU
yields the eager engine's tokens (``tests/test_molmoe_fast.py``).

Where an engine reads the weights: ``switch.all_blocks[i]`` is the remote ``MolmoDecoderLayer``:
``attn`` (``attn_norm``, fused ``att_proj``, ``q_norm``/``k_norm``, rotary, ``attn_out``) and ``mlp``,
a ``MolmoeSparseMoeBlock`` (``ff_norm``; router ``gate``; ``experts[e].gate_proj/up_proj/down_proj``;
``top_k``; the softmax top-k routing weights are NOT renormalised).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.backends.base import Backend, ModelInfo
from harness.backends.layouts import MOLMOE, KnobSwitch
from harness.backends.modelconfig import ModelSettings
from harness.decode import PreparedBatch
from harness.errors import HarnessError
from harness.latency.fit_files import REMOTE_CODE_EXPERTS
from harness.types import GenRequest

BLOCKS_PATH = "model.transformer.blocks"


def read_config_json(path: str, name: str) -> dict:
    p = Path(path)
    if p.is_dir():
        f = p / "config.json"
    else:
        try:
            from huggingface_hub import hf_hub_download

            f = Path(hf_hub_download(path, "config.json", local_files_only=True))
        except Exception:
            raise HarnessError(f"{name}: no local config for '{path}'; MolmoE needs a downloaded model directory "
                               "(e.g. molmoe:/models/MolmoE-1B-0924) since the hub is not reachable")
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{name}: cannot read '{f}' ({exc}); the model directory needs a valid config.json")


def info_from_dict(cfg: dict, name: str, settings: ModelSettings) -> ModelInfo:
    try:
        n, k = int(cfg.get("num_hidden_layers", cfg.get("n_layers"))), int(cfg["moe_top_k"])
    except (KeyError, TypeError, ValueError):
        raise HarnessError(f"{name}: config has no num_hidden_layers/moe_top_k; is this a MolmoE checkpoint?")
    positions = cfg.get("max_sequence_length") or cfg.get("max_position_embeddings")  # trained context first
    return ModelInfo(name=name, family="molmoe", n_blocks=n, default_top_k=k, max_top_k=k,
                     tiers=tuple(settings.tiers), default_tier=settings.default_tier,
                     notes="tiers = processor max_crops", max_positions=int(positions) if positions else None)


def describe(path: str, name: str, settings: ModelSettings) -> ModelInfo:
    return info_from_dict(read_config_json(path, name), name, settings)


class ListCache:
    """The MolmoE cache: a list with one (k, v) per executed block, replaced after every forward."""

    def __init__(self):
        self.kv = None


class MolmoVision:
    """MolmoE's vision backbone split for timing, as the fast engine runs it: ``features`` is the
    ViT (``encode_image``, crops of all -1 masked out), ``project`` the rest of the remote
    ``MolmoVisionBackbone.forward`` (padding embeddings, 2x2 attention pooling, projector), run by
    the remote code itself on the given features."""

    def __init__(self, backbone):
        self.backbone = backbone

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image(images)[0]

    def project(self, feats: torch.Tensor, image_masks: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        # the remote forward reads only the crop counts of its ``images`` and passes them to
        # ``encode_image``: answered with the features already computed (cls features are off)
        bb.encode_image = lambda _images: (feats, None)
        try:
            return bb(feats, image_masks)[0]
        finally:
            del bb.encode_image


class MolmoeStepModel:
    """The eager step (the remote ``forward`` with its list cache) and what the fast engine reads:
    the weights (:func:`harness.engine.weights.extract_molmoe`), the token embedding and the prompt
    embedding with the image features added at ``image_input_idx``, as ``Molmo.forward`` adds them."""

    def __init__(self, model):
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        backbone = getattr(model.model, "vision_backbone", None)
        self.vision = MolmoVision(backbone) if backbone is not None else None
        self._embedding = None  # the fast engine's one embedding table (set by engine_weights)

    def make_cache(self, batch_size, max_len, static):
        if static:
            raise HarnessError("a static cache is not available for molmoe: its per-block list cache grows by concatenation")
        return ListCache()

    def _forward(self, cache, **kw):
        out = self.model(use_cache=True, last_logits_only=True, past_key_values=cache.kv, **kw)
        cache.kv = list(out.past_key_values)
        return out.logits[:, -1]

    def prefill(self, batch: PreparedBatch, attention_mask, position_ids, cache, timer):
        extras = {k: v for k, v in batch.extras.items() if v is not None}
        with timer.region("lm_prefill"):  # vision runs inside Molmo.forward: included here
            return self._forward(cache, input_ids=batch.input_ids, attention_mask=attention_mask,
                                 position_ids=position_ids, **extras)

    def step(self, tokens, attention_mask, position_ids, cache):
        return self._forward(cache, input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids)

    # -- what the fast engine reads -----------------------------------------------------------
    def engine_weights(self, blocks):
        from harness.engine.weights import extract_molmoe

        w = extract_molmoe(self.model, blocks)
        self._embedding = w.embed
        return w

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(tokens, self._embedding)

    def embed_inputs(self, batch: PreparedBatch, timer, vision=None) -> torch.Tensor:
        """Token embeddings plus the projected image features at ``image_input_idx`` (vision
        encoder and projector timed apart; ``vision``: the fast engine's graph replay of them)."""
        ids = batch.input_ids
        emb = self.embed(ids)
        images = batch.extras.get("images")
        if images is None or self.vision is None:
            return emb
        vision = vision or self.vision
        with timer.region("vision"):
            feats = vision.features(images)
        with timer.region("projector"):
            img = vision.project(feats, batch.extras["image_masks"])
        b = ids.shape[0]
        img = img.reshape(b, -1, img.shape[-1])
        idx = batch.extras["image_input_idx"].reshape(b, -1)
        valid = idx >= 0
        rows = torch.arange(b, device=ids.device)[:, None].expand_as(idx)
        emb[rows[valid], idx[valid]] += img[valid].to(emb.dtype)
        return emb


def _as_tensor(x, dtype=None):
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    return t.to(dtype) if dtype is not None else t


class MolmoeBackend(Backend):
    def __init__(self, model, processor, info: ModelInfo, settings: ModelSettings, device, dtype,
                 importance=None, engine="auto", experts_impl="eager"):
        inner = model.model
        if getattr(inner.config, "block_group_size", 1) != 1:
            raise HarnessError(f"{info.name}: block_group_size != 1 is not supported (blocks must be at {BLOCKS_PATH})")
        self.model, self.processor, self.settings = model, processor, settings
        switch = KnobSwitch(model, BLOCKS_PATH, MOLMOE, None,
                            on_apply=lambda active: setattr(inner.config, "n_layers", len(active)))
        tok = processor.tokenizer
        eos = getattr(tok, "eos_token_id", None)
        pad = getattr(tok, "pad_token_id", None)
        super().__init__(info, switch, MolmoeStepModel(model), tok, device, dtype, importance, engine,
                         experts_impl, [eos] if eos is not None else [], pad if pad is not None else 0)

    def _process(self, request: GenRequest, tier):
        text = self.settings.prompt_template.format(prompt=request.prompt)
        if request.image is None:
            out = self.processor.process(text=text)
        else:
            spec = self.settings.tier(tier)
            kw = {"images_kwargs": {"max_crops": int(spec.max_crops)}} if spec and spec.max_crops else {}
            out = self.processor.process(text=text, images=[request.image], **kw)
        ids = _as_tensor(out["input_ids"], torch.long).reshape(-1)
        n_vision = 0
        if out.get("image_input_idx") is not None:
            n_vision = int((_as_tensor(out["image_input_idx"]) >= 0).sum())
        return ids, out, n_vision

    def count_tokens(self, request: GenRequest, tier=None) -> tuple[int, int]:
        ids, _, nv = self._process(request, self.resolve_tier(tier))
        return int(ids.numel()) - nv, nv

    def _prepare(self, requests, tier, device=None):
        device = self.device if device is None else device
        items = [self._process(r, tier) for r in requests]
        width = max(int(ids.numel()) for ids, _, _ in items)
        bsz = len(items)
        input_ids = torch.zeros((bsz, width), dtype=torch.long)
        mask = torch.zeros((bsz, width), dtype=torch.long)
        with_img = [o for _, o, _ in items if o.get("images") is not None]
        extras = {}
        if with_img:
            n_crops = max(_as_tensor(o["images"]).shape[0] for o in with_img)
            ref = _as_tensor(with_img[0]["images"])
            n_tok = _as_tensor(with_img[0]["image_input_idx"]).shape[-1]
            # padding crops are all -1 (what the remote vision backbone recognises as padding, as Molmo's collator pads)
            images = torch.full((bsz, n_crops) + tuple(ref.shape[1:]), -1.0, dtype=self.dtype)
            masks = torch.full((bsz, n_crops, ref.shape[1]), -1.0, dtype=self.dtype)
            idx = torch.full((bsz, n_crops, n_tok), -1, dtype=torch.long)
        for i, (ids, out, _) in enumerate(items):
            pad = width - int(ids.numel())
            input_ids[i, pad:] = ids
            mask[i, pad:] = 1
            if with_img and out.get("images") is not None:
                im = _as_tensor(out["images"])
                images[i, : im.shape[0]] = im.to(self.dtype)
                if out.get("image_masks") is not None:
                    masks[i, : im.shape[0]] = _as_tensor(out["image_masks"]).to(self.dtype)
                ii = _as_tensor(out["image_input_idx"], torch.long)
                idx[i, : ii.shape[0]] = torch.where(ii >= 0, ii + pad, ii)
        if with_img:
            extras = {"images": images.to(device), "image_masks": masks.to(device), "image_input_idx": idx.to(device)}
        n_text = [int(ids.numel()) - nv for ids, _, nv in items]
        return PreparedBatch(input_ids.to(device), mask.to(device), extras), n_text, [nv for _, _, nv in items]


TRUST_MESSAGE = ("{spec} runs the Python files shipped with that checkpoint (its remote code: model, config and "
                 "processor classes) inside this process; pass --trust-remote-code (or trust_remote_code = true in "
                 "--config) to allow it for checkpoints you trust")


def load(path: str, info: ModelInfo, settings: ModelSettings, device="cpu", dtype=torch.float32, importance=None,
         experts_impl="grouped_mm", engine="auto", trust_remote_code=False) -> MolmoeBackend:
    if not trust_remote_code:
        raise HarnessError(TRUST_MESSAGE.format(spec=info.name))
    from harness.backends.molmoe_remote import load_model, load_processor

    processor = load_processor(path, info.name)  # first: a missing dependency is named before minutes of loading
    model = load_model(path, info.name, dtype).to(device).eval()
    # MolmoE's experts are its remote code's own loop: transformers' experts implementations do not apply
    return MolmoeBackend(model, processor, info, settings, device, dtype, importance, engine, REMOTE_CODE_EXPERTS)
