"""Built-in estimator: least-squares fit recovers known physics, held-out evaluation, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.fakes import FakeBackend, true_decode_step_ms, true_prefill_ms
from harness.errors import HarnessError
from harness.latency.estimator import EstimatorInput, FittedEstimator, load_estimator
from harness.latency.evaluation import error_stats, evaluate
from harness.latency.linear_model import fit_weighted_lstsq
from harness.latency.measurement import Measurement
from harness.latency.heldout_fit import fit_and_report, fit_measurements, split_heldout
from harness.latency.fit_files import FitKey
from harness.latency.grid import Grid, default_grid, parse_grid
from harness.latency.profiler import Profiler, jobs_for

KEY = FitKey("fake", None, "cpu-test-2c", "float32", "eager", "eager")


def profile_backend(backend, grid, repeats=1, seed=0):
    ms = Profiler(backend, grid, seed).run(jobs_for(grid, repeats, seed))
    return fit_and_report(ms, backend.info, KEY, grid, repeats=repeats, seed=seed)


def _synthetic(noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    ms = []
    for a in (4, 5, 6, 7, 8):
        for k in (1, 2, 3, 4):
            for tier, v in ((0, 16), (1, 36), (2, 64)):
                for t in (10, 40, 90):
                    n = 12
                    pre = true_prefill_ms(v, t, a, k) * (1 + noise * rng.standard_normal())
                    steps = [true_decode_step_ms(v, t, a, k, p) * (1 + noise * rng.standard_normal()) for p in range(1, n + 1)]
                    ms.append(Measurement(a, k, tier, v, t, pre, steps))
    return ms


def test_weighted_lstsq_recovers_coefficients():
    rng = np.random.default_rng(1)
    X = np.column_stack([np.ones(50), rng.uniform(1, 100, 50), rng.uniform(1, 10, 50)])
    coef = np.array([3.0, 0.25, 1.5])
    assert np.allclose(fit_weighted_lstsq(X, X @ coef), coef, rtol=1e-5)


def test_fit_on_known_physics_is_exact_on_heldout_configs():
    ms = _synthetic()
    train, test = split_heldout(ms, 0.25, seed=0)
    assert test and {m.config_key for m in train}.isdisjoint({m.config_key for m in test})
    est = fit_measurements(train, n_experts=4)
    err = evaluate(est, test)
    for part in ("prefill", "decode", "total"):
        assert err[part]["mape"] < 1e-4, part
        assert err[part]["within_10pct"] == 1.0


def test_fit_with_noise_stays_within_ten_percent():
    ms = _synthetic(noise=0.02, seed=3)
    train, test = split_heldout(ms, 0.25, seed=1)
    err = evaluate(fit_measurements(train), test)
    assert err["total"]["mape"] < 0.05 and err["total"]["within_10pct"] > 0.95


def test_decode_total_is_sum_over_positions():
    est = fit_measurements(_synthetic(), n_experts=4)
    row = EstimatorInput(top_k=3, num_active_blocks=6, tier_idx=1, vision_tokens=36, text_tokens=20, output_tokens=7)
    (e,) = est.predict([row])
    expected = sum(true_decode_step_ms(36, 20, 6, 3, p) for p in range(1, 8))
    assert e.decode_ms == pytest.approx(expected, rel=1e-4)
    assert e.total_ms == pytest.approx(e.prefill_ms + e.decode_ms)
    (zero,) = est.predict([EstimatorInput(3, 6, 1, 36, 20, 0)])
    assert zero.decode_ms == 0.0


def test_an_engine_that_pads_prompts_is_fitted_on_the_padded_length(tmp_path):
    """The fast engine on CUDA runs each prompt pass at a multiple of 64 tokens: its prefill is a
    step function of the prompt length. A fit told the bucket recovers it exactly on held-out
    lengths (one that is not has to average the steps), and the bucket survives a save."""
    from harness.latency.linear_model import padded

    def pre(v, t, a, k):  # dense and expert work on the padded length, the vision encoder on v
        return 0.5 + 0.01 * v + a * 0.002 * padded(v + t, 64) + (a - 1) * k * 0.0004 * padded(v + t, 64)

    ms = [Measurement(a, k, 0, v, t, float(pre(v, t, a, k)), [1.0 + 0.1 * a])
          for a in (4, 6, 8) for k in (1, 2, 4) for v in (0, 100) for t in (10, 50, 70, 120, 130, 200, 250)]
    train, test = split_heldout(ms, 0.25, seed=0)
    fit = fit_measurements(train, n_experts=4, prompt_bucket=64)
    assert evaluate(fit, test)["prefill"]["mape"] < 1e-4
    assert evaluate(fit_measurements(train, n_experts=4), test)["prefill"]["mape"] > 1e-3
    again = FittedEstimator.load(fit.save(tmp_path / "f.json"))
    assert again.prompt_bucket == 64 and evaluate(again, test)["prefill"]["mape"] < 1e-4


def test_save_load_roundtrip(tmp_path):
    est = fit_measurements(_synthetic())
    est.meta = {"device_name": "x", "heldout": {"total": {"mape": 0.01}}}
    path = est.save(tmp_path / "m__cpu.json")
    again = FittedEstimator.load(path)
    rows = [EstimatorInput(2, 5, 0, 16, 30, 5)]
    assert again.predict(rows) == est.predict(rows)
    assert again.describe()["path"] == str(path)


def test_broken_fit_file_is_one_line_error(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"format": "other"}')
    with pytest.raises(HarnessError, match="not a harness estimator fit"):
        FittedEstimator.load(p)
    with pytest.raises(HarnessError, match="does not exist"):
        load_estimator(str(tmp_path / "missing.json"), None, "cpu")


def test_error_stats():
    s = error_stats([110.0, 95.0, 50.0], [100.0, 100.0, 100.0])
    assert s["mape"] == pytest.approx((0.1 + 0.05 + 0.5) / 3)
    assert s["within_10pct"] == pytest.approx(2 / 3)
    assert s["within_5pct"] == pytest.approx(1 / 3)
    assert s["bias"] == pytest.approx((0.1 - 0.05 - 0.5) / 3)
    assert error_stats([], [])["mape"] is None


def test_profile_sweep_on_fake_backend():
    backend = FakeBackend()
    grid = Grid(blocks=[4, 6, 8], top_k=[1, 2, 4], tiers=["low", "high"], prompt=[8, 32], output=[6])
    res = profile_backend(backend, grid, repeats=1, seed=0)
    assert len(res.measurements) == 3 * 3 * 2 * 2
    assert res.heldout["n_configs"] >= 1 and res.heldout["total"]["mape"] < 1e-3
    # the headline is the single-measurement figure; the median-based one stands beside it
    assert res.estimator.meta["headline"]["mape_total"] == res.heldout["total"]["mape"]
    assert "single" in res.estimator.meta["headline"]["ground_truth"]
    assert res.extra["heldout_medians"]["total"]["n"] >= 1 and res.extra["by_config"]
    assert res.estimator.meta["key"] == KEY.to_dict() and res.estimator.meta["batch_buckets"] == [1]
    # EOS was ignored while profiling (every call ran the full output length: 6 tokens, the first from
    # the prefill, 5 timed decode steps) and restored after
    assert all(len(m.decode_step_ms) == 5 for m in res.measurements)
    assert backend.eos_token_ids == [0]
    # prompts hit their target text length
    assert {m.text_tokens for m in res.measurements} == {8, 32}


def test_parse_grid_validates_against_model():
    info = FakeBackend().info
    g = parse_grid("blocks=4,8;top_k=1,4;tier=low;prompt=10;output=5", info)
    assert g.blocks == [4, 8] and g.tiers == ["low"] and g.output == [5]
    with pytest.raises(HarnessError, match="out of range"):
        parse_grid("blocks=3", info)
    with pytest.raises(HarnessError, match="KEY=V1,V2"):
        parse_grid("speed=3", info)
    assert default_grid(info, quick=True).blocks == [4, 8]


def test_nonnegative_fit_recovers_sparse_costs():
    rng = np.random.default_rng(4)
    X = np.abs(rng.normal(size=(60, 5)))
    coef = np.array([1.5, 0.0, 2.0, 0.0, 0.25])
    got = fit_weighted_lstsq(X, X @ coef + 1e-9, nonneg=True)
    assert np.all(got >= 0) and np.allclose(got, coef, atol=1e-4)
