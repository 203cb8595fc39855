"""The harness decode loop: padding, positions, EOS handling, timings, static cache."""

from __future__ import annotations

import pytest
import torch

from fixtures import tiny
from harness.decode import Decoder, PreparedBatch, greedy_argmax, left_pad, prompt_positions
from harness.latency.measure import Timer
from harness.types import GenRequest

torch.set_num_threads(1)
V = 10


class Counter:
    """A fake step model: next token = (last input token + 1) mod V; records what it is fed."""

    device = torch.device("cpu")

    def __init__(self):
        self.seen = []

    def make_cache(self, batch_size, max_len, static):
        return {"static": static, "max_len": max_len}

    def _logits(self, last):
        return torch.nn.functional.one_hot((last + 1) % V, V).float()

    def prefill(self, batch, attention_mask, position_ids, cache, timer):
        self.seen.append(("prefill", attention_mask.clone(), position_ids.clone()))
        return self._logits(batch.input_ids[:, -1])

    def step(self, tokens, attention_mask, position_ids, cache):
        self.seen.append(("step", attention_mask.clone(), position_ids.clone()))
        return self._logits(tokens[:, -1])


def test_left_pad_and_positions():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert prompt_positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_eos_stops_each_sample_and_batch():
    m = Counter()
    ids, mask = left_pad([[3], [6, 1]], 0, "cpu")
    res = Decoder(m).run(PreparedBatch(ids, mask), max_new_tokens=8, eos_token_ids=[5], pad_token_id=0)
    # sample 0: 4, then 5 = EOS; sample 1: 2, 3, 4, 5 = EOS
    assert res.tokens == [[4], [2, 3, 4]]
    assert res.finish_reasons == ["eos", "eos"]
    steps = [s for s in m.seen if s[0] == "step"]
    assert len(steps) == 3  # the batch stops once both have finished
    # masks grow by one column per step; positions continue per sample
    assert [s[1].shape[1] for s in steps] == [3, 4, 5]
    assert [s[2].tolist() for s in steps] == [[[1], [2]], [[2], [3]], [[3], [4]]]
    ms = Timer("cpu")
    assert ms.clock == "perf_counter_ns"
    timings = res.timer.step_timings(2)
    assert len(timings.decode_step_ms) == 3 and timings.prefill_ms > 0 and timings.batch_size == 2


def test_lookahead_check_discards_the_step_after_the_last_token():
    """The one-step-late "all finished" check (CUDA's default, forced here on the CPU) gives the
    same tokens, reasons and timed steps as the immediate check; the step queued after the last
    token is run but neither kept nor timed."""
    ids, mask = left_pad([[3], [6, 1]], 0, "cpu")
    now, late = Counter(), Counter()
    want = Decoder(now, lookahead=False).run(PreparedBatch(ids, mask), 8, eos_token_ids=[5], pad_token_id=0)
    got = Decoder(late, lookahead=True).run(PreparedBatch(ids, mask), 8, eos_token_ids=[5], pad_token_id=0)
    assert (got.tokens, got.finish_reasons) == (want.tokens, want.finish_reasons) == ([[4], [2, 3, 4]], ["eos", "eos"])
    steps = lambda m: [s for s in m.seen if s[0] == "step"]  # noqa: E731
    assert len(steps(late)) == len(steps(now)) + 1  # one discarded step
    a, b = want.timer.step_timings(2), got.timer.step_timings(2)
    assert len(b.decode_step_ms) == len(a.decode_step_ms) == 3
    assert b.decode_ms == pytest.approx(sum(b.decode_step_ms))  # decode ends at the last kept token
    for limit in (1, 2, 5):  # the length limit: nothing is discarded, nothing extra runs
        m = Counter()
        res = Decoder(m, lookahead=True).run(PreparedBatch(ids, mask), limit, eos_token_ids=[], pad_token_id=0)
        assert [len(t) for t in res.tokens] == [limit, limit] and len(steps(m)) == limit - 1


def test_length_limit_and_static_mask_width():
    m = Counter()
    ids, mask = left_pad([[1, 2]], 0, "cpu")
    res = Decoder(m, static_cache=True).run(PreparedBatch(ids, mask), 3, eos_token_ids=[], pad_token_id=0)
    assert res.tokens == [[3, 4, 5]] and res.finish_reasons == ["length"]
    widths = {s[1].shape[1] for s in m.seen}
    assert widths == {256}  # one fixed-width mask: the same shapes every step
    last = m.seen[-1][1][0]
    assert last[:4].tolist() == [1, 1, 1, 1] and last[4:].sum() == 0


@pytest.mark.parametrize("family", ["olmoe", "llava_olmoe"])
def test_static_cache_equals_dynamic_cache(family):
    b = tiny.backend(family)
    b.eos_token_ids = []
    b.apply_knobs("4,2")
    reqs = [GenRequest("hello"), GenRequest("a longer prompt")]
    dyn = b.generate_ids(reqs, 5).tokens
    b.decoder = Decoder(b.step_model, static_cache=True)
    assert b.generate_ids(reqs, 5).tokens == dyn



def test_greedy_argmax_is_the_first_maximum():
    torch.manual_seed(0)
    for v in (1, 10, 63, 64, 65, 50304):
        for x in (torch.randn(3, v), torch.randn(3, v).bfloat16(), torch.zeros(3, v)):
            if v > 2:
                x[1, v // 3:] = x.max() + 1  # ties across groups: the first wins
            assert torch.equal(greedy_argmax(x), x.argmax(-1)), v
