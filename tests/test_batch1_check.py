"""``--check-batch1 N``: in a batched run N seeded samples, spread over the configurations used, are
measured again alone; summary.json reports the error of estimated_batch1 against those single
measurements, and a miss of more than 10% is a note with the command that re-makes the fit."""

from __future__ import annotations

import json

import pytest

from fixtures.fakes import FakeBackend, FakeMetric, FakeTask, evaluate_loaded, fake_data
from harness.batch1_check import default_n, pick
from harness.latency.estimator import Estimate
from test_grouped_runner import SPACE, TrueEstimator


class OffEstimator(TrueEstimator):
    """20% high: a batch-1 fit that no longer matches the machine."""

    name = "fake-off"

    def predict(self, rows):
        return [Estimate(1.2 * e.prefill_ms, 1.2 * e.decode_ms, 1.2 * e.total_ms) for e in super().predict(rows)]


def _run(tmp_path, name, estimator, n_check, subset_seed=0):
    return evaluate_loaded(FakeBackend(), FakeTask(), fake_data(24), tmp_path / name, metric=FakeMetric(),
                           policy="random", policy_args={"seed": "3"}, knob_space=SPACE, estimator=estimator,
                           batch_size=8, check_batch1=n_check, subset_seed=subset_seed)


def test_pick_is_seeded_and_spread_over_configurations():
    lines = [{"id": f"s{i}", "config": f"c{i % 3}", "estimated_batch1": {"total_ms": 1.0}, "error": None} for i in range(30)]
    a, b = pick(lines, 7, seed=1), pick(lines, 7, seed=1)
    assert [x["id"] for x in a] == [x["id"] for x in b]
    assert {x["config"] for x in a[:3]} == {"c0", "c1", "c2"}  # every configuration before any twice
    assert sorted(x["config"] for x in a).count("c0") == 3
    assert [x["id"] for x in pick(lines, 7, seed=2)] != [x["id"] for x in a]
    assert pick(lines, 0, seed=1) == [] and len(pick(lines, 99, seed=1)) == 30


def test_check_reports_error_against_single_measurements(tmp_path):
    summary, lines = _run(tmp_path, "exact", TrueEstimator(), 6)
    check = summary["batch1_check"]
    assert check["n"] == 6 and check["configurations"] == min(6, len({ln["config"] for ln in lines}))
    assert check["mape_total"] == pytest.approx(0.0, abs=1e-9) and check["within_10pct"] == 1.0
    assert set(check) >= {"mape_prefill", "mape_decode", "bias"}
    rows = [json.loads(x) for x in (tmp_path / "exact" / "batch1_check.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["measured"]["total_ms"] > 0 and r["same_prediction"] for r in rows)
    # the audit of each: its decode steps (they add up to its decode time) and its warm-up (none for this backend)
    for r in rows:
        assert sum(r["measured"]["decode_step_ms"]) == pytest.approx(r["measured"]["decode_ms"], rel=1e-3, abs=1e-3)
        assert "warmup_ms" in r and r["warmup_ms"] is None
    again, _ = _run(tmp_path, "exact-again", TrueEstimator(), 6)
    rows2 = [json.loads(x) for x in (tmp_path / "exact-again" / "batch1_check.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows2] == [r["id"] for r in rows]  # same seed, same samples
    assert not any("batch-1 check" in n for n in summary["notes"])


def test_a_miss_is_a_note_with_the_refit_command(tmp_path):
    summary, _ = _run(tmp_path, "off", OffEstimator(), 5)
    check = summary["batch1_check"]
    assert check["mape_total"] == pytest.approx(0.2) and check["bias"] == pytest.approx(0.2)
    note = next(n for n in summary["notes"] if "batch-1 check" in n)
    assert "20.0%" in note and "harness profile" in note


def test_off_by_default_on_cpu_and_at_batch_1(tmp_path):
    assert default_n("cpu", 32) == 0 and default_n("cuda", 1) == 0 and default_n("cuda:0", 8) == 64
    summary, _ = evaluate_loaded(FakeBackend(), FakeTask(), fake_data(8), tmp_path / "b1", metric=FakeMetric(),
                                 knobs="8,4", estimator=TrueEstimator(), batch_size=1, check_batch1=4)
    assert summary["batch1_check"] is None  # a batch-1 run measures every sample alone already
