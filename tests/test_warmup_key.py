"""The runner's warm-up is keyed on what the engine compiles or captures (the backend's
``warmup_key``): configurations that share a graph share one warm-up; a new shape gets its own."""

from __future__ import annotations

import torch

from fixtures import tiny
from fixtures.fakes import FakeBackend, fake_data
from harness.types import GenRequest

torch.set_num_threads(1)


def _reqs(n=1, text="hello there"):
    return [GenRequest(text + " " * i) for i in range(n)]


def test_fast_engine_key_ignores_top_k_but_not_blocks_or_shape():
    fast = tiny.backend("olmoe", engine="fast")
    assert getattr(fast.step_model, "serves_every_top_k", False)
    keys = {}
    for knobs in ("6,4", "6,2", "5,4"):
        fast.apply_knobs(knobs)
        keys[knobs] = fast.warmup_key(_reqs(), 6)
    assert keys["6,4"] == keys["6,2"]  # one graph serves every top_k
    assert keys["6,4"] != keys["5,4"]  # another set of active blocks is another capture
    fast.apply_knobs("6,4")
    assert fast.warmup_key(_reqs(2), 6) != keys["6,4"]  # another batch shape


def test_eager_engine_key_keeps_top_k_tier_and_bucket():
    eager = tiny.backend("olmoe")
    eager.apply_knobs("6,4")
    a = eager.warmup_key(_reqs(3), 6)
    assert a == eager.warmup_key(_reqs(4), 6)  # batch 3 and 4 share the bucket
    assert a != eager.warmup_key(_reqs(5), 6)
    eager.apply_knobs("6,2")
    assert eager.warmup_key(_reqs(3), 6) != a


class _WarmedFake(FakeBackend):
    needs_warmup = True


class _SharedGraphBackend(_WarmedFake):
    """A fake whose engine serves every top_k from one graph (as the fast engine does)."""

    def warmup_key(self, requests, max_new_tokens, tier=None):
        return (self.knobs.num_blocks, len(requests))


def test_runner_warms_once_per_engine_key(tmp_path):
    from fixtures.fakes import FakeMetric, FakeTask, evaluate_loaded

    runs = {}
    for name, backend in (("shared", _SharedGraphBackend()), ("plain", _WarmedFake())):
        summary, lines = evaluate_loaded(backend, FakeTask(), fake_data(12), tmp_path / name, metric=FakeMetric(),
                                         policy="random", knob_space=["8,2", "8,4"])
        assert {ln["config"] for ln in lines} >= {"8,2,medium", "8,4,medium"}
        runs[name] = summary["timing"]["warmup"]
    assert runs["shared"]["keys"] == 1  # two configurations, one engine key: one warm-up
    assert runs["plain"]["keys"] == 2  # a backend without a key: per configuration and batch bucket
