"""Runner: record schema, failures per sample, grouped execution, invariance, summaries."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fixtures.fakes import FakeBackend, FakeCorpusMetric, FakeTask, fake_data
from harness.knobs import Knobs

LINE_KEYS = {"id", "task", "knobs", "config", "prediction", "raw_output", "score", "scores", "input_tokens",
             "vision_tokens", "text_tokens", "output_tokens", "measured", "estimated", "error", "batch_id",
             "batch_size", "group", "policy_input", "prompt", "prompt_source", "references"}
SUMMARY_KEYS = {"task", "metric", "model", "data", "knobs", "policy", "n", "n_failed", "score", "scores", "score_ci95",
                "latency_ms", "estimator", "estimator_error", "device", "dtype", "batch_size", "latency_mode",
                "harness_version", "created", "run_config", "knobs_histogram"}


def test_records_schema(run_fake, tmp_path):
    summary, lines, _ = run_fake(knobs="8,4", data=fake_data(8, groups=True))
    assert SUMMARY_KEYS <= set(summary)
    assert summary["latency_mode"] == "per-sample" and summary["batch_size"] == 1
    for part in ("prefill", "decode", "total"):
        assert set(summary["latency_ms"]["measured"][part]) >= {"mean", "p50", "p90", "p99"}
    assert set(summary["data"]) >= {"source", "synthetic", "fingerprint", "subset"}
    assert summary["knobs"] == {"num_blocks": 8, "top_k": 4, "tier": "medium"}
    # the full configuration answers everything correctly in the fake
    assert summary["score"] == 1.0 and summary["scores"]["acc"] == 1.0
    assert summary["scores"]["simple"] == 1.0 and set(summary["groups"]) == {"simple", "complex"}
    lo, hi = summary["score_ci95"]
    assert lo <= summary["score"] <= hi
    raw = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    assert len(raw) == 8
    for text in raw:
        line = json.loads(text)
        assert LINE_KEYS <= set(line)
        m = line["measured"]
        assert m["total_ms"] == pytest.approx(m["prefill_ms"] + m["decode_ms"])
        assert m["scope"] == "sample" and len(m["decode_step_ms"]) >= 1
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["n"] == 8 and on_disk["score"] == summary["score"]


def test_failing_samples_are_recorded_and_run_continues(run_fake):
    summary, lines, _ = run_fake(data=fake_data(12, bad_image=2, raise_at=7))
    by_id = {ln["id"]: ln for ln in lines}
    assert by_id["s002"]["error"] == "image could not be decoded"
    assert "simulated backend failure" in by_id["s007"]["error"]
    assert summary["n"] == 12 and summary["n_failed"] == 2
    assert all(ln["prediction"] is not None for ln in lines if not ln["error"])
    # failed samples count as wrong: the score is 10/12
    assert summary["score"] == pytest.approx(10 / 12)


def test_backend_failure_fails_only_its_batch(run_fake):
    summary, lines, _ = run_fake(batch_size=4, data=fake_data(12, raise_at=5))
    failed = [ln for ln in lines if ln["error"]]
    assert 1 <= len(failed) <= 4
    assert len({ln["batch_id"] for ln in failed}) == 1
    assert summary["n_failed"] == len(failed)


class RaisingPolicy:
    name = "raiser"

    def choose(self, inputs):
        if any(i.sample_id == "s003" for i in inputs):
            raise ValueError("cannot handle s003")
        return [Knobs(8, 4) for _ in inputs]


class WrongCountPolicy:
    name = "short"

    def choose(self, inputs):
        return [Knobs(8, 4)] * (len(inputs) - 1)


class InvalidKnobsPolicy:
    name = "invalid"

    def choose(self, inputs):
        return [Knobs(99, 4) if i.sample_id == "s001" else Knobs(6, 2, "low") for i in inputs]


def test_policy_that_raises_fails_only_the_samples_it_cannot_handle(run_fake):
    summary, lines, _ = run_fake(knobs=None, policy=RaisingPolicy())
    failed = {ln["id"]: ln["error"] for ln in lines if ln["error"]}
    assert list(failed) == ["s003"] and "cannot handle s003" in failed["s003"]
    assert summary["n"] == 12


def test_policy_with_wrong_count_fails_all(run_fake):
    summary, lines, _ = run_fake(knobs=None, policy=WrongCountPolicy())
    assert summary["n_failed"] == 12
    assert "11 configurations for 12 samples" in lines[0]["error"]


def test_policy_with_invalid_knobs_fails_that_sample(run_fake):
    summary, lines, _ = run_fake(knobs=None, policy=InvalidKnobsPolicy())
    failed = [ln for ln in lines if ln["error"]]
    assert [ln["id"] for ln in failed] == ["s001"] and "num_blocks=99" in failed[0]["error"]
    assert summary["knobs_histogram"] == {"6,2,low": 11}


def test_grouped_execution_switches_once_per_group(run_fake):
    backend = FakeBackend()
    summary, lines, _ = run_fake(knobs=None, policy="random", backend=backend, batch_size=3,
                                 policy_args={"seed": "1"}, data=fake_data(24))
    configs = [ln["config"] for ln in lines]
    groups = set(configs)
    assert len(groups) > 1
    # one apply_knobs per configuration group, batches never mix configurations
    assert len(backend.applied) == len(groups)
    assert all(size <= 3 for _, size in backend.batches)
    assert sum(summary["knobs_histogram"].values()) == 24
    for ln in lines:
        assert ln["policy_input"]["text_tokens"] > 0
        assert set(ln["policy_input"]["vision_tokens_by_tier"]) == {"low", "medium", "high"}


def test_predictions_invariant_to_batch_size_and_grouping(run_fake, tmp_path):
    preds = []
    for i, bs in enumerate((1, 5, 24)):
        _, lines, _ = run_fake(knobs=None, policy="random", policy_args={"seed": "3"}, batch_size=bs,
                               data=fake_data(24), out=tmp_path / f"r{i}")
        preds.append({ln["id"]: (ln["config"], ln["prediction"]) for ln in lines})
    assert preds[0] == preds[1] == preds[2]


def test_group_members_are_ordered_by_length(run_fake):
    backend = FakeBackend()
    _, lines, _ = run_fake(knobs="8,4", batch_size=4, backend=backend, data=fake_data(12))
    order = sorted(lines, key=lambda ln: (ln["batch_id"], ln["input_tokens"]))
    lengths = [ln["input_tokens"] for ln in order]
    assert lengths == sorted(lengths)


def test_per_batch_mode_is_labelled(run_fake):
    summary, lines, _ = run_fake(batch_size=4)
    assert summary["latency_mode"] == "per-batch"
    assert summary["latency_ms"]["measured"]["total"]["n"] == 3  # three batches, each counted once
    assert all(ln["measured"]["scope"] == "batch" for ln in lines)
    assert summary["estimator_error"]["mape_total"] is None
    assert any("per batch" in n for n in summary["notes"])


def test_unlabeled_split_writes_predictions_and_refuses_scoring(run_fake):
    summary, lines, _ = run_fake(data=fake_data(6, labeled=False))
    assert summary["score"] is None and summary["scores"] == {}
    assert all(ln["prediction"] for ln in lines)
    assert any("no public labels" in n for n in summary["notes"])


def test_corpus_metric_scored_over_all_samples(run_fake, tmp_path):
    summary, lines, _ = run_fake(knobs="6,2", metric=FakeCorpusMetric(), data=fake_data(12))
    hits = sum(1 for ln in lines if ln["prediction"] == ln["raw_output"] and ln["scores"] and ln["scores"]["corpus"] > 0)
    share = hits / 12
    assert summary["score"] == pytest.approx(share * share)
    on_disk = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert all(ln["scores"] is not None for ln in on_disk)


def test_budget_violations_counted(run_fake):
    summary, lines, _ = run_fake(latency_budget_ms=10.0)
    over = sum(1 for ln in lines if ln["measured"]["total_ms"] > 10.0)
    assert summary["latency_budget"]["count"] == over
    assert summary["latency_budget"]["rate"] == pytest.approx(over / 12)


def test_style_reaches_the_prompt(run_fake, tmp_path):
    _, plain, _ = run_fake(out=tmp_path / "a")
    _, short, _ = run_fake(style="short", out=tmp_path / "b")
    assert [ln["text_tokens"] + 1 for ln in plain] == [ln["text_tokens"] for ln in short]


def test_warmup_call_is_untimed_and_not_recorded(run_fake):
    class Warm(FakeBackend):
        needs_warmup = True

    backend = Warm()
    summary, lines, _ = run_fake(backend=backend, data=fake_data(5))
    # the fake's timings repeat exactly: two warm-up calls agree, then five timed samples
    assert sum(n for _, n in backend.batches) == 2 + 5
    assert summary["n"] == 5 and summary["timing"]["warmup_s"] >= 0
    w = summary["timing"]["warmup"]
    assert w["keys"] == 1 and w["calls"] == 2 and w["unsettled"] == 0


class Compiling(FakeBackend):
    """The first calls of each (knobs, tier, batch size) are slow (compilation, clock ramp-up), as
    on a GPU: 50x, then 3x, then the steady time."""

    needs_warmup = True

    def __init__(self):
        super().__init__()
        self.seen = {}

    def generate(self, requests, max_new_tokens, tier=None):
        outs = super().generate(requests, max_new_tokens, tier)
        key = (str(self.knobs.with_tier(tier or self.knobs.tier or self.info.default_tier)), len(requests))
        n = self.seen[key] = self.seen.get(key, 0) + 1
        factor = {1: 50.0, 2: 3.0}.get(n, 1.0)
        t = outs[0].timings
        slow = dataclasses.replace(t, prefill_ms=t.prefill_ms * factor, decode_ms=t.decode_ms * factor,
                                   decode_step_ms=[x * factor for x in t.decode_step_ms])
        for o in outs:
            o.timings = slow
        return outs


def test_no_sample_is_timed_before_its_configuration_is_warm(run_fake, tmp_path):
    from fixtures.fakes import true_prefill_ms

    summary, lines, _ = run_fake(backend=Compiling(), data=fake_data(6), knobs="6,2")
    first = lines[0]
    v, t = first["vision_tokens"], first["text_tokens"]
    # the first sample's latency is the steady one, not the compiling call's
    assert first["measured"]["prefill_ms"] == pytest.approx(true_prefill_ms(v, t, 6, 2))
    w = summary["timing"]["warmup"]
    assert w["keys"] == 1 and w["calls"] == 4 and w["unsettled"] == 0  # 50x, 3x, 1x, 1x: the last two agree
    # batches of 4 then 1: two batch buckets, each warmed before its first timed call
    summary, lines, _ = run_fake(backend=Compiling(), data=fake_data(5), knobs="6,2", batch_size=4, out=tmp_path / "b4")
    assert summary["timing"]["warmup"]["keys"] == 2
    _, steady, _ = run_fake(data=fake_data(5), knobs="6,2", batch_size=4, out=tmp_path / "steady")
    assert [ln["measured"] for ln in lines] == [ln["measured"] for ln in steady]
