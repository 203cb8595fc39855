"""The ``molmoe:`` backend on the real MolmoE-1B remote classes (a small random checkpoint built at
test time from ``../shared/molmoe-remote``, see ``tests/molmoe_real.py``), on the project's
transformers: loading through the compatibility layer, knobs on the real decoder blocks, and the
harness decode loop against the remote forward.

These tests feed text prompts through the real tokenizer (``TextOnly``): the real processor
needs torchvision, which a CPU-only torch often cannot import; its tests are in
``test_molmoe_processor.py`` and skip with the reason where it does not import."""

from __future__ import annotations

import pytest
import torch

from harness.backends.modelconfig import find_config, load_settings
from harness.backends.molmoe import MolmoeBackend, info_from_dict
from harness.backends.molmoe_remote import load_model
from harness.knobs import select_blocks
from harness.types import GenRequest
from molmoe_real import REMOTE, REMOTE_HASHES, TextOnly, molmoe_checkpoint, remote_hashes  # noqa: F401  (fixture)

torch.set_num_threads(1)
N_NEW = 4
PROMPTS = ["vqa2: What is on the table?", "Hi", "science_qa: Which is a mammal?\nA: frog\nB: dog"]


@pytest.fixture(scope="module")
def real_model(molmoe_checkpoint):  # noqa: F811
    return load_model(str(molmoe_checkpoint), "molmoe-small", torch.float32).eval()


@pytest.fixture
def backend(real_model, molmoe_checkpoint):  # noqa: F811
    from transformers import AutoTokenizer

    settings = load_settings(find_config("molmoe-1b"))
    info = info_from_dict(real_model.config.to_dict() | {"n_layers": 16}, "molmoe-small", settings)
    b = MolmoeBackend(real_model, TextOnly(AutoTokenizer.from_pretrained(molmoe_checkpoint)), info, settings, "cpu", torch.float32)
    b.eos_token_ids = []  # random weights: decode a fixed number of tokens
    yield b
    b.apply_knobs("16,8")  # the module-scoped model goes back to its full configuration


def _requests(n=len(PROMPTS)):
    return [GenRequest(p, sample_id=str(i)) for i, p in enumerate(PROMPTS[:n])]


def _greedy_reference(model, backend, request, n_new=N_NEW):
    """A greedy loop over the remote forward: the whole sequence each step, no cache."""
    ids = backend._prepare([request], None)[0].input_ids
    toks, logits = [], []
    with torch.no_grad():
        for _ in range(n_new):
            out = model(input_ids=ids, use_cache=False).logits[:, -1]
            logits.append(out[0])
            toks.append(int(out.argmax(-1)))
            ids = torch.cat([ids, out.argmax(-1, keepdim=True)], dim=1)
    return toks, torch.stack(logits)


def test_loads_with_every_weight_from_the_file_and_edits_no_file(molmoe_checkpoint, real_model):  # noqa: F811
    from safetensors.torch import load_file

    saved = load_file(molmoe_checkpoint / "model.safetensors")
    state = real_model.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert type(real_model).__name__ == "MolmoForCausalLM" and type(real_model).__module__.endswith("modeling_molmoe")
    assert len(real_model.model.transformer.blocks) == 16
    # the remote files are used as they are: the checkpoint links to them, and loading changed none
    for f in REMOTE.glob("*.py"):
        assert (molmoe_checkpoint / f.name).resolve() == f.resolve()
    assert remote_hashes() == REMOTE_HASHES
    # forward without use_cache (5.x configs drop config.use_cache)
    out = real_model(input_ids=torch.tensor([[50279, 510, 1000]]))
    assert out.logits.shape == (1, 3, real_model.config.embedding_size)
    assert out.past_key_values is not None and len(out.past_key_values) == 16  # use_cache defaults to config.json's true


def test_full_knobs_equal_greedy_loop_over_remote_forward(backend, real_model):
    backend.apply_knobs("16,8")
    req = _requests(1)[0]
    got = backend.generate_ids([req], N_NEW).tokens[0]
    ref, _ = _greedy_reference(real_model, backend, req)
    assert got == ref


def test_skipped_blocks_equal_greedy_loop_and_differ_from_full(backend, real_model):
    req = _requests(1)[0]
    full, full_logits = _greedy_reference(real_model, backend, req)
    backend.apply_knobs("12,2")
    got = backend.generate_ids([req], N_NEW).tokens[0]
    ref, ref_logits = _greedy_reference(real_model, backend, req)  # same model object, blocks switched
    assert got == ref
    assert not torch.allclose(full_logits, ref_logits, atol=1e-3)  # the knobs change the computation


def test_only_selected_blocks_run_with_top_k_experts_and_n_layers(backend, real_model):
    importance = {i: float((i * 7) % 16) / 16 for i in range(1, 16)}
    backend.importance = importance
    backend.apply_knobs("13,3")
    active = select_blocks(13, 16, importance)
    assert backend.active_blocks == active and real_model.model.config.n_layers == 13
    blocks = backend.switch.all_blocks
    calls = [0] * 16
    routed = [0] * 16  # token-expert pairs per block, summed over the call
    tokens = [0] * 16
    hooks = []
    for i, block in enumerate(blocks):
        hooks.append(block.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1)))
        hooks.append(block.mlp.gate.register_forward_hook(
            lambda m, a, o, i=i: tokens.__setitem__(i, tokens[i] + a[0].shape[0])))
        for expert in block.mlp.experts:
            hooks.append(expert.register_forward_hook(
                lambda m, a, o, i=i: routed.__setitem__(i, routed[i] + a[0].shape[0])))
    try:
        backend.generate_ids(_requests(1), N_NEW)
    finally:
        for h in hooks:
            h.remove()
    for i in range(16):
        if i in active:
            assert calls[i] == N_NEW  # prefill + N_NEW - 1 steps
            assert routed[i] == tokens[i] * (8 if i == 0 else 3)
        else:
            assert calls[i] == routed[i] == 0
    backend.importance = None
    backend.apply_knobs("16,8")
    assert real_model.model.config.n_layers == 16 and len(real_model.model.transformer.blocks) == 16


def test_batch_of_two_equals_each_alone(backend):
    backend.apply_knobs("14,6")
    reqs = _requests(2)
    assert len(backend._prepare(reqs[:1], None)[0].input_ids[0]) != len(backend._prepare(reqs[1:], None)[0].input_ids[0])
    batched = backend.generate_ids(reqs, N_NEW).tokens
    assert batched == [backend.generate_ids([r], N_NEW).tokens[0] for r in reqs]
