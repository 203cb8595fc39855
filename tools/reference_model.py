"""The bundled reference model: shape, tokenizer, knob application for training, input layout.

A LLaVA-style VLM built only from transformers classes: a small CLIP vision tower, LLaVA's
two-layer projector and an OLMoE language model with MolmoE-1B's topology (16 blocks, 64 experts,
top-8) at a small width. The tokenizer is a byte-level BPE trained with the ``tokenizers``
library on the synthetic training corpus, so any string tokenizes (no unknown characters).

Input layout (the contract with the ``hf:`` backend; training and evaluation build it the same):
``[bos] + [image]*n_vision + tok(prompt_template.format(prompt=prompt))`` (harness.backends.prompt) then the answer
``tok(" " + target) + [eos]``. Vision tokens are the patch tokens only (CLS dropped:
``vision_feature_select_strategy="default"``), so the tiers give 16 / 64 / 144 tokens.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

PAD, UNK, BOS, EOS, IMAGE = "<pad>", "<unk>", "<bos>", "<eos>", "<image>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, IMAGE)  # ids 0..4 in this order

DEFAULT_TIER_SIZES = {"low": 64, "medium": 128, "high": 192}
PATCH_SIZE = 16
N_BLOCKS = 16
N_EXPERTS = 64
DEFAULT_TOP_K = 8


@dataclass(frozen=True)
class Shape:
    """Model widths; the defaults are the shipped model."""

    vocab_size: int = 2048
    text_hidden: int = 96
    text_heads: int = 4
    expert_intermediate: int = 16
    n_blocks: int = N_BLOCKS
    n_experts: int = N_EXPERTS
    top_k: int = DEFAULT_TOP_K
    vision_hidden: int = 128
    vision_heads: int = 4
    vision_intermediate: int = 512
    vision_layers: int = 4
    image_size: int = 192
    patch_size: int = PATCH_SIZE
    # RoPE positions (no learned position table, so this is a limit, not weights): real ScienceQA
    # prompts reach 774 text tokens with this tokenizer, + 144 vision + 16 new (issue 29)
    max_positions: int = 2048
    norm_topk_prob: bool = True  # top-k router weights sum to 1: a usable block at any top_k
    initializer_range: float = 0.05  # ~0.5/sqrt(hidden): the 0.02 default is for 768+ wide models


@functools.lru_cache(maxsize=1)
def settings():
    """The reference model's harness settings (tiers, prompt template) from ``configs/models/reference.toml``."""
    from harness.backends.modelconfig import find_config, load_settings

    return load_settings(find_config("reference"))


def tier_sizes() -> dict[str, int]:
    """Tier -> square image side in pixels."""
    tiers = settings().tiers
    return {name: spec.image_size for name, spec in tiers.items()} if tiers else dict(DEFAULT_TIER_SIZES)


def vision_tokens(size: int, patch_size: int = PATCH_SIZE) -> int:
    from harness.backends.imaging import vision_tokens_for

    return vision_tokens_for(size, patch_size)


# -- tokenizer ---------------------------------------------------------------------------------
def build_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """Train a byte-level BPE on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    common = dict(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                  padding_side="left", model_max_length=Shape().max_positions)
    try:
        wrapped = PreTrainedTokenizerFast(**common, extra_special_tokens={"image_token": IMAGE})
    except (TypeError, ValueError):  # transformers versions without named extra special tokens
        wrapped = PreTrainedTokenizerFast(**common, additional_special_tokens=[IMAGE])
    for i, t in enumerate(SPECIAL_TOKENS):
        if wrapped.convert_tokens_to_ids(t) != i:
            raise RuntimeError(f"special token {t} got id {wrapped.convert_tokens_to_ids(t)}, expected {i}")
    return wrapped


# -- model -------------------------------------------------------------------------------------
def build_config(tokenizer, shape: Shape = Shape()):
    from transformers import CLIPVisionConfig, LlavaConfig, OlmoeConfig

    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        patch_size=shape.patch_size,
        image_size=shape.image_size,
        projection_dim=shape.vision_hidden,
    )
    text = OlmoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.text_hidden,
        intermediate_size=shape.expert_intermediate,
        num_hidden_layers=shape.n_blocks,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_heads,
        num_experts=shape.n_experts,
        num_experts_per_tok=shape.top_k,
        max_position_embeddings=shape.max_positions,
        norm_topk_prob=shape.norm_topk_prob,
        initializer_range=shape.initializer_range,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        image_seq_length=vision_tokens(shape.image_size, shape.patch_size),
        tie_word_embeddings=True,
    )


def build_model(tokenizer, shape: Shape = Shape(), experts_implementation: str | None = None):
    from transformers import LlavaForConditionalGeneration

    config = build_config(tokenizer, shape)
    if experts_implementation:
        config.text_config._experts_implementation = experts_implementation
    return LlavaForConditionalGeneration(config)


def image_processor(size: int = 192):
    from transformers import CLIPImageProcessor

    from harness.backends.imaging import CLIP_MEAN, CLIP_STD

    return CLIPImageProcessor(
        size={"height": size, "width": size},
        crop_size={"height": size, "width": size},
        do_center_crop=False,
        do_resize=True,
        resample=3,  # bicubic, as harness.backends.imaging.preprocess
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def language_layers(model):
    """The OLMoE decoder layer list (an ``nn.ModuleList``) of a LLaVA model."""
    return model.model.language_model.layers


@contextlib.contextmanager
def knobs_applied(model, active_blocks: Sequence[int], top_k: int) -> Iterator[None]:
    """Run only ``active_blocks`` (block 0 first, ascending) with ``top_k`` experts after block 0, through
    the harness's own knob switch (:class:`harness.backends.layouts.KnobSwitch`, the one knob
    application); restores the full model on exit."""
    from harness.backends.layouts import OLMOE, KnobSwitch

    switch = KnobSwitch(model.model.language_model, "layers", OLMOE, model.config.text_config)
    switch.apply(active_blocks, top_k)
    try:
        yield
    finally:
        switch.apply(range(switch.n_blocks), switch.default_top_k[0])


# -- input layout ------------------------------------------------------------------------------
def prompt_ids(tokenizer, prompt: str, n_vision: int, template: str | None = None) -> list[int]:
    """``[bos] + [image]*n_vision + tok(template.format(prompt=prompt))``: the backend's own function."""
    from harness.backends.prompt import build_input_ids

    template = settings().prompt_template if template is None else template
    return build_input_ids(tokenizer, prompt, n_vision, tokenizer.convert_tokens_to_ids(IMAGE), template)


def target_ids(tokenizer, target: str) -> list[int]:
    """The answer the model is trained to produce: ``tok(" " + target) + [eos]``."""
    return tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def image_features(model, pixel_values):
    """Projected patch features ``[B, n_vision, hidden]``, computed by the ``hf:`` backend's own
    LLaVA vision path (:class:`harness.backends.hf.LlavaVision`)."""
    from harness.backends.hf import LlavaVision

    vision = LlavaVision(model)
    return vision.project(vision.features(pixel_values))


def embed_inputs(model, input_ids, pixel_values=None, features=None):
    """Input embeddings with the image features scattered over the image tokens."""
    embeds = model.model.get_input_embeddings()(input_ids)
    if features is None:
        if pixel_values is None:
            return embeds
        features = image_features(model, pixel_values.to(embeds.dtype))
    mask = (input_ids == model.config.image_token_id).unsqueeze(-1)
    return embeds.masked_scatter(mask, features.reshape(-1, features.shape[-1]).to(embeds.dtype))
