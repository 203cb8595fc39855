"""The measurement protocol: what prefill_ms, decode_ms and the per-step times cover (a step model
that sleeps known times), device binding of the timer, and warm-up until two calls agree.

Assertions are on structure (lower bounds, sums, ordering of very different sleeps), never on how
fast this machine is."""

from __future__ import annotations

import time

import pytest
import torch

from harness.decode import Decoder, PreparedBatch, left_pad
from harness.latency import measure
from harness.latency.measure import Timer, Warmup, agree, batch_bucket, warm_until_stable

V = 10
PREFILL_S = 0.030
STEP_S = [0.010, 0.080, 0.010, 0.010]  # one slow step, easy to find among the others


class Sleeper:
    """Prefill sleeps PREFILL_S; decode step i sleeps STEP_S[i]; the token grows by one each call."""

    device = torch.device("cpu")

    def __init__(self):
        self.calls = 0

    def make_cache(self, batch_size, max_len, static):
        return {}

    def _logits(self, last):
        return torch.nn.functional.one_hot((last + 1) % V, V).float()

    def prefill(self, batch, attention_mask, position_ids, cache, timer):
        time.sleep(PREFILL_S)
        return self._logits(batch.input_ids[:, -1])

    def step(self, tokens, attention_mask, position_ids, cache):
        time.sleep(STEP_S[self.calls])
        self.calls += 1
        return self._logits(tokens[:, -1])


def _run(max_new, eos=()):
    ids, mask = left_pad([[1, 2, 3]], 0, "cpu")
    res = Decoder(Sleeper()).run(PreparedBatch(ids, mask), max_new_tokens=max_new, eos_token_ids=list(eos), pad_token_id=0)
    return res, res.timer.step_timings(1)


def test_prefill_decode_and_steps_cover_what_they_claim():
    res, t = _run(len(STEP_S) + 1)
    assert len(res.tokens[0]) == len(STEP_S) + 1
    # one entry per decode step; the first token comes from the prefill
    assert len(t.decode_step_ms) == len(STEP_S)
    # each step covers at least its own sleep; the slow one is the largest
    for got, slept in zip(t.decode_step_ms, STEP_S):
        assert got >= slept * 1e3
    assert max(range(len(STEP_S)), key=lambda i: t.decode_step_ms[i]) == 1
    # decode = first token to last: at least every sleep, and exactly the steps back to back
    assert t.decode_ms >= sum(STEP_S) * 1e3
    assert t.decode_ms == pytest.approx(sum(t.decode_step_ms), rel=1e-9)
    # prefill covers its sleep and none of the decode steps' (the shortest step sleeps 10 ms,
    # the prefill's own bookkeeping is microseconds; the slow step alone is 80 ms)
    assert t.prefill_ms >= PREFILL_S * 1e3
    assert t.prefill_ms < (PREFILL_S + STEP_S[1]) * 1e3
    assert t.total_ms == pytest.approx(t.prefill_ms + t.decode_ms)
    assert t.clock == "perf_counter_ns"


def test_one_token_has_no_decode_time():
    res, t = _run(1)
    assert len(res.tokens[0]) == 1
    assert t.decode_step_ms == [] and t.decode_ms == 0.0
    assert t.prefill_ms >= PREFILL_S * 1e3


def test_eos_stops_decode_time_at_the_last_token():
    # tokens: 4 (prefill), 5, 6 = EOS after the second step: only the first two sleeps are timed
    res, t = _run(len(STEP_S) + 1, eos=[6])
    assert res.tokens[0] == [4, 5] and res.finish_reasons == ["eos"]
    assert len(t.decode_step_ms) == 2
    assert t.decode_ms >= (STEP_S[0] + STEP_S[1]) * 1e3
    assert t.decode_ms == pytest.approx(sum(t.decode_step_ms), rel=1e-9)


def test_timer_binds_to_the_named_cuda_device(monkeypatch):
    """`cuda:1` records events on cuda:1's stream and synchronises cuda:1 only."""
    recorded, synced = [], []

    class Event:
        def __init__(self, enable_timing):
            pass

        def record(self, stream):
            recorded.append(stream)

        def elapsed_time(self, other):
            return 1.5

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda dev: f"stream-of-{dev}")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: synced.append(dev))
    timer = Timer("cuda:1")
    assert timer.clock == "cuda_events"
    with timer.region("prefill"):
        pass
    assert recorded == ["stream-of-cuda:1", "stream-of-cuda:1"]
    assert timer.step_timings(1).prefill_ms == 1.5
    assert synced == [torch.device("cuda", 1)]
    measure.synchronize("cuda:1")
    assert synced[-1] == torch.device("cuda", 1)


def test_warm_up_runs_until_two_consecutive_calls_agree():
    seq = iter([900.0, 130.0, 101.0, 100.0, 100.0])
    res = warm_until_stable(lambda: next(seq), tolerance=0.05, max_calls=5)
    assert res.settled and res.calls == 4
    # never agreeing: bounded
    seq = iter([100.0, 200.0, 100.0, 200.0, 100.0, 200.0])
    res = warm_until_stable(lambda: next(seq), tolerance=0.05, max_calls=4)
    assert not res.settled and res.calls == 4


def test_warmup_once_per_key_and_accounted():
    w = Warmup(tolerance=0.05, max_calls=3)
    calls = []

    def call():
        calls.append(1)
        return 10.0

    w.ensure(("16,8,high", 1), call)
    w.ensure(("16,8,high", 1), call)  # already warm: no call
    w.ensure(("12,4,low", 1), call)
    assert len(calls) == 4 and w.calls == 4
    s = w.summary()
    assert s["keys"] == 2 and s["unsettled"] == 0 and s["seconds"] >= 0

    def boom():
        raise RuntimeError("x")

    assert w.ensure("bad", boom) is None and w.summary()["failed"] == 1
    assert Warmup(max_calls=0).ensure("k", boom) is None  # warm-up off


def test_agreement_and_batch_buckets():
    assert agree(100.0, 104.9) and not agree(100.0, 106.0) and agree(0.0, 0.0)
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 8, 9, 32, 33)] == [1, 2, 4, 4, 8, 8, 16, 32, 64]
    assert [batch_bucket(b) for b in (64, 65, 128, 129)] == [64, 128, 128, 192]  # the fast engine's graph rows too
