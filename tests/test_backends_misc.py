"""random:molmoe-1b (at a tiny shape), the MolmoE stand-in's token counts and `harness models`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from harness import backends
from fixtures import molmoe_standin
from harness.backends import random_molmoe as rm
from harness.backends.modelconfig import find_config, load_settings
from harness.types import GenRequest

torch.set_num_threads(1)


def _img(w=40, h=30):
    return Image.fromarray((np.random.default_rng(0).random((h, w, 3)) * 255).astype("uint8"))


def test_random_molmoe_describe_matches_molmoe_shape():
    info = backends.describe("random:molmoe-1b")
    assert (info.n_blocks, info.default_top_k, info.min_blocks) == (16, 8, 12)
    assert info.vision_tokens == {"low": 3 * 144, "medium": 7 * 144, "high": 13 * 144}
    assert 6.5e9 < info.n_params < 7.5e9


def test_random_molmoe_tiny_shape_generates_with_knobs():
    settings = load_settings(find_config("random-molmoe-1b"))
    info = rm.describe("random:molmoe-1b", settings, rm.TINY)
    b = rm.load(info, settings, "cpu", torch.float32, experts_impl="eager", shape=rm.TINY)
    assert next(b.lm_model.parameters()).dtype == torch.float32
    b.eos_token_ids = []
    b.apply_knobs("12,4")
    assert b.active_blocks == tuple(range(12))
    routers = [blk.mlp.gate.top_k for blk in b.switch.all_blocks]
    assert routers == [8] + [4] * 11 + [8] * 4
    out = b.generate([GenRequest("hi", image=_img()), GenRequest("a text-only prompt")], 3, tier="low")
    assert [o.vision_tokens for o in out] == [info.vision_tokens["low"], 0]
    assert all(o.output_tokens == 3 for o in out)
    assert out[0].timings.vision_ms is not None and len(out[0].timings.decode_step_ms) == 2
    assert b.count_tokens(GenRequest("hi", image=_img()), "low") == (out[0].text_tokens, out[0].vision_tokens)


def test_random_molmoe_pixels_are_one_view_per_crop_in_the_model_dtype():
    """Each image's pixels are its preprocessed view once per crop of the tier (max_crops + 1), in
    the model's dtype, one contiguous batch tensor: the same as stacking the float32 views and
    casting, rows of a batch in request order, on the host (prepare_detached) as on the device."""
    from harness.backends.imaging import preprocess

    settings = load_settings(find_config("random-molmoe-1b"))
    info = rm.describe("random:molmoe-1b", settings, rm.TINY)
    b = rm.load(info, settings, "cpu", torch.bfloat16, experts_impl="eager", shape=rm.TINY)
    imgs = [_img(), _img(25, 50)]
    reqs = [GenRequest("hi", image=imgs[0]), GenRequest("text only"), GenRequest("again", image=imgs[1])]
    for tier in ("low", "high"):
        n = settings.tier(tier).max_crops + 1
        want = torch.stack([preprocess(im, rm.TINY.image_size) for im in imgs for _ in range(n)]).to(torch.bfloat16)
        for batch, _, _ in (b._prepare(reqs, tier), b.prepare_detached(reqs, tier)):
            px = batch.extras["pixel_values"]
            assert px.dtype == torch.bfloat16 and px.is_contiguous() and torch.equal(px, want), tier


def test_random_molmoe_builds_in_target_dtype():
    lm, vision = rm.build(rm.TINY, "cpu", torch.bfloat16)
    assert {p.dtype for p in lm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in vision.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored


def test_molmoe_standin_counts_and_tiers():
    b = molmoe_standin.backend()
    req = GenRequest("hello", image=_img(40, 40))
    counts = {t: b.count_tokens(req, t) for t in ("low", "medium", "high")}
    # max_crops 1 / 2 / 4 plus one global view, 4 tokens each
    assert [c[1] for c in counts.values()] == [8, 12, 20]
    out = b.generate([req, GenRequest("no image here")], 2, tier="medium")
    assert (out[0].text_tokens, out[0].vision_tokens) == counts["medium"]
    assert out[1].vision_tokens == 0
    b.apply_knobs("3,2")
    assert b.model.model.config.n_layers == 3
    b.apply_knobs("6,4")
    assert b.model.model.config.n_layers == 6


def test_molmoe_is_a_fast_engine_family_and_a_layout_it_cannot_read_is_refused_with_the_reason():
    from harness.engine import resolve
    from harness.errors import HarnessError

    assert resolve("auto", "cuda", "molmoe") == "fast" and resolve("fast", "cpu", "molmoe") == "fast"
    assert resolve("auto", "cuda", "llava+olmoe") == "fast" and resolve("auto", "cpu", "olmoe") == "eager"
    with pytest.raises(HarnessError, match="fast engine does not cover"):
        resolve("fast", "cpu", "qwen3_vl_moe")
    # the stand-in has the adapter's module paths but not MolmoE's blocks (tests/test_molmoe_fast.py: the real ones)
    with pytest.raises(HarnessError, match="fast engine cannot run this model .*rope=None.*use --engine eager"):
        molmoe_standin.backend().__class__(molmoe_standin.build(), molmoe_standin.StandinProcessor(),
                                           backends.describe("random:molmoe-1b"), load_settings(None), "cpu",
                                           torch.float32, engine="fast")


def test_models_command_lists_families():
    from harness.commands.models import command

    res = CliRunner().invoke(command, [], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    for word in ("random:molmoe-1b", "olmoe", "qwen3_moe", "mixtral", "molmoe", "12..16"):
        assert word in res.output
    res = CliRunner().invoke(command, ["--model", "random:molmoe-1b"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "1872" in res.output


def test_lm_call_supports_older_transformers_keywords():
    """transformers < 5.24 names the cache `past_key_values` and wants `cache_position`."""
    from types import SimpleNamespace

    from harness.backends.hf import _LMCall

    seen = {}

    class Old(torch.nn.Module):
        def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None, past_key_values=None,
                    use_cache=None, cache_position=None):
            seen.update(past_key_values=past_key_values, cache_position=cache_position)
            return SimpleNamespace(last_hidden_state=inputs_embeds)

    class New(torch.nn.Module):
        def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None, cache=None, use_cache=None):
            seen.update(cache=cache)
            return SimpleNamespace(last_hidden_state=inputs_embeds)

    emb = torch.zeros(1, 3, 4)
    _LMCall(Old())(emb, None, None, "C", 5)
    assert seen["past_key_values"] == "C" and seen["cache_position"].tolist() == [5, 6, 7]
    seen.clear()
    _LMCall(New())(emb, None, None, "C", 0)
    assert seen == {"cache": "C"}
