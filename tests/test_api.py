"""The public Python entry point: harness.evaluate returns what the CLI writes, validates before it
writes, and resumes like the CLI."""

import json

import pytest

import harness
from harness.errors import HarnessError
from fixtures.fakes import FakeBackend, FakeMetric, FakeTask, fake_data


def _eval(tmp_path, **kw):
    return harness.evaluate(FakeTask(), kw.pop("knobs", "6,2"), backend=kw.pop("backend", FakeBackend()),
                            data=fake_data(8), output=tmp_path / "run", metric=FakeMetric(), estimator="none", **kw)


def test_evaluate_returns_the_written_summary_and_lines(tmp_path):
    result = _eval(tmp_path)
    on_disk = json.loads((result.run_dir / "summary.json").read_text())
    assert json.loads(json.dumps(result.summary, default=str)) == on_disk
    assert [ln["id"] for ln in result.samples[0]] == [s.id for s in fake_data(8).samples]
    assert result.summary["config"].startswith("6,2,") and result.summary["n"] == 8


def test_evaluate_resumes_without_recomputing(tmp_path):
    first = _eval(tmp_path)
    backend = FakeBackend()
    second = _eval(tmp_path, backend=backend)
    assert backend.batches == []  # nothing recomputed
    assert [ln["prediction"] for ln in first.samples[0]] == [ln["prediction"] for ln in second.samples[0]]
    assert second.summary["score"] == first.summary["score"]


def test_bad_knobs_raise_before_anything_is_written(tmp_path):
    with pytest.raises(HarnessError, match="num_blocks"):
        _eval(tmp_path, knobs="99,2")
    assert not (tmp_path / "run").exists()


def test_knobs_and_a_policy_are_exclusive(tmp_path):
    with pytest.raises(HarnessError, match="exclusive"):
        _eval(tmp_path, policy="random")


def test_several_runs_need_the_plural_accessors(tmp_path):
    result = harness.api.EvalResult([{}, {}], [tmp_path, tmp_path])
    with pytest.raises(ValueError):
        result.summary
    with pytest.raises(ValueError):
        result.run_dir
