"""The grouped-vs-per-sample benchmark script runs end to end (on the fake backend) and its
agreement statistic is right."""

from __future__ import annotations

from fixtures.fakes import FakeBackend
from fixtures.scripts import load_benchmark


def load_script():
    return load_benchmark("grouped_vs_per_sample.py")


def test_agreement():
    mod = load_script()
    a = {"x": "the cat", "y": "abcd", "z": ""}
    b = {"x": "the cat", "y": "abXY", "z": "", "w": "only here"}
    r = mod.agreement(a, b)
    assert r["n"] == 3 and r["exact"] == 2
    assert r["mean_common_prefix"] == (1.0 + 0.5 + 1.0) / 3


def test_benchmark_on_fake_backend():
    mod = load_script()
    args, sizes = mod.parse_args(["--n", "30", "--per-sample-subset", "6", "--batch-sizes", "4,8",
                                  "--agreement-batch", "8", "--max-new-tokens", "3", "--device", "cpu"])
    backend = FakeBackend()
    r = mod.benchmark(backend, args, sizes)
    rows = {row["batch_size"]: row for row in r["rows"]}
    assert set(rows) == {1, 4, 8}
    assert rows[1]["samples"] == 6 and rows[4]["samples"] == 30
    assert 4 <= r["policy"]["configs_used"] <= 8
    assert 95 <= r["prompt_tokens"]["min"] and r["prompt_tokens"]["max"] <= 705  # calibrated to 100..700
    # grouped: one batch per ceil(group / batch size), one switch per configuration
    assert rows[8]["config_switches"] == r["policy"]["configs_used"]
    assert rows[4]["batches"] >= rows[8]["batches"] >= r["policy"]["configs_used"]
    # the fake backend's outputs do not depend on batching: full agreement
    assert r["agreement_batch1_vs_batch"]["exact_rate"] == 1.0
    md = mod.to_markdown(r)
    assert "| grouped (batch 8) | 30 |" in md and "Greedy agreement, batch 1 vs batch 8" in md
