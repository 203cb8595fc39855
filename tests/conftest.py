"""Shared fixtures: a fast deterministic fake backend/task/metric (see tests/fixtures/fakes.py) and a helper
that runs one task end to end into a run directory without any real model."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # `from fakes import ...`, `from fixtures import tiny` in every test file
sys.path.insert(1, os.path.dirname(os.path.dirname(__file__)))  # the repository root: `tools` (not installed)

from fixtures.fakes import FakeBackend, FakeInfo, FakeMetric, FakeTask, evaluate_loaded, fake_data  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need a CUDA device: where torch sees none they skip with that reason (they are
    in every default run, so a CPU machine lists them as skipped rather than failing them)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu); torch sees none here")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Module- and session-scoped fixtures run before the per-test one below: the same settings."""
    new = {"HARNESS_CACHE_DIR": str(tmp_path_factory.mktemp("harness-session-cache")), "HARNESS_AUTOFIT_SECONDS": "0"}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _user_cache(tmp_path_factory, monkeypatch):
    """Fits made on first use go to the user cache: a per-test folder here, never ~/.cache. No
    automatic fit (up to a minute each on the real models): the labelled roofline stands in; tests
    of the automatic fit turn it on (HARNESS_AUTOFIT_SECONDS)."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("harness-cache")))
    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "0")


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
    def _run(knobs="8,4", batch_size=1, data=None, policy=None, policy_args=None, estimator=None, out=None,
             backend=None, metric=None, task=None, latency_budget_ms=None, style=None):
        backend = backend or FakeBackend()
        return evaluate_loaded(backend, task or FakeTask(), data or fake_data(12), out or (tmp_path / "run"),
                               metric=metric or FakeMetric(), knobs=knobs, policy=policy, policy_args=policy_args,
                               estimator=estimator, batch_size=batch_size, latency_budget_ms=latency_budget_ms,
                               style=style) + (backend,)

    return _run


@pytest.fixture
def harness_cli(monkeypatch, tmp_path):
    """``harness_cli("run", ...) -> exit code``: the real CLI with the fake backend (any model spec),
    estimator fits and the user cache under ``tmp_path``, run from ``tmp_path``."""
    import harness.backends as hb
    import harness.latency.fit_files as fits

    monkeypatch.setattr(hb, "describe", lambda spec: FakeInfo(name=spec))
    monkeypatch.setattr(hb, "load", lambda spec, **kw: FakeBackend())
    monkeypatch.setattr(fits, "shipped_dir", lambda: tmp_path / "shipped")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def call(*args):
        from harness.cli import main

        with pytest.raises(SystemExit) as exc:
            main([*map(str, args)])
        return exc.value.code

    return call
