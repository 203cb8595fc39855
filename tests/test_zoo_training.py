"""Training-side contracts of the reference model: inputs built exactly like the backend's,
loss only on answer tokens, knob sampling in range, bf16 master weights updating fp32 copies."""

from __future__ import annotations

import random
from pathlib import Path

import torch

import harness
from harness.backends.prompt import build_input_ids
from tools import reference_model as rm
from tools import train_data as td
from tools import train_reference as tr

PKG_DIR = Path(harness.__file__).resolve().parent / "zoo" / "reference"


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(PKG_DIR)


def test_training_batch_matches_backend_input_layout():
    tok = _tokenizer()
    stream = td.StreamingBatches(tok, batch=6, sizes=[64], seed=3, chunk_rows=2)
    pixels, ids, labels, mask = next(iter(stream))
    assert pixels.shape == (6, 3, 64, 64)
    image_id = tok.convert_tokens_to_ids(rm.IMAGE)
    for r in range(6):
        n = int(mask[r].sum())
        row, lab = ids[r, :n].tolist(), labels[r, :n].tolist()
        start = next(i for i, t in enumerate(lab) if t != -100)
        answer = row[start:]
        assert answer[-1] == tok.eos_token_id and lab[start:] == answer
        assert all(t == -100 for t in lab[:start]) and all(t == -100 for t in labels[r, n:].tolist())
        prompt = row[:start]
        assert prompt.count(image_id) == 16 and prompt[0] == tok.bos_token_id
        text = tok.decode(prompt[17:])
        assert prompt == build_input_ids(tok, text, 16, image_id, "{prompt}")


def test_knob_sampling_covers_the_trained_range():
    rng = random.Random(0)
    seen = {tr.sample_knobs(rng, 0.35, 12, 2) for _ in range(2000)}
    assert {b for b, _ in seen} == set(range(12, 17)) and {k for _, k in seen} == set(range(2, 9))
    assert (16, 8) in seen


def test_master_weights_keep_fp32_copies_of_bf16_params():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)).to(torch.bfloat16)
    w = tr.MasterWeights(model)
    assert w.separate and all(m.dtype == torch.float32 for m in w.masters)
    opt = torch.optim.SGD(w.masters, lr=0.1)
    before = [m.detach().clone() for m in w.masters]
    model(torch.ones(3, 4, dtype=torch.bfloat16)).float().sum().backward()
    w.grads_to_masters()
    assert all(p.grad is None for p in model.parameters())
    opt.step()
    w.masters_to_model()
    assert any(not torch.equal(a, b) for a, b in zip(before, w.masters))
    for p, m in zip(model.parameters(), w.masters):
        assert torch.equal(p, m.to(torch.bfloat16))


def test_training_feature_path_equals_llava_forward():
    """rm.embed_inputs (used in training) computes what LlavaForConditionalGeneration computes."""
    from transformers import AutoModelForImageTextToText

    tok = _tokenizer()
    model = AutoModelForImageTextToText.from_pretrained(PKG_DIR, dtype=torch.float32).eval()
    torch.manual_seed(0)
    for size in (64, 192):
        ids = torch.tensor([rm.prompt_ids(tok, "What color is the star?", rm.vision_tokens(size))])
        pixels = torch.randn(1, 3, size, size)
        with torch.no_grad():
            ref = model(input_ids=ids, pixel_values=pixels, interpolate_pos_encoding=True).logits
            ours = model.lm_head(model.model.language_model(inputs_embeds=rm.embed_inputs(model, ids, pixels)).last_hidden_state)
        assert torch.allclose(ref, ours, atol=1e-5)


def test_task_weights_set_the_stream_mix():
    import pytest

    w = td.parse_weights("textvqa=3, coco-caption=0")
    assert w["textvqa"] == 3.0 and w["coco-caption"] == 0.0 and w["vqav2"] == td.TASK_WEIGHTS["vqav2"]
    for bad in ("nosuchtask=1", "textvqa", "textvqa=", "textvqa=-1", "textvqa=lots"):
        with pytest.raises(SystemExit, match="--task-weights"):
            td.parse_weights(bad)
    stream = td.StreamingBatches(_tokenizer(), batch=4, sizes=[64], seed=0, chunk_rows=4,
                                 weights={t: (2.0 if t == "textvqa" else 0.25) for t in td.TASKS})
    chunk = stream._chunk(0, 0)
    counts = {t: sum(e.task == t for e in chunk) for t in td.TASKS}
    assert counts["textvqa"] == 8 and counts["scienceqa"] == 1 and counts["tallyqa"] == 3  # one row, 3 questions
    stream.weights = dict(w, **{t: 0.0 for t in td.TASKS if t != "okvqa"})
    assert {e.task for e in stream._chunk(0, 1)} == {"okvqa"}


def test_router_spread_loss_is_minus_the_top_k_entropy_of_real_tokens():
    import math

    flat = torch.zeros(4, rm.N_EXPERTS)  # every expert equally likely: top-8 entropy ln 8
    peaked = torch.full((4, rm.N_EXPERTS), -30.0)
    peaked[:, 0] = 30.0  # one expert takes it all: entropy 0
    mask = torch.ones(1, 4)
    assert math.isclose(tr.router_spread_loss([flat], 8, mask).item(), -math.log(8), rel_tol=1e-5)
    assert math.isclose(tr.router_spread_loss([flat], 2, mask).item(), -math.log(2), rel_tol=1e-5)
    assert abs(tr.router_spread_loss([peaked], 8, mask).item()) < 1e-4
    # padding tokens do not count: two flat real tokens, two peaked padding tokens
    mixed = torch.cat([flat[:2], peaked[:2]])
    assert math.isclose(tr.router_spread_loss([mixed], 8, torch.tensor([[1, 1, 0, 0]])).item(), -math.log(8), rel_tol=1e-5)
    # averaged over layers
    assert math.isclose(tr.router_spread_loss([flat, peaked], 8, mask).item(), -math.log(8) / 2, rel_tol=1e-4)


def test_set_norm_topk_prob_switches_config_and_every_router():
    from transformers import AutoConfig, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration(AutoConfig.from_pretrained(PKG_DIR))
    tr.set_norm_topk_prob(model, False)
    assert model.config.text_config.norm_topk_prob is False
    assert all(layer.mlp.gate.norm_topk_prob is False for layer in rm.language_layers(model))
    gate = rm.language_layers(model)[3].mlp.gate
    gate.top_k = 2
    h = torch.randn(5, model.config.text_config.hidden_size)
    weights = gate(h)[1]
    assert (weights.sum(-1) < 1 - 1e-4).all()  # raw softmax mass of the two chosen experts
    tr.set_norm_topk_prob(model, True)
    assert torch.allclose(gate(h)[1].sum(-1), torch.ones(5), atol=1e-5)


def test_reinit_experts_redraws_only_the_knob_blocks_moe_weights():
    from transformers import AutoConfig, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration(AutoConfig.from_pretrained(PKG_DIR))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    n = tr.reinit_experts(model, torch.Generator().manual_seed(0))
    layers = rm.language_layers(model)
    assert n == sum(p.numel() for layer in layers[1:] for p in layer.mlp.parameters())
    std = model.config.text_config.initializer_range
    for layer in layers[1:]:
        for p in layer.mlp.parameters():
            assert abs(p.std().item() - std) < 0.2 * std and abs(p.mean().item()) < 0.2 * std
    assert all((p == 0.5).all() for p in layers[0].mlp.parameters())  # block 0 always runs top_k=8
    assert all((p == 0.5).all() for p in layers[1].self_attn.parameters())
    assert all((p == 0.5).all() for p in model.model.vision_tower.parameters())


def test_reinit_experts_with_a_new_width_rebuilds_every_block_and_saves(tmp_path):
    from transformers import AutoConfig, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration(AutoConfig.from_pretrained(PKG_DIR))
    n = tr.reinit_experts(model, torch.Generator().manual_seed(0), width=8)
    layers = rm.language_layers(model)
    assert model.config.text_config.intermediate_size == 8
    assert all(layer.mlp.experts.down_proj.shape[-1] == 8 for layer in layers)
    assert n == sum(p.numel() for layer in layers for p in layer.mlp.parameters())
    model.save_pretrained(tmp_path)
    again = LlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(rm.language_layers(again)[0].mlp.experts.gate_up_proj, layers[0].mlp.experts.gate_up_proj)


def test_expert_width_without_reinit_is_refused(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        tr.parse_args(["--output", "x", "--expert-width", "8"])
    assert exc.value.code == 2
    assert "--expert-width needs --reinit-experts" in capsys.readouterr().err
    assert tr.parse_args(["--output", "x", "--expert-width", "8", "--reinit-experts"]).expert_width == 8
