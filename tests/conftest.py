"""Shared fixtures: a fast deterministic fake backend/task/metric (see tests/fixtures/fakes.py) and a helper
that runs one task end to end into a run directory without any real model."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # `from fakes import ...`, `from fixtures import tiny` in every test file
sys.path.insert(1, os.path.dirname(os.path.dirname(__file__)))  # the repository root: `tools` (not installed)

from fixtures.fakes import FakeBackend, FakeInfo, FakeMetric, FakeTask, fake_data  # noqa: E402


@pytest.fixture
def fake_backend():
    return FakeBackend()


@pytest.fixture
def fake_task():
    return FakeTask()


@pytest.fixture
def fake_metric():
    return FakeMetric()


@pytest.fixture
def run_fake(tmp_path):
    """``run_fake(knobs="6,2", batch_size=1, data=None, policy=None, estimator=None, out=None, ...)``
    -> (summary, lines, backend). Runs the fake task through the real runner and records."""
    from harness.runner import run_loaded_task

    def _run(knobs="8,4", batch_size=1, data=None, policy=None, policy_args=None, estimator=None, out=None,
             backend=None, metric=None, task=None, run_config_extra=None, latency_budget_ms=None, style=None):
        backend = backend or FakeBackend()
        task = task or FakeTask()
        metric = metric or FakeMetric()
        data = data or fake_data(12)
        out = out or (tmp_path / "run")
        return run_loaded_task(backend=backend, task=task, metric=metric, data=data, out_dir=out, knobs=knobs,
                               policy=policy, policy_args=policy_args, estimator=estimator, batch_size=batch_size,
                               run_config_extra=run_config_extra, latency_budget_ms=latency_budget_ms,
                               style=style) + (backend,)

    return _run
