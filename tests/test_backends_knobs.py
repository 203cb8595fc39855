"""Verification of knob application on tiny real-transformers models (random weights, fp32, CPU):
OLMoE, Qwen3-MoE, Mixtral, LLaVA+OLMoE, and the MolmoE adapter on a stand-in with MolmoE's module
layout (``fixtures.molmoe_standin``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import molmoe_standin, tiny
from harness.knobs import Knobs, select_blocks
from harness.types import GenRequest

torch.set_num_threads(1)  # tiny models: threads only add contention on a shared 2-core machine
N_NEW = 5
FAMILIES = tiny.FAMILIES + ("molmoe_standin",)
VLMS = ("llava_olmoe", "molmoe_standin")
_MODELS: dict = {}


def _build(family: str, seed: int = 0, n_layers: int = 6, top_k: int = 4):
    if family == "molmoe_standin":
        return molmoe_standin.build(seed, n_layers, top_k)
    return tiny.build(family, seed, n_layers, top_k)


def _model(family: str):
    """A private copy of the family's tiny model (built once per session: building is the slow part)."""
    if family not in _MODELS:
        _MODELS[family] = _build(family)
    return copy.deepcopy(_MODELS[family])


def _backend(family: str, model, importance=None):
    if family == "molmoe_standin":
        return molmoe_standin.backend(model, importance)
    return tiny.backend(family, model=model, importance=importance)


def _layers_prefix(family: str) -> str:
    return {"llava_olmoe": "model.language_model.layers.", "molmoe_standin": "model.transformer.blocks."}.get(family, "model.layers.")


def _router(family: str, block):
    return block.mlp if family == "molmoe_standin" else block.mlp.gate


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8"))


def _requests(family: str) -> list[GenRequest]:
    prompts = ["what is this?", "hi", "count the red ones"]
    vlm = family in VLMS
    return [GenRequest(p, image=_image(i) if vlm else None, sample_id=str(i)) for i, p in enumerate(prompts)]


def _run(backend, requests, n_new=N_NEW):
    """Greedy decode with no EOS stop; returns (tokens, [step logits]) for the batch."""
    backend.eos_token_ids = []
    logits = []
    prefill, step = backend.step_model.prefill, backend.step_model.step

    def rec_prefill(*a, **k):
        out = prefill(*a, **k)
        logits.append(out.detach().clone())
        return out

    def rec_step(*a, **k):
        out = step(*a, **k)
        logits.append(out.detach().clone())
        return out

    backend.step_model.prefill, backend.step_model.step = rec_prefill, rec_step
    try:
        res = backend.generate_ids(requests, n_new)
    finally:
        backend.step_model.prefill, backend.step_model.step = prefill, step
    return res.tokens, torch.stack(logits)


def _reference_greedy(model, backend, request, n_new=N_NEW):
    """Independent reference: the plain transformers forward over the whole sequence each step, no cache."""
    batch, _, _ = backend._prepare([request], backend.resolve_tier(None))
    ids = batch.input_ids
    kw = dict(batch.extras)
    toks, logits = [], []
    with torch.no_grad():
        for _ in range(n_new):
            out = model(input_ids=ids, use_cache=False, **kw).logits[:, -1]
            logits.append(out)
            nxt = out.argmax(-1)
            toks.append(int(nxt))
            ids = torch.cat([ids, nxt[:, None]], dim=1)
    return toks, torch.cat(logits)


def _truncated_model(family, model, active, top_k):
    """A fresh model built with only the kept layers' weights (in order) and top_k after layer 0."""
    tk = _build(family, seed=123, n_layers=len(active))
    src = model.state_dict()
    dst = {}
    prefix = _layers_prefix(family)
    for key in tk.state_dict():
        if key.startswith(prefix):
            j, rest = key[len(prefix):].split(".", 1)
            dst[key] = src[f"{prefix}{active[int(j)]}.{rest}"]
        else:
            dst[key] = src[key]
    tk.load_state_dict(dst)
    for key in list(dst):
        if key.startswith(prefix) and key.endswith("gate.weight"):
            j = int(key[len(prefix):].split(".", 1)[0])
            block = tk.get_submodule(prefix.rstrip(".") + f".{j}")
            if j > 0:
                _router(family, block).top_k = top_k
    return tk


@pytest.mark.parametrize("family", FAMILIES)
def test_full_knobs_equal_unmodified_model(family):
    model = _model(family)
    b = _backend(family, model=model)
    b.apply_knobs(Knobs(b.info.n_blocks, b.info.default_top_k))
    req = _requests(family)[0]
    toks, logits = _run(b, [req])
    ref_toks, ref_logits = _reference_greedy(model, b, req)
    assert toks[0] == ref_toks
    torch.testing.assert_close(logits[:, 0], ref_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("importance", [None, {1: 0.1, 2: 0.9, 3: 0.5, 4: 0.8, 5: 0.2}])
def test_skipped_config_equals_model_built_with_kept_layers(family, importance):
    model = _model(family)
    b = _backend(family, model=copy.deepcopy(model), importance=importance)
    b.apply_knobs("4,2")
    active = select_blocks(4, 6, importance)
    assert b.active_blocks == active
    req = _requests(family)[0]
    toks, logits = _run(b, [req])
    ref = _truncated_model(family, model, active, 2)
    ref_toks, ref_logits = _reference_greedy(ref, b, req)
    assert toks[0] == ref_toks
    torch.testing.assert_close(logits[:, 0], ref_logits, atol=1e-5, rtol=0)
    # and it really differs from the full model (the test can fail)
    full_toks, full_logits = _reference_greedy(model, b, req)
    assert not torch.allclose(full_logits, ref_logits, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_skipped_blocks_never_run_and_routers_use_top_k(family):
    b = _backend(family, _model(family), importance=[0.0, 0.3, 0.9, 0.1, 0.8, 0.7])
    b.apply_knobs("4,3")
    active = set(b.active_blocks)
    assert active == {0, 2, 4, 5}
    calls = [0] * 6
    ks: dict[int, set] = {i: set() for i in range(6)}
    hooks = []
    for i, block in enumerate(b.switch.all_blocks):
        hooks.append(block.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1)))

        def pre(m, args, i=i):
            idx = args[1]
            ks[i].add(idx.shape[-1])
            flat = idx.reshape(-1, idx.shape[-1])
            assert all(len(set(r)) == len(r) for r in flat.tolist())  # k distinct experts per token

        hooks.append(block.mlp.experts.register_forward_pre_hook(pre))
    try:
        _run(b, _requests(family)[:1], n_new=N_NEW)
    finally:
        for h in hooks:
            h.remove()
    for i in range(6):
        if i in active:
            assert calls[i] == N_NEW  # prefill + (N_NEW - 1) decode steps
            assert ks[i] == ({4} if i == 0 else {3})
        else:
            assert calls[i] == 0 and ks[i] == set()


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_equals_per_sample(family):
    b = _backend(family, model=_model(family))
    b.apply_knobs("5,3")
    reqs = _requests(family)
    batched, _ = _run(b, reqs)
    single = [_run(b, [r])[0][0] for r in reqs]
    assert batched == single


@pytest.mark.parametrize("family", FAMILIES)
def test_switching_configs_equals_fresh_loads(family):
    base = _model(family)
    b = _backend(family, model=copy.deepcopy(base), importance=[0, 5, 1, 4, 2, 3])
    reqs = _requests(family)[:2]
    seq = ["6,4", "3,1", "6,4", "3,1"]
    got = {}
    for k in seq:
        b.apply_knobs(k)
        toks, logits = _run(b, reqs)
        if k in got:  # revisiting a config gives identical results
            assert toks == got[k][0] and torch.equal(logits, got[k][1])
        got[k] = (toks, logits)
    for k in set(seq):
        fresh = _backend(family, model=copy.deepcopy(base), importance=[0, 5, 1, 4, 2, 3])
        fresh.apply_knobs(k)
        toks, logits = _run(fresh, reqs)
        assert toks == got[k][0] and torch.equal(logits, got[k][1])
    assert got["6,4"][0] != got["3,1"][0]


def test_token_counts_include_vision_tokens_per_tier():
    b = _backend("llava_olmoe", _model("llava_olmoe"))
    req = _requests("llava_olmoe")[0]
    # CLIP with 'full' feature selection keeps CLS: (side / 8)^2 + 1
    assert b.info.vision_tokens == {"low": 5, "medium": 10, "high": 17}
    for tier, nv in b.info.vision_tokens.items():
        text, vis = b.count_tokens(req, tier)
        assert vis == nv and text == 1 + len(req.prompt.encode())
        out = b.generate([req], 2, tier=tier)[0]
        assert out.vision_tokens == nv and out.input_tokens == text + nv
        assert out.timings.vision_ms is not None and out.timings.lm_prefill_ms is not None
    assert b.count_tokens(GenRequest("abc"), "low") == (4, 0)
