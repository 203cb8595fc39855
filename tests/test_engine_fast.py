"""The fast engine (harness.engine) on the CPU: the same tokens as the eager engine for every
configuration of a small knob space, in fp32 on the tiny models, and no compilation when
knobs change after warm-up."""

from __future__ import annotations

import pytest
import torch

from fixtures import tiny
from harness.decode import Decoder
from harness.engine.step import FastStepModel
from harness.types import GenRequest

torch.set_num_threads(1)

KNOBS = ("6,4", "5,4", "4,4", "6,2", "5,1", "4,3", "6,1")
IMPORTANCE = {0: 9.0, 1: 1.0, 2: 8.0, 3: 2.0, 4: 7.0, 5: 6.0}  # drops blocks 1 and 3 first, not a prefix


def _pair(family, importance=None):
    model = tiny.build(family)
    eager = tiny.backend(family, model=model, importance=importance)
    fast = tiny.backend(family, model=model, importance=importance, engine="fast")
    for b in (eager, fast):
        b.eos_token_ids = []
    return eager, fast


def _requests(family):
    from PIL import Image

    img = Image.new("RGB", (40, 30), (200, 30, 90)) if family == "llava_olmoe" else None
    return [GenRequest("hello", image=img), GenRequest("a longer prompt than the first", image=img)]


@pytest.mark.parametrize("family", ["olmoe", "llava_olmoe", "qwen3_moe", "mixtral"])
def test_fast_tokens_equal_eager_for_every_configuration(family):
    eager, fast = _pair(family, IMPORTANCE if family == "olmoe" else None)
    assert (eager.engine, fast.engine) == ("eager", "fast")
    reqs = _requests(family)
    for knobs in KNOBS:
        eager.apply_knobs(knobs)
        fast.apply_knobs(knobs)
        for batch in (reqs, reqs[1:]):  # batch 2 (left padding) and batch 1
            want = eager.generate_ids(batch, 6).tokens
            assert fast.generate_ids(batch, 6).tokens == want, (family, knobs, len(batch))


@pytest.mark.parametrize("family", ["olmoe", "llava_olmoe"])
def test_prompts_padded_to_a_bucket_give_the_eager_tokens(family):
    """The CUDA path pads each prompt pass to a multiple of a bucket (so that a graph per padded
    length serves every prompt): the padding must change no token, at batch 1 (causal flash) and
    batch 2 (left padding and a bias), with a bucket shorter and longer than the prompts."""
    eager, fast = _pair(family, IMPORTANCE if family == "olmoe" else None)
    reqs = _requests(family)
    for bucket in (8, 64):
        fast.step_model = FastStepModel(fast.step_model.hf, fast.switch, prompt_bucket=bucket)
        fast.decoder = Decoder(fast.step_model, static_cache=True)
        for knobs in ("6,4", "4,2"):
            eager.apply_knobs(knobs)
            fast.apply_knobs(knobs)
            for batch in (reqs, reqs[1:]):
                prepared = fast._prepare(list(batch), fast.resolve_tier(None))[0]
                n = prepared.input_ids.shape[1]
                assert fast.decoder.shape_key(prepared, 5)[3] == -(-n // bucket) * bucket
                assert fast.generate_ids(batch, 5).tokens == eager.generate_ids(batch, 5).tokens, (bucket, knobs, len(batch))


def test_tiers_change_nothing_but_the_prompt():
    eager, fast = _pair("llava_olmoe")
    reqs = _requests("llava_olmoe")
    eager.apply_knobs("5,2")
    fast.apply_knobs("5,2")
    for tier in ("low", "medium", "high"):
        assert fast.generate_ids(reqs, 4, tier=tier).tokens == eager.generate_ids(reqs, 4, tier=tier).tokens


def test_switching_configurations_compiles_nothing_after_warm_up():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    _, fast = _pair("olmoe", IMPORTANCE)
    counter = CompileCounter()
    fast.step_model = FastStepModel(fast.step_model.hf, fast.switch, compile_backend=counter)
    fast.decoder = Decoder(fast.step_model, static_cache=True)
    reqs = _requests("olmoe")
    fast.apply_knobs("6,4")
    for batch in (reqs, reqs[:1]):  # warm-up: prefill and decode at batch 1 and batch 2
        fast.generate_ids(batch, 3)
    warm = counter.frame_count
    # per shape kind (batch 1 or more x prompt or decode step): one compiled block step shared by
    # every block, the pass's prologue and head, and (decode steps) the loop's bookkeeping
    assert 0 < warm <= 4 * 3 + 2
    longer = [GenRequest("a prompt long enough to need a wider cache " * 8)] * 3
    for knobs in KNOBS[1:]:  # six other configurations: blocks, top_k and batch size all change
        fast.apply_knobs(knobs)
        for batch in (reqs, reqs[:1], longer):
            fast.generate_ids(batch, 3)
    assert counter.frame_count == warm


def test_expert_kernels_agree():
    from harness.engine.moe import moe_grouped_mm, moe_loop

    torch.manual_seed(0)
    n_exp, hid, inter = 8, 32, 16
    w13, w2 = torch.randn(n_exp, 2 * inter, hid), torch.randn(n_exp, hid, inter)
    x = torch.randn(5, hid)
    topv, topi = torch.topk(torch.softmax(torch.randn(5, n_exp), -1), 4)
    full = moe_loop(x, topv, topi, 4, w13, w2)
    masked = torch.where(torch.arange(4) < 2, topv, 0.0)
    assert torch.allclose(moe_loop(x, topv, topi, 2, w13, w2), moe_loop(x, masked, topi, 4, w13, w2), atol=1e-5)
    assert not torch.allclose(full, moe_loop(x, topv, topi, 2, w13, w2))
    if hasattr(torch.nn.functional, "grouped_mm") or hasattr(torch, "_grouped_mm"):
        k_t = torch.tensor([2])
        assert torch.allclose(moe_grouped_mm(x, masked, topi, k_t, w13, w2), moe_loop(x, topv, topi, 2, w13, w2), atol=1e-4)


_INTERPRETED = """
import torch
from harness.engine import triton_moe
from harness.engine.moe import moe_loop
torch.manual_seed(1)
n_exp, hid, inter, kmax = 8, 32, 16, 4
w13, w2 = torch.randn(n_exp, 2 * inter, hid) * 0.2, torch.randn(n_exp, hid, inter) * 0.2
for n_tokens in (1, 5, 70):  # 70 tokens: the prompt tiles and the torch bookkeeping
    x = torch.randn(n_tokens, hid)
    topv, topi = torch.topk(torch.softmax(torch.randn(n_tokens, n_exp), -1), kmax)
    want = moe_loop(x, topv, topi, 3, w13, w2)
    k_t = torch.tensor([3], dtype=torch.int32)
    unfused = lambda *a: triton_moe.moe_grouped(*a, cfg=triton_moe.Config(fused_act=False))  # noqa: E731
    for fn in (triton_moe.moe_pairwise, triton_moe.moe_grouped, unfused):
        got = fn(x, torch.where(torch.arange(kmax) < 3, topv, 0.0), topi, k_t, w13, w2)
        assert torch.allclose(got, want, atol=1e-4), (fn, n_tokens)
for n_tokens, kmax_, n_exp_, bm in ((1, 8, 64, 16), (5, 4, 8, 4), (64, 8, 64, 16), (3, 2, 60, 2)):
    gen = torch.Generator().manual_seed(n_tokens)  # its own generator: the checks below keep their draws
    topi_ = torch.stack([torch.randperm(n_exp_, generator=gen)[:kmax_] for _ in range(n_tokens)])
    for k in (kmax_, 1):  # the one-program bookkeeping against the torch ops (both keep pair order within a group)
        k_t = torch.tensor([k], dtype=torch.int32)
        one = triton_moe.tiles_of(topi_, k_t, n_exp_, bm)
        triton_moe.ALIGN_MAX_PAIRS, saved = 0, triton_moe.ALIGN_MAX_PAIRS
        try:
            ops = triton_moe.tiles_of(topi_, k_t, n_exp_, bm)
        finally:
            triton_moe.ALIGN_MAX_PAIRS = saved
        for name, a, b in zip(("order", "tile_e", "tile_first", "pair_first", "counts"), one, ops):
            if name == "tile_e":  # past the last tile both name a group > E
                a, b = a.clamp(max=n_exp_ + 1), b.clamp(max=n_exp_ + 1)
            assert torch.equal(a.long(), b.long()), (name, n_tokens, k, a, b)
        assert int(one[4][-1]) == n_tokens * (kmax_ - k)  # the skipped slots: a last group
from harness.engine.block import route
from harness.engine.weights import LMSpec
for renorm, in_float, n_exp in ((False, False, 64), (True, True, 60)):
    spec = LMSpec("x", 8, 2, 2, 4, n_exp, 8, 1e-6, "none", renorm, in_float, None, 1.0)
    # distinct logits 0.05 apart: no ties in bf16, where torch.topk's order among equals is unspecified
    logits = (torch.stack([torch.randperm(n_exp) for _ in range(5)]).float() * 0.05 - 1.5).to(torch.bfloat16)
    for k in (8, 5, 1):
        k_t = torch.tensor([k], dtype=torch.int32)
        wv, wi = route(spec, logits, k_t, torch.bfloat16)
        gv, gi = triton_moe.route(logits, k_t, 8, renorm, torch.float32 if in_float else torch.bfloat16)
        assert torch.equal(gi, wi) and gv.dtype == wv.dtype, (renorm, k)
        assert torch.allclose(gv.float(), wv.float(), rtol=1e-2, atol=1e-6), (renorm, k)
from harness.engine.moe import run_moe
import torch.nn.functional as F
w13, w2 = torch.randn(60, 2 * inter, hid) * 0.2, torch.randn(60, hid, inter) * 0.2
router = torch.randn(60, hid)
for renorm, in_float in ((False, False), (True, True)):  # the engine's entry: router product, routing, experts
    spec = LMSpec("x", 8, 2, 2, 4, 60, kmax, 1e-6, "none", renorm, in_float, None, 1.0)
    for n_tokens in (1, 3, 12):  # pairwise (slots summed by the down kernel); grouped
        x = torch.randn(n_tokens, hid)
        for k in (4, 1):
            k_t = torch.tensor([k], dtype=torch.int32)
            topv, topi = route(spec, F.linear(x, router), k_t, x.dtype)
            want = moe_loop(x, topv, topi, k, w13, w2)
            for _ in range(2):  # the last-to-arrive counters are back at zero after each launch
                got = run_moe("triton", spec, x, router, k, k_t, w13, w2).sum(1)
                assert torch.allclose(got, want, atol=1e-4), (renorm, n_tokens, k)
                # HARNESS_ENGINE_ROUTER=fused: the router product and the routing in one kernel (pairwise tokens;
                # more fall back to the two kernels)
                fused = run_moe("triton", spec, x, router, k, k_t, w13, w2, fused_router=True).sum(1)
                assert torch.allclose(fused, want, atol=1e-4), (renorm, n_tokens, k)
from harness.engine.triton_arrive import counters
assert int(counters("cpu", 1).abs().sum()) == 0
import torch.nn.functional as F
from harness.engine import triton_gemv
# the router product and the routing in one kernel: the two kernels' result (the same logits, the same routing code)
for n_exp, hid_, renorm, in_float, dt in ((64, 32, False, False, torch.float32), (60, 48, True, True, torch.float32),
                                          (64, 32, False, False, torch.bfloat16)):
    rw = (torch.randn(n_exp, hid_) * 0.3).to(dt)
    for n_tokens in (1, 3, 8):
        xs = torch.randn(n_tokens, hid_).to(dt)
        for k in (8, 3):
            k_t = torch.tensor([k], dtype=torch.int32)
            out = torch.float32 if in_float else dt
            logits_ = torch.cat([triton_gemv.launch(xs[i:i + 1], rw) for i in range(n_tokens)])  # the GEMV takes one row
            wv, wi = triton_moe.route(logits_, k_t, 8, renorm, out)
            for _ in range(2):  # its last-to-arrive counters are back at zero after each launch
                gv, gi = triton_moe.router_route(xs, rw, k_t, 8, renorm, out)
                assert torch.equal(gi, wi) and torch.equal(gv, wv), (n_exp, n_tokens, k, dt)
assert int(counters("cpu", 8).abs().sum()) == 0
for n, kk, bn, bk in ((64, 32, 8, 16), (50, 48, 16, 32)):  # several loads per row; a partial last tile and load
    x, w = torch.randn(1, 1, kk), torch.randn(n, kk)
    assert torch.allclose(triton_gemv.launch(x, w, bn, bk), F.linear(x, w), atol=1e-4), (n, kk)
from harness.engine.block import attention_bias
from harness.engine import triton_attention
from harness.engine.triton_attention import decode_attention
assert [triton_attention.chunk_for(w) for w in (256, 4096, 4352, 16384, 32768)] == [32, 32, 64, 128, 256]
for B, H, KV, W, D in ((1, 4, 4, 256, 16), (2, 4, 2, 512, 16)):  # four and eight chunks, grouped-query heads
    q, kc, vc = torch.randn(B, H, 1, D), torch.randn(B, KV, W, D), torch.randn(B, KV, W, D)
    allowed = torch.zeros(B, 1, 1, W, dtype=torch.bool)
    allowed[0, ..., :300 if W > 256 else 100] = True  # with two chunks, the second is partly masked
    allowed[-1, ..., 5:40] = True  # left padding; the second chunk entirely masked
    bias = attention_bias(allowed, torch.float32)
    want = F.scaled_dot_product_attention(q, kc.repeat_interleave(H // KV, 1), vc.repeat_interleave(H // KV, 1),
                                          attn_mask=bias, scale=D ** -0.5)
    cnt = counters("cpu", B * H)
    for _ in range(2):  # the last chunk of each head combines; its counter is back at zero for the next call
        assert torch.allclose(decode_attention(q, kc, vc, bias, D ** -0.5, cnt), want, atol=1e-4), (B, KV, W)
    for chunk in (128, 256):  # one and two chunks
        got = triton_attention.launch(q, kc, vc, bias, D ** -0.5, chunk, cnt)
        assert torch.allclose(got, want, atol=1e-4), (B, KV, W, chunk)
    for chunk, tile in ((32, 4), (32, 2), (64, 8), (256, 2)):  # the run-time combine: several tiles, one partial, one
        got = triton_attention.launch(q, kc, vc, bias, D ** -0.5, chunk, cnt, loop_combine=tile)
        assert torch.allclose(got, want, atol=1e-4), (B, KV, W, chunk, tile)
    assert int(cnt.abs().sum()) == 0
print("ok")
"""


def test_triton_kernels_match_the_loop_in_the_interpreter():
    """The Triton expert kernels (pairwise and grouped), the Triton router (softmax + sorted
    top-k + zeroed slots + renormalisation, 64 and 60 experts), the GEMV and the split-KV decode
    attention (several chunk sizes) against the torch code, through
    Triton's CPU interpreter (a fresh
    process: Triton reads TRITON_INTERPRET when it is first imported)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETED], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_cudnn_attention_is_off_for_cuda_runs_unless_asked_for(monkeypatch):
    """cuDNN attention builds a plan per new input shape inside measured time, so a CUDA run turns
    it off (the flag is process-wide and settable without a GPU); HARNESS_CUDNN_SDPA=1 keeps it."""
    from harness.engine import configure_attention

    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        assert configure_attention("cpu") is None and torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.delenv("HARNESS_CUDNN_SDPA", raising=False)
        assert "cuDNN off" in configure_attention("cuda:1") and not torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.setenv("HARNESS_CUDNN_SDPA", "1")
        assert configure_attention("cuda") == "cudnn+flash+efficient" and torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def test_the_run_records_what_executed_it():
    """``summary.json``'s ``engine_settings``: the engine and the kernels that produced its latencies."""
    _, fast = _pair("olmoe")
    assert fast.engine_settings == {"engine": "fast", "variant": "fast", "moe_kernel": "loop", "prefill_kernel": "loop", "attention": "sdpa", "gemv": "torch",
                                    "cuda_graphs": False, "prefill_graphs": False, "vision_graphs": False, "prompt_bucket": 0,
                                    "compile_backend": "eager"}


def test_a_kernel_override_is_another_execution_mode_for_latency_fits(monkeypatch):
    """A fit made with other kernels is never used silently: an override in the environment is part
    of the fit key's engine, and the profile command that makes the matching fit carries it."""
    from harness.latency.firstuse import backend_key
    from harness.latency.fit_files import profile_command

    monkeypatch.setenv("HARNESS_ENGINE_MOE", "grouped_mm")
    monkeypatch.setenv("HARNESS_ENGINE_ATTN", "triton")  # acts on CUDA only: not part of a CPU run's mode
    _, fast = _pair("olmoe")
    assert fast.step_model.moe_kernel == "grouped_mm" and fast.engine_variant == "fast+moe=grouped_mm"
    key = backend_key(fast, fast.info, "abc")
    assert key.engine == "fast+moe=grouped_mm" and "__fast-moe-grouped-mm__" in key.slug()
    cmd = profile_command(key)
    assert cmd.startswith("HARNESS_ENGINE_MOE=grouped_mm harness profile") and "--engine fast" in cmd
    monkeypatch.delenv("HARNESS_ENGINE_MOE")
    assert backend_key(_pair("olmoe")[1], fast.info, "abc").engine == "fast"


def test_graphed_vision_replays_per_shape_and_runs_eagerly_where_capture_fails(capsys):
    """The fast engine's vision encoder and projector replay (CUDA only; here the graph store is a
    stand-in): one capture per input shape, the new input copied into the captured one; a shape
    whose capture raises runs eagerly, with one warning."""
    from harness.engine.step import _GraphedVision

    class Vision:
        def features(self, x):
            return x * 2

        def project(self, x):
            return x + 1

    class Graphs:
        def __init__(self, fail):
            self.fail, self.captured, self.replays = fail, {}, 0

        def get(self, key, body):
            if self.fail:
                raise RuntimeError("operation not permitted when stream is capturing")
            if key not in self.captured:
                out = body()
                store = self

                class G:
                    def replay(self, body=body, out=out):
                        store.replays += 1
                        out.copy_(body())

                self.captured[key] = (G(), out)
            return self.captured[key]

    graphs = Graphs(fail=False)
    v = _GraphedVision(Vision(), graphs)
    for x in (torch.ones(2, 3), torch.full((2, 3), 5.0), torch.ones(4, 3)):
        assert torch.equal(v.project(v.features(x)), x * 2 + 1)
    assert len(graphs.captured) == 4 and graphs.replays == 6  # (features, project) x two shapes
    broken = _GraphedVision(Vision(), Graphs(fail=True))
    for _ in range(2):
        assert torch.equal(broken.features(torch.ones(2, 3)), torch.full((2, 3), 2.0))
    assert capsys.readouterr().err.count("could not be captured") == 1


def test_the_fused_router_is_a_cuda_execution_mode_of_its_own(monkeypatch):
    """HARNESS_ENGINE_ROUTER=fused (the router product and the routing in one kernel) acts on CUDA
    only: part of a CUDA run's fit key, not of a CPU run's, whose engine keeps the two kernels."""
    from harness.engine import variant

    monkeypatch.setenv("HARNESS_ENGINE_ROUTER", "fused")
    assert variant("fast", "cuda") == "fast+router=fused" and variant("fast", "cpu") == "fast"
    _, fast = _pair("olmoe")
    assert fast.step_model.router == "split" and fast.engine_variant == "fast"


def test_an_unknown_kernel_override_is_a_one_line_error(monkeypatch):
    from harness.errors import HarnessError

    monkeypatch.setenv("HARNESS_ENGINE_MOE", "fastest")
    with pytest.raises(HarnessError, match="HARNESS_ENGINE_MOE.*use one of loop, grouped_mm, triton"):
        _pair("olmoe")


def test_one_set_of_prompt_buffers_serves_every_prompt_shape_of_a_cache(monkeypatch):
    """On CUDA the batch is bucketed (a cache of 4 rows serves 3 and 4 samples) and every prompt
    shape of a cache reads views at the start of one shared set of input buffers: what an earlier
    prompt of another batch size or length left there must change no token."""
    from harness.latency.measure import batch_bucket

    eager, fast = _pair("olmoe")
    sm = FastStepModel(fast.step_model.hf, fast.switch, prompt_bucket=8)
    monkeypatch.setattr(sm, "rows_for", batch_bucket)  # as on CUDA
    fast.step_model, fast.decoder = sm, Decoder(sm, static_cache=True)
    prompts = [GenRequest(text) for text in ("hi", "a longer prompt than the first", "mid length", "x y z " * 6)]
    for batch in (prompts, prompts[1:], prompts[:3], prompts):  # 4, 3, 3, 4 rows of one 4-row cache; lengths differ
        assert fast.generate_ids(batch, 4).tokens == eager.generate_ids(batch, 4).tokens, len(batch)
    caches = list(sm._caches.values())
    assert [c.rows for c in caches] == [4]
    flat = caches[0].graph_inputs["prefill"]
    assert flat["emb"].numel() == 4 * caches[0].width * sm.spec.hidden


def test_caches_share_storage_and_change_no_token(monkeypatch):
    """A cache smaller than the largest one made so far is a view at the start of that one's storage
    (memory does not add up over widths); a larger one gets its own; tokens stay the eager engine's
    whatever order the widths come in."""
    import harness.decode as decode

    monkeypatch.setattr(decode, "STATIC_BUCKET", 8)  # widths of 8-column steps: 3, 12 and 30 new tokens differ
    eager, fast = _pair("olmoe")
    reqs = [GenRequest("a longer prompt than the first")]
    want = {n: eager.generate_ids(reqs, n).tokens for n in (3, 12, 30)}
    for n in (12, 3, 30, 3, 12):
        assert fast.generate_ids(reqs, n).tokens == want[n], n
    caches = sorted(fast.step_model._caches.values(), key=lambda c: c.width)
    assert len(caches) == 3 and all(c.rows == caches[0].rows for c in caches)
    ptr = [c.k[0].untyped_storage().data_ptr() for c in caches]
    assert ptr[0] == ptr[1] != ptr[2]  # 3 tokens came after 12: a view of its storage; 30 needed more
    for c in caches:
        assert c.k[0].is_contiguous() and c.k[0].shape[2] == c.width and c.v[-1].shape == c.k[-1].shape


def test_which_decode_attention_a_run_uses():
    """Triton's split-KV kernels on CUDA by default; PyTorch's off CUDA, when asked for, and by default
    for a head size Triton's kernels cannot take (asking for them there is a one-line error)."""
    from harness.engine.step import decode_attention_kernel
    from harness.errors import HarnessError

    assert decode_attention_kernel(None, True, 128) == "triton" and decode_attention_kernel("sdpa", True, 128) == "sdpa"
    assert decode_attention_kernel("triton", False, 128) == "sdpa" and decode_attention_kernel(None, True, 80) == "sdpa"
    with pytest.raises(HarnessError, match="power-of-two head size.*80.*HARNESS_ENGINE_ATTN=sdpa"):
        decode_attention_kernel("triton", True, 80)
    with pytest.raises(HarnessError, match="HARNESS_ENGINE_ATTN='auto'.*use one of triton, sdpa"):
        decode_attention_kernel("auto", True, 128)


def test_the_one_graph_decode_step_gives_the_step_by_step_tokens_and_stops_at_eos():
    """The engine's ``greedy_step`` (the decode loop's bookkeeping inside the step, one graph on
    CUDA) against the same engine driven step by step through ``step`` (the bookkeeping outside),
    and against the eager engine: the same tokens, finish reasons and number of timed steps, with
    an EOS met in the middle of one sample."""
    eager, fast = _pair("olmoe")
    reqs = _requests("olmoe")
    first = eager.generate_ids(reqs, 6).tokens
    eos = first[1][2]  # the second sample's third token: it stops there, the first may not
    for b in (eager, fast):
        b.eos_token_ids = [eos]

    class StepByStep:  # the engine without greedy_step/loop_state: the decode loop runs step()
        def __init__(self, sm):
            self.sm, self.device = sm, sm.device

        def __getattr__(self, name):
            if name in ("greedy_step", "loop_state"):
                raise AttributeError(name)
            return getattr(self.sm, name)

    fused = Decoder(fast.step_model, static_cache=True)
    plain = Decoder(StepByStep(fast.step_model), static_cache=True)
    assert fused.fused() and not plain.fused()
    results = []
    for decoder in (fused, plain):
        fast.decoder = decoder
        results.append(fast.generate_ids(reqs, 6))
    want = eager.generate_ids(reqs, 6)
    for got in results:
        assert got.tokens == want.tokens and got.finish_reasons == want.finish_reasons
    assert "eos" in want.finish_reasons
    assert len(results[0].timer.step_timings(2).decode_step_ms) == len(results[1].timer.step_timings(2).decode_step_ms)


def test_loop_state_start_and_restore():
    """A state of 4 rows loaded with 3 prompts: the padding row is finished from the start and sees
    column 0 only; ``choose`` writes one column and moves on; a snapshot puts everything back."""
    from harness.decode import LoopState

    st = LoopState(4, 8, 10, "cpu")
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1]])
    st.start(mask, (mask.cumsum(-1) - 1).clamp(min=0), eos=[7], pad=0)
    assert st.finished.tolist() == [False, False, False, True] and st.mask[3].tolist() == [1] + [0] * 9
    assert st.col.item() == 2 and st.pos[:3, 0].tolist() == [1, 2, 0]
    saved = st.snapshot()
    st.choose(torch.nn.functional.one_hot(torch.tensor([7, 3, 5]), 10).float())
    assert st.out[:, 0].tolist() == [7, 3, 5, 0] and st.finished.tolist() == [True, False, False, True]
    assert (st.col.item(), st.idx.item(), st.pos[:3, 0].tolist()) == (3, 1, [2, 3, 1]) and not st.done.item()
    st.open_column()
    assert st.mask[:, 3].tolist() == [1, 1, 1, 1]
    st.restore(saved)
    assert st.col.item() == 2 and st.idx.item() == 0 and st.finished.tolist() == [False, False, False, True]
    assert st.mask[:, 3].tolist() == [0, 0, 0, 0]


def test_the_cpu_expert_path_needs_no_triton():
    """CPU-only torch comes without Triton: the ``loop`` kernel's parts format and experts must not
    import it (only the Triton kernels' pairwise threshold lives there)."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["triton"] = None  # any import of it fails
import torch
from harness.engine.moe import parts_format, run_moe
from harness.engine.weights import LMSpec
assert parts_format("loop", 8, torch.float32, 1, prompt=False) == (1, torch.float32)
assert parts_format("grouped_mm", 8, torch.bfloat16, 1, prompt=True) == (8, torch.bfloat16)
spec = LMSpec("x", 8, 2, 2, 4, 6, 2, 1e-6, "none", False, False, None, 1.0)
x, router = torch.randn(3, 4), torch.randn(6, 4)
out = run_moe("loop", spec, x, router, 2, torch.tensor([2]), torch.randn(6, 8, 4), torch.randn(6, 4, 4))
assert out.shape == (3, 1, 4)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("engine", ["eager", "fast"])
def test_a_batch_is_prepared_once_for_its_warm_up_and_timed_calls(engine, monkeypatch):
    """A run's untimed warm-up calls and its timed call pass the same requests: their inputs
    (tokens, image pixels, the copy to the device) are prepared once and reused, unchanged by the
    decode loop; new requests or another tier are prepared again."""
    model = tiny.build("llava_olmoe")
    b = tiny.backend("llava_olmoe", model=model, engine=engine)
    b.eos_token_ids = []
    calls = []
    original = b._prepare
    monkeypatch.setattr(b, "_prepare", lambda reqs, tier: calls.append(tier) or original(reqs, tier))
    reqs = _requests("llava_olmoe")
    first = b.generate_ids(reqs, 5).tokens
    b.generate(list(reqs), 5)
    assert b.generate_ids(list(reqs), 5).tokens == first and len(calls) == 1  # the same request objects: prepared once
    fresh = [GenRequest(r.prompt, image=r.image) for r in reqs]
    assert b.generate_ids(fresh, 5).tokens == first and len(calls) == 2  # equal but new requests: prepared again
    b.generate_ids(fresh, 5, tier="low")
    b.generate_ids(fresh, 5, tier=b.resolve_tier(None))
    assert len(calls) == 4  # another tier, then back: prepared each time the tier changes


def test_a_reservation_gives_every_cache_of_a_run_one_storage(monkeypatch):
    """After ``reserve`` for the largest call (2 rows, the longer prompt, 30 new tokens), every cache
    of every row count and width, and the prompt pass's input buffers, are views of the one storage
    taken then: nothing more is allocated as calls of other shapes come, and the tokens are the eager
    engine's in every order."""
    import harness.decode as decode

    monkeypatch.setattr(decode, "STATIC_BUCKET", 8)
    eager, fast = _pair("olmoe")
    one, two = [GenRequest("a longer prompt than the first")], [GenRequest("hi"), GenRequest("a longer prompt than the first")]
    longest = max(sum(fast.count_tokens(r)) for r in two)
    fast.reserve(2, longest, 30)
    store = {k: v.untyped_storage().data_ptr() for k, v in fast.step_model._store.items()}
    assert {"k0", "v0", "emb", "pos", "mask", "cols"} <= set(store)
    for reqs, n in ((one, 3), (two, 12), (one, 30), (two, 30), (two, 3), (one, 12)):
        assert fast.generate_ids(reqs, n).tokens == eager.generate_ids(reqs, n).tokens, (len(reqs), n)
    caches = list(fast.step_model._caches.values())
    assert len({(c.rows, c.width) for c in caches}) == 6
    assert {c.k[0].untyped_storage().data_ptr() for c in caches} == {store["k0"]}
    assert {k: v.untyped_storage().data_ptr() for k, v in fast.step_model._store.items()} == store


_SHAPE_KINDS = r"""
import torch
from harness.engine.block import attn_block
from harness.engine.compile_limits import configure_compile, limit_note, recompile_limit
from harness.engine.step import _dynamic
from harness.engine.triton_arrive import counters
from harness.engine.triton_attention import MAX_WIDTH, chunk_for, combine_width, decode_attention
from harness.engine.weights import LMSpec
import triton

import sys
limit = configure_compile("triton") if sys.argv[1] == "engine" else configure_compile("triton") and 8
import torch._dynamo.config as dc
dc.recompile_limit = limit  # "default": torch's own
compiles = []


def backend(gm, example_inputs):  # counts compilations; the graph runs as traced
    compiles.append(1)
    return gm.forward


H, KV, D, HID = 4, 4, 16, 64
spec = LMSpec("olmoe", HID, H, KV, D, 4, 2, 1e-5, "full", False, False, None, 1.0)
w = (torch.ones(HID), torch.randn((H + 2 * KV) * D, HID), torch.randn(HID, H * D), torch.ones(HID),
     torch.ones(H * D), torch.ones(KV * D))
attn = torch.compile(lambda *a, counters=None: attn_block(spec, *a, decode_attention=decode_attention,
                                                          attention_max_width=MAX_WIDTH, counters=counters),
                     backend=backend, dynamic=None)
cnt = counters("cpu", 64)
widths = range(256, 4608 + 1, 256)


def call(rows, t, width):
    x, parts = torch.randn(rows, t, HID), torch.zeros(rows * t, 2, HID)
    kc, vc = torch.zeros(rows, KV, width, D), torch.zeros(rows, KV, width, D)
    cos, sin = torch.ones(rows, 1, t, D), torch.zeros(rows, 1, t, D)
    bias, cols = torch.zeros(rows, 1, t, width), torch.arange(t)
    args = (_dynamic(x, 0, 1), _dynamic(parts, 0), _dynamic(kc, 0, 2), _dynamic(vc, 0, 2), _dynamic(cos, 0, 2),
            _dynamic(sin, 0, 2), _dynamic(bias, 0, 2, 3), _dynamic(cols, 0)) + w
    try:
        attn(*args, counters=cnt)
    except Exception:  # noqa: BLE001 - a decode step's kernel cannot launch without a GPU; it compiled
        pass


# a batched run's order: its batches (3 rows) first, then single rows (a batch of one, a batch-1 fit)
for rows in (3, 1):
    for width in widths:
        call(rows, 64, width)  # prompt pass
        call(rows, 1, width)  # decode step
kinds = {(chunk_for(wd), combine_width(triton.cdiv(wd, chunk_for(wd)))) for wd in widths}
expected = 2 * (len(kinds) + 1)
print(len(compiles), expected, limit, recompile_limit("triton"), int(limit_note() is not None))
"""


def test_a_batched_run_compiles_every_shape_kind_of_the_decode_attention():
    """The split-KV attention's constants (chunk, combine width) follow the cache width, so
    torch.compile keeps one version of the block step per row kind and per constant set: 14 over
    the widths 256 to 4,608 at one row and at three. With torch's default limit (8) the versions
    after the eighth are never compiled (the step then runs op by op) and which ones depends on the
    order the shapes came in; the engine's limit compiles all of them. Traced on the CPU: the decode
    kernel cannot launch without a GPU, but it is compiled before."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    out = {}
    for mode in ("engine", "default"):
        proc = subprocess.run([sys.executable, "-c", _SHAPE_KINDS, mode], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[mode] = [int(v) for v in proc.stdout.split()]
    compiled, expected, limit, engine_limit, noted = out["engine"]
    assert expected == 14 and compiled == expected and limit == engine_limit >= expected and not noted
    assert out["default"][0] == 8 < expected  # what a batched run got before: six shape kinds left uncompiled
    assert out["default"][4] == 1  # ... and every later summary.json of the process now notes it
    # ... and now says so in one line, once
    assert proc.stderr.count("warning: torch.compile hit its recompile limit (recompile_limit (8)) for '<lambda>'") == 1


_PTX = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from harness.engine import triton_attention as ta

sig = dict(q_ptr="*bf16", k_ptr="*bf16", v_ptr="*bf16", b_ptr="*bf16", m_ptr="*fp32", l_ptr="*fp32", acc_ptr="*fp32",
           o_ptr="*bf16", cnt_ptr="*i32", W="i32", S="i32")
for loop in (False, True):
    consts = dict(SCALE=128 ** -0.5, GROUP=1, KVH=16, D=128, CH=32, BW=32, MAXS=32, LOOP=loop, MAXC=ta.MAX_CHUNKS)
    src = ASTSource(fn=ta._attn_chunk, signature={**sig, **{n: "constexpr" for n in consts}}, constexprs=consts,
                    attrs={(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]
    assert "atom" in ptx and ".entry _attn_chunk" in ptx, loop
from harness.engine import triton_moe as tm
sig = dict(x_ptr="*bf16", w_ptr="*bf16", stride_e="i32", z_ptr="*bf16", cnt_ptr="*i32", k_ptr="*i32", v_ptr="*bf16", i_ptr="*i64")
consts = dict(E=64, H=2048, BE=64, BK=2048, KMAX=8, RENORM=False)
src = ASTSource(fn=tm._router_route, signature={**sig, **{n: "constexpr" for n in consts}}, constexprs=consts,
                attrs={(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")})
ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8}).asm["ptx"]
assert "atom" in ptx and ".entry _router_route" in ptx
print("ok")
"""


def test_the_candidate_kernels_compile_for_hopper():
    """Both combines of the split-KV attention (constants by width; tiles at run time) and the
    router product with the routing in one kernel, which benchmarks/decode_kernels.py measures
    against what the engine runs, compile for sm_90 without a GPU."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    proc = subprocess.run([sys.executable, "-c", _PTX], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_compile_workers_start_when_a_cuda_fast_run_resolves_its_engine(monkeypatch):
    """A CUDA run of the fast engine starts torch inductor's compile workers before its data and
    weights load (not at its first compilation, which on a warm cache lands beside the run loop);
    nothing for the eager engine or the CPU, and a failure to start them fails nothing."""
    import torch._inductor.async_compile as ac

    from harness.engine import start_compile_workers

    calls = []
    monkeypatch.setattr(ac, "maybe_warm_pool", lambda: calls.append(1))
    assert start_compile_workers("fast", "cuda:0") and calls == [1]
    assert not start_compile_workers("eager", "cuda") and not start_compile_workers("fast", "cpu") and calls == [1]

    def broken():
        raise RuntimeError("no pool here")

    monkeypatch.setattr(ac, "maybe_warm_pool", broken)
    assert start_compile_workers("fast", "cuda") is False
