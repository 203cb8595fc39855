"""The fast engine on MolmoE's real remote classes (the small random checkpoint of
``tests/molmoe_real.py``), on the CPU in fp32: the eager engine's tokens for every configuration
of a knob space, text and images (through a stand-in of Molmo's processor with its output schema),
batches with left padding and padding crops; the vision encoder and projector timed apart; the
weights shared with the remote modules, not copied; no compilation when knobs change; a config
the engine's block does not implement is refused with the reason (``auto`` falls back to eager)."""

from __future__ import annotations

import pytest
import torch

from harness.backends.modelconfig import find_config, load_settings
from harness.backends.molmoe import MolmoeBackend, info_from_dict
from harness.backends.molmoe_remote import load_model
from harness.decode import Decoder
from harness.engine.step import FastStepModel
from harness.engine.weights import Unsupported, extract_molmoe
from harness.errors import HarnessError
from harness.types import GenRequest
from molmoe_real import StandInProcessor, molmoe_checkpoint  # noqa: F401  (fixture)

torch.set_num_threads(2)
KNOBS = ("16,8", "15,4", "14,6", "13,2", "12,8", "12,1", "16,3")
IMPORTANCE = {i: float((i * 7) % 16) / 16 for i in range(1, 16)}  # not a prefix
TEXT = [GenRequest("vqa2: What is on the table?", sample_id="0"), GenRequest("Hi", sample_id="1")]


def _image(w, h):
    from PIL import Image

    return Image.new("RGB", (w, h), (w % 256, h % 256, 90))


IMAGES = [GenRequest("vqa2: What is this?", image=_image(300, 200), sample_id="2"),
          GenRequest("Describe it", image=_image(80, 60), sample_id="3")]


def _backend(checkpoint, engine, importance=None):
    from transformers import AutoTokenizer

    model = load_model(str(checkpoint), "molmoe-small", torch.float32).eval()
    settings = load_settings(find_config("molmoe-1b"))
    info = info_from_dict(model.config.to_dict() | {"n_layers": 16}, "molmoe-small", settings)
    b = MolmoeBackend(model, StandInProcessor(AutoTokenizer.from_pretrained(checkpoint)), info, settings, "cpu",
                      torch.float32, importance, engine)
    b.eos_token_ids = []  # random weights: decode a fixed number of tokens
    return b


@pytest.fixture(scope="module")
def pair(molmoe_checkpoint):  # noqa: F811
    return _backend(molmoe_checkpoint, "eager", IMPORTANCE), _backend(molmoe_checkpoint, "fast", IMPORTANCE)


def test_fast_tokens_equal_eager_for_every_configuration(pair):
    eager, fast = pair
    assert (eager.engine, fast.engine) == ("eager", "fast")
    for knobs in KNOBS:
        eager.apply_knobs(knobs)
        fast.apply_knobs(knobs)
        for batch in (TEXT, TEXT[1:]):  # batch 2 (left padding) and batch 1
            assert fast.generate_ids(batch, 5).tokens == eager.generate_ids(batch, 5).tokens, (knobs, len(batch))


def test_images_give_the_eager_tokens_with_vision_and_projector_timed_apart(pair):
    eager, fast = pair
    prepared = fast._prepare(IMAGES, "medium")[0].extras
    assert prepared["images"].shape[:2] == (2, 2) and bool((prepared["images"][1, 1] == -1).all())  # a padding crop
    for knobs, tier in (("16,8", "medium"), ("13,3", "medium"), ("12,8", "low")):
        eager.apply_knobs(knobs)
        fast.apply_knobs(knobs)
        for batch in (IMAGES, IMAGES[:1]):
            got, want = fast.generate_ids(batch, 4, tier=tier), eager.generate_ids(batch, 4, tier=tier)
            assert got.tokens == want.tokens, (knobs, tier, len(batch))
    assert {"vision", "projector", "lm_prefill"} <= set(got.timer.read())


def test_the_engine_shares_the_remote_weights(pair):
    _, fast = pair
    w = fast.step_model.w
    block = fast.switch.all_blocks[3]
    inter = block.mlp.experts[0].gate_proj.weight.shape[0]
    for e in (0, 17, 63):
        ex = block.mlp.experts[e]
        assert ex.gate_proj.weight.data_ptr() == w.blocks[3].w13[e, :inter].data_ptr()
        assert ex.up_proj.weight.data_ptr() == w.blocks[3].w13[e, inter:].data_ptr()
        assert ex.down_proj.weight.data_ptr() == w.blocks[3].w2[e].data_ptr()
    assert block.attn.att_proj.weight.data_ptr() == w.blocks[3].wqkv.data_ptr()
    wte = fast.model.model.transformer.wte
    assert wte.embedding.data_ptr() == w.embed.data_ptr() and w.embed.shape[0] == wte.embedding.shape[0] + wte.new_embedding.shape[0]
    again = extract_molmoe(fast.model, fast.switch.all_blocks)  # idempotent: the same tensors, nothing re-copied
    assert again.blocks[3].w13.data_ptr() == w.blocks[3].w13.data_ptr() and again.embed.data_ptr() == w.embed.data_ptr()
    assert w.spec.rope_fp32 and w.spec.qk_norm == "full" and not w.spec.renormalize


def test_switching_configurations_compiles_nothing_after_warm_up(pair):
    from torch._dynamo.testing import CompileCounter

    _, fast = pair
    torch._dynamo.reset()
    counter = CompileCounter()
    saved = fast.step_model, fast.decoder
    fast.step_model = FastStepModel(fast.step_model.hf, fast.switch, compile_backend=counter)
    fast.decoder = Decoder(fast.step_model, static_cache=True)
    try:
        fast.apply_knobs("16,8")
        for batch in (TEXT, TEXT[:1]):
            fast.generate_ids(batch, 3)
        warm = counter.frame_count
        assert 0 < warm <= 4 * 3 + 2
        for knobs in KNOBS[1:]:
            fast.apply_knobs(knobs)
            for batch in (TEXT, TEXT[:1]):
                fast.generate_ids(batch, 3)
        assert counter.frame_count == warm
    finally:
        fast.step_model, fast.decoder = saved
        fast.apply_knobs("16,8")


def test_a_config_the_block_does_not_implement_is_refused_with_the_reason(pair, molmoe_checkpoint, capsys):  # noqa: F811
    eager, _ = pair
    cfg = eager.model.config
    cfg.clip_qkv, cfg.norm_after = 8.0, True
    try:
        with pytest.raises(Unsupported, match="clip_qkv=8.0.*norm_after=True|norm_after=True.*clip_qkv=8.0"):
            extract_molmoe(eager.model, eager.switch.all_blocks)
        from harness import engine as engines

        step, name = engines.build("auto", "cpu", eager.step_model, eager.switch, "molmoe-small")
        assert name == "eager" and step is eager.step_model  # auto on the CPU is eager anyway: nothing read
        with pytest.raises(HarnessError, match="fast engine cannot run this model .*norm_after=True.*use --engine eager"):
            engines.build("fast", "cpu", eager.step_model, eager.switch, "molmoe-small")
    finally:
        cfg.clip_qkv, cfg.norm_after = None, False
