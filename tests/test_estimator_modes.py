"""Fits are keyed by execution mode and never used for another; first use: bounded quick fit in the
user cache, else the labelled roofline; batches are estimated and compared as batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures.fakes import FakeBackend, fake_data, true_decode_step_ms, true_prefill_ms
from harness.latency.estimator import EstimatorInput, FittedEstimator, PendingFit, rows_for_batch
from harness.latency.linear_model import distinct_experts
from harness.latency.measurement import Measurement
from harness.latency.heldout_fit import fit_and_report, fit_measurements
from harness.latency.fit_files import FitKey, default_fit_path, find_fit
from harness.latency.firstuse import backend_key, resolve


def _fit(key, buckets=(1,)):
    ms = [Measurement(a, k, 0, 16, t, true_prefill_ms(16, t, a, k), [true_decode_step_ms(16, t, a, k, p) for p in (1, 2, 3)])
          for a in (4, 6, 8) for k in (1, 2, 4) for t in (8, 30)]
    est = fit_measurements(ms)
    est.meta = {"key": key.to_dict(), "batch_buckets": list(buckets)}
    path = default_fit_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    est.save(path)
    return path


def test_a_fit_is_found_only_for_its_own_mode():
    key = FitKey("fake", None, "cpu-some-cpu-2c", "float32", "eager", "grouped_mm")
    path = _fit(key)
    assert find_fit(key, 1).path == path
    for other, what in ((FitKey("fake", None, "cpu-some-cpu-16c", "float32", "eager", "grouped_mm"), "device"),
                        (FitKey("fake", None, "cpu-some-cpu-2c", "bfloat16", "eager", "grouped_mm"), "dtype"),
                        (FitKey("fake", None, "cpu-some-cpu-2c", "float32", "fast", "grouped_mm"), "engine"),
                        (FitKey("fake", None, "cpu-some-cpu-2c", "float32", "eager", "eager"), "experts_impl"),
                        (FitKey("fake", "0123abcd", "cpu-some-cpu-2c", "float32", "eager", "grouped_mm"), "weights")):
        look = find_fit(other, 1)
        assert look.path is None and look.near[0][1] == [what]
    look = find_fit(key, 8)  # profiled at batch 1 only
    assert look.path is None and look.near[0][1] == ["batch bucket"]
    assert "batch bucket" in look.why_not(8)
    # measured on an engine that did not pad prompt passes: not the fit of one that pads to 64 tokens
    assert find_fit(key, 1, 0).path == path
    look = find_fit(key, 1, 64)
    assert look.path is None and "prompt padding" in look.why_not(1)


@pytest.fixture
def autofit(monkeypatch):
    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "60")


def test_first_use_makes_a_bounded_quick_fit_in_the_cache_then_reuses_it(capsys, autofit):
    backend = FakeBackend()
    est, note = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, quiet=True)
    assert isinstance(est, FittedEstimator) and est.meta["quick"]
    key = backend_key(backend, backend.info)
    assert est.path == str(default_fit_path(key, 1, quick=True)) and "quick fit" in note and "harness profile" in note
    err = capsys.readouterr().err
    assert "at most 60s" in err and "harness profile --model fake" in err
    calls = len(backend.batches)
    again, note2 = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, quiet=True)
    assert again.path == est.path and note2 is None and len(backend.batches) == calls  # loaded, not refitted
    # another batch bucket is another mode: refitted into its own file, the batch-1 fit left as it was
    before = open(est.path, "rb").read()
    b8, _ = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, batch_size=8, quiet=True)
    assert b8.batch_buckets == [2, 4, 8] and b8.path == str(default_fit_path(key, [2, 4, 8], quick=True)) != est.path
    assert open(est.path, "rb").read() == before
    assert find_fit(key, 1).path == default_fit_path(key, 1, quick=True)
    assert find_fit(key, 8).path == default_fit_path(key, [2, 4, 8], quick=True)


def test_quick_fit_respects_its_time_budget(monkeypatch):
    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "0.000001")
    backend = FakeBackend()
    est, note = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, quiet=True)
    # too little measured in time and the fake has no weights for a roofline: no estimates, and why
    assert est is None and "harness profile" in note and "ran out" in note
    # the warm-up before the clock stops at its own bound (the first configuration's is always paid),
    # then at most the one timed call in flight when time ran out (with its own warm-up if it had none)
    assert len(backend.batches) <= 2 + 3 + 1


def test_no_fit_and_no_auto_fit_gives_the_labelled_roofline(monkeypatch):
    from fixtures import tiny

    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "0")
    backend = tiny.backend("llava_olmoe")
    est, note = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, quiet=True)
    d = est.describe()
    assert d["kind"] == "roofline" and "lower bound" in est.name and "not a fit" in est.name
    assert "roofline" in note and "harness profile" in note
    rows = [EstimatorInput(k, a, 1, 16, 20, 5) for a in (4, 6) for k in (1, 4)]
    e = est.predict(rows)
    assert all(x.prefill_ms > 0 and x.decode_ms > 0 for x in e)
    assert e[1].total_ms > e[0].total_ms and e[3].total_ms > e[1].total_ms  # more experts, more blocks: slower


def test_distinct_experts_grow_with_the_batch():
    assert distinct_experts(1, 8, 64) == pytest.approx(8.0)
    assert distinct_experts(32, 8, 64) == pytest.approx(64 * (1 - (56 / 64) ** 32))
    assert distinct_experts(10_000, 8, 64) == pytest.approx(64.0)
    vals = [distinct_experts(b, 4, 64) for b in (1, 2, 4, 8, 16, 32)]
    assert vals == sorted(vals) and vals[-1] < 32 * 4


def _batch_truth(v, t, a, k, b, p=None):
    """A batch world in the feature space: weight traffic by distinct experts, compute by tokens."""
    d = distinct_experts(b if p is not None else b * (v + t), k, 64)
    if p is None:
        return 1.0 + 0.3 * a + 0.002 * a * b * (v + t) + 0.05 * (a - 1) * d
    return 0.4 + 0.08 * a + 0.03 * (a - 1) * d + 0.004 * a * b + 0.0003 * a * b * (v + t + p)


def test_batch_fit_estimates_whole_batches():
    ms = []
    for b in (1, 4, 16, 32):
        for a in (4, 6, 8):
            for k in (1, 2, 4):
                for t in (10, 40):
                    ms.append(Measurement(a, k, 0, 16, t, _batch_truth(16, t, a, k, b),
                                          [_batch_truth(16, t, a, k, b, p) for p in (1, 2, 3, 4)], 0, b))
    key = FitKey("fake", None, "cpu-x-2c", "float32", "eager", "eager")
    res = fit_and_report(ms, type("I", (), {"name": "fake"})(), key, None, repeats=1, holdout=0.25)
    assert res.estimator.meta["batch_buckets"] == [1, 4, 16, 32]
    assert res.heldout["total"]["mape"] < 1e-3
    (e,) = res.estimator.predict([EstimatorInput(2, 6, 0, 16, 25, 4, batch_size=8)])
    assert e.per == "batch"
    want = _batch_truth(16, 25, 6, 2, 8) + sum(_batch_truth(16, 25, 6, 2, 8, p) for p in (1, 2, 3, 4))
    assert e.total_ms == pytest.approx(want, rel=1e-3)
    # a batch of 8 costs more than one sample and less than 8 samples
    (one,) = res.estimator.predict([EstimatorInput(2, 6, 0, 16, 25, 4)])
    assert one.per == "sample" and one.total_ms < e.total_ms < 8 * one.total_ms


class _Out:
    def __init__(self, v, t, steps):
        self.vision_tokens, self.text_tokens, self.output_tokens = v, t, steps + 1
        self.timings = type("T", (), {"decode_step_ms": [1.0] * steps})()


def test_rows_for_a_batch_describe_the_padded_batch():
    from harness.knobs import Knobs

    outs = [_Out(16, 10, 3), _Out(64, 30, 5)]
    (row,) = rows_for_batch(Knobs(6, 2, "high"), outs, 2, batch_aware=True)
    assert (row.vision_tokens, row.text_tokens, row.output_tokens, row.batch_size) == (64, 30, 5, 2)
    rows = rows_for_batch(Knobs(6, 2, "high"), outs, 2, batch_aware=False)
    assert [r.batch_size for r in rows] == [1, 1] and [r.output_tokens for r in rows] == [3, 5]


def test_batched_run_compares_batches_with_batch_estimates(run_fake, tmp_path):
    from harness.latency.estimator import Estimate, LatencyEstimator

    key = FitKey("fake", None, "cpu-x-2c", "float32", "eager", "eager")
    est = FittedEstimator.load(_fit(key))  # batch-aware (the fit is a batch-1 one; labels are what matters)
    summary, lines, _ = run_fake(data=fake_data(10), batch_size=4, estimator=est, out=tmp_path / "b")
    assert summary["latency_mode"] == "per-batch"
    assert all(ln["estimated"]["per"] == "batch" for ln in lines if ln["measured"]["scope"] == "batch")
    lat = summary["latency_ms"]
    assert lat["estimated"]["total"]["n"] == lat["measured"]["total"]["n"] == 3  # batches of 4, 4, 2
    assert summary["estimator_error"]["per"] == "batch" and summary["estimator_error"]["n"] == 3

    class PerSample(LatencyEstimator):
        name = "per-sample plugin"

        def predict(self, rows):
            return [Estimate(1.0, 1.0, 2.0) for _ in rows]

    summary, _, _ = run_fake(data=fake_data(10), batch_size=4, estimator=PerSample(), out=tmp_path / "p")
    err = summary["estimator_error"]
    assert err["mape_total"] is None and "per sample" in err["note"]


def test_single_sample_run_error_has_bias_and_five_percent_share(run_fake, autofit):
    backend = FakeBackend()
    est, _ = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, quiet=True)
    summary, _, _ = run_fake(data=fake_data(8), estimator=est)
    e = summary["estimator_error"]
    assert e["per"] == "sample" and e["mape_total"] < 1e-3 and e["within_5pct"] == 1.0 and abs(e["bias"]) < 1e-3


def test_a_fit_file_for_another_mode_is_never_used_silently(capsys):
    from harness.run_setup import ensure_fitted

    backend = FakeBackend()
    key = FitKey("fake", None, "cuda-nvidia-h200", "bfloat16", "fast", "grouped_mm")
    est = FittedEstimator.load(_fit(key))
    got, note = ensure_fitted(est, backend, backend.info, "cpu", 0, True)
    assert got is est and "another" in note and "device" in note and "dtype" in note
    assert est.meta["mode_mismatch"][:2] == ["device", "dtype"]
    assert "warning" in capsys.readouterr().err


def test_a_fit_that_misses_the_run_by_far_is_flagged_with_the_profile_command():
    from harness.latency.fit_files import stale_fit_note

    key = {"model": "reference", "weights": "903be3b4da170cf9", "device": "cpu-amd-epyc-2c", "dtype": "float32",
           "engine": "eager", "experts_impl": "grouped_mm"}
    fit = {"name": "builtin:x", "kind": "quick fit", "path": "/cache/x.json", "key": key, "created": "2026-12-03T02:00:06"}
    note = stale_fit_note({"mape_total": 10.1, "n": 40}, fit)
    assert note and "1010%" in note and "/cache/x.json" in note and "2026-12-03T02:00:06" in note
    assert "harness profile --model reference --device cpu --dtype float32 --experts-impl grouped_mm" in note
    assert stale_fit_note({"mape_total": 0.3, "n": 40}, fit) is None  # within what a fit may miss
    assert stale_fit_note({"mape_total": 10.1, "n": 3}, fit) is None  # too few samples to say
    assert stale_fit_note({"mape_total": 10.1, "n": 40}, {**fit, "kind": "roofline"}) is None  # not a fit
    assert stale_fit_note({"mape_total": None, "n": 0}, fit) is None
