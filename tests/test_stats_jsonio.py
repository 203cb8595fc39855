"""Statistics and JSON I/O helpers."""

import json

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.jsonio import atomic_write_json, iter_jsonl
from harness.stats import bootstrap_ci, describe, paired_bootstrap_diff


def test_bootstrap_ci_brackets_mean_and_is_seeded():
    x = np.r_[np.ones(70), np.zeros(30)]
    lo, hi = bootstrap_ci(x, seed=1)
    assert lo < 0.7 < hi and 0.55 < lo and hi < 0.85
    assert bootstrap_ci(x, seed=1) == (lo, hi)
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_bootstrap_is_scipys_bca_interval():
    from scipy import stats

    x = np.r_[np.ones(70), np.zeros(30)]
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(3))
    assert bootstrap_ci(x, seed=3) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    d = np.r_[np.zeros(30), -np.ones(10)]
    ref = stats.bootstrap((d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(0))
    assert paired_bootstrap_diff(d, np.zeros(40))[1:] == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))


def test_bootstrap_degenerate_and_large_inputs():
    # all equal: no spread (BCa alone would give NaN)
    assert bootstrap_ci([1.0] * 40) == (1.0, 1.0)
    # one differing value: a finite interval that reaches the mean's possible range
    lo, hi = paired_bootstrap_diff([0.0] + [1.0] * 39, [1.0] * 40)[1:]
    assert np.isfinite(lo) and lo < 0 and hi == 0
    # a big set uses the percentile interval (BCa's jackknife is O(n^2)) and stays tight
    x = np.r_[np.ones(7000), np.zeros(3000)]
    lo, hi = bootstrap_ci(x)
    assert 0.68 < lo < 0.7 < hi < 0.72


def test_paired_bootstrap_detects_consistent_drop():
    base = np.ones(200)
    cand = base.copy()
    cand[:40] = 0
    mean, lo, hi = paired_bootstrap_diff(cand, base)
    assert mean == pytest.approx(-0.2) and hi < 0
    mean, lo, hi = paired_bootstrap_diff(base, base)
    assert mean == 0 and lo == 0 and hi == 0


def test_describe_percentiles():
    d = describe(list(range(1, 101)))
    assert d["mean"] == 50.5 and d["p50"] == 50.5 and d["n"] == 100
    assert describe([])["mean"] is None


def test_iter_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"a": \n')
    with pytest.raises(HarnessError, match=r"x.jsonl:3: malformed JSON"):
        list(iter_jsonl(p))
    p.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(HarnessError, match="not valid UTF-8"):
        list(iter_jsonl(p))
    p.write_bytes(b"[1]\n")
    with pytest.raises(HarnessError, match="expected a JSON object"):
        list(iter_jsonl(p))
    p.write_bytes(b"  \n")
    with pytest.raises(HarnessError, match="is empty"):
        list(iter_jsonl(p))


def test_atomic_write_json(tmp_path):
    p = tmp_path / "d" / "s.json"
    atomic_write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in p.parent.iterdir()] == ["s.json"]
