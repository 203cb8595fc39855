"""Tiny random models built from the real transformers classes (fp32, CPU, seconds), for the
verification tests and quick smoke runs: OLMoE, Qwen3-MoE, Mixtral and LLaVA+OLMoE, each with 6
blocks, 8 experts and top-4 by default."""

from __future__ import annotations

import torch

from harness.backends.base import ModelInfo
from harness.backends.bytetok import ByteTokenizer
from harness.backends.modelconfig import ModelSettings, TierSpec

VOCAB = 320
IMAGE_TOKEN = VOCAB - 1
COMMON = dict(hidden_size=32, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
              max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
FAMILIES = ("olmoe", "qwen3_moe", "mixtral", "llava_olmoe")


def text_config(family: str, n_layers: int = 6, top_k: int = 4):
    from transformers import MixtralConfig, OlmoeConfig, Qwen3MoeConfig

    kw = dict(COMMON, num_hidden_layers=n_layers, num_experts_per_tok=top_k)
    if family in ("olmoe", "llava_olmoe"):
        return OlmoeConfig(intermediate_size=16, num_experts=8, **kw)
    if family == "qwen3_moe":
        return Qwen3MoeConfig(intermediate_size=32, moe_intermediate_size=16, num_experts=8, head_dim=8,
                              decoder_sparse_step=1, mlp_only_layers=[], **kw)
    if family == "mixtral":
        return MixtralConfig(intermediate_size=16, num_local_experts=8, sliding_window=None, **kw)
    raise ValueError(family)


def config(family: str, n_layers: int = 6, top_k: int = 4):
    tc = text_config(family, n_layers, top_k)
    if family != "llava_olmoe":
        return tc
    from transformers import CLIPVisionConfig, LlavaConfig

    vc = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                          image_size=32, patch_size=8)
    return LlavaConfig(vision_config=vc, text_config=tc, image_token_id=IMAGE_TOKEN,
                       vision_feature_select_strategy="full", vision_feature_layer=-1)


def build(family: str, seed: int = 0, n_layers: int = 6, top_k: int = 4):
    """A random-weight model of the family (eval mode, fp32, experts 'eager')."""
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    cfg = config(family, n_layers, top_k)
    cfg._attn_implementation = "sdpa"
    model = (LlavaForConditionalGeneration(cfg) if family == "llava_olmoe" else AutoModelForCausalLM.from_config(cfg))
    with torch.no_grad():  # larger-than-default weights so tokens depend on every block
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in name:
                p.normal_(0.0, 0.2)
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    return model.eval()


def settings(family: str) -> ModelSettings:
    if family != "llava_olmoe":
        return ModelSettings()
    tiers = {"low": TierSpec("low", image_size=16), "medium": TierSpec("medium", image_size=24), "high": TierSpec("high", image_size=32)}
    return ModelSettings(tiers, "high", source="tiny")


def backend(family: str, model=None, seed: int = 0, importance=None, compile: bool = False):
    """An HFBackend over a tiny model (a fresh one unless ``model`` is given)."""
    from harness.backends.hf import HFBackend, info_from_config

    model = model if model is not None else build(family, seed)
    st = settings(family)
    info: ModelInfo = info_from_config(model.config, f"tiny-{family}", st)
    return HFBackend(model, ByteTokenizer(VOCAB), info, st, "cpu", torch.float32, importance, compile, "eager")


def hf_byte_tokenizer():
    """A Hugging Face fast tokenizer over bytes (GPT-2 byte alphabet, no merges; pad 0, bos 1, eos 2),
    so a tiny model directory can be saved and loaded through ``hf:<path>`` offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def save_model_dir(family: str, path, seed: int = 0, weights: bool = True) -> None:
    """Write a tiny model directory (config, tokenizer and, unless ``weights=False``, weights)."""
    model = build(family, seed)
    if weights:
        model.save_pretrained(path)
    else:
        model.config.save_pretrained(path)
    hf_byte_tokenizer().save_pretrained(path)
