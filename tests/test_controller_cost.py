"""What deciding costs is measured in every run: ``policy_ms`` (a sample's share of the
``policy.choose`` call that decided it) and ``host_ms`` (its share of its batch's host preparation),
reported next to the model's latency; and what a controller may look at (prompt, image on request)."""

from __future__ import annotations

import time

import pytest

from fixtures.fakes import FakeBackend, FakeMetric, FakeTask, evaluate_loaded, fake_data
from harness.knobs import Knobs
from harness.policies.base import Policy

SLEEP_S = 0.02


class SlowPolicy(Policy):
    """Sleeps once per choose call: a controller whose decision costs time."""

    name = "slow"
    seen: list = []

    def choose(self, inputs):
        time.sleep(SLEEP_S)
        SlowPolicy.seen.extend(inputs)
        return [self.context.knob_space[0]] * len(inputs)


class LooksAtImages(SlowPolicy):
    name = "looks"
    needs_image = True


def _run(tmp_path, policy_cls, name="run", **kw):
    from harness.policies.base import PolicyContext

    SlowPolicy.seen = []
    backend = FakeBackend()
    ctx = PolicyContext(model_info=backend.info, knob_space=[Knobs.parse("8,4,medium")], estimator=None,
                        accuracy_table=None, seed=0, max_new_tokens=4)
    policy = policy_cls(ctx)
    return evaluate_loaded(backend, FakeTask(), fake_data(10), tmp_path / name, metric=FakeMetric(), policy=policy, **kw)


def test_policy_ms_is_each_samples_share_of_the_call(tmp_path):
    summary, lines = _run(tmp_path, SlowPolicy)
    ok = [ln for ln in lines if not ln["error"]]
    shares = [ln["policy_ms"] for ln in ok]
    assert all(x is not None and x > 0 for x in shares)
    # one call decided all ten samples (one chunk): their shares add up to at least the sleep
    assert sum(shares) >= 0.9 * 1000 * SLEEP_S
    assert max(shares) == pytest.approx(min(shares))
    block = summary["controller_ms"]
    assert block["policy"]["n"] == len(ok) and block["policy"]["mean"] == pytest.approx(sum(shares) / len(ok))
    assert block["model_source"] == "measured" and block["policy_share_of_model"] > 0
    assert block["host"]["n"] == 0  # the fake backend has no host preparation to time


def test_policy_input_has_the_prompt_and_the_image_only_on_request(tmp_path):
    _run(tmp_path, SlowPolicy, "plain")
    plain = list(SlowPolicy.seen)
    assert plain and all(p.prompt for p in plain) and all(p.image is None for p in plain)
    assert all(p.prompt == FakeTask().prompt(s) for p, s in zip(plain, fake_data(10).samples))
    _run(tmp_path, LooksAtImages, "looks")
    looked = list(SlowPolicy.seen)
    samples = {str(s.id): s for s in fake_data(10).samples}
    with_images = [p for p in looked if samples[p.sample_id].image is not None]
    assert with_images and all(p.image is not None and p.image.size == samples[p.sample_id].image.size for p in with_images)
    assert "image" not in looked[0].to_dict()  # never written to the records


def test_host_ms_on_a_real_backend(tmp_path):
    import harness

    res = harness.evaluate(task="scienceqa", knobs="12,4,high", model="reference", data="bundled", limit=4,
                           device="cpu", output=str(tmp_path / "ref"), estimator="none", quiet=True, batch_size=2)
    lines = res.samples[0]
    assert all(ln["host_ms"] is not None and ln["host_ms"] > 0 for ln in lines)
    assert all(ln["policy_ms"] is not None for ln in lines)  # the fixed policy is timed too
    assert res.summary["controller_ms"]["host"]["n"] == 4
