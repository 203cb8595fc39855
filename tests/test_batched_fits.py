"""Fits that hold at batch > 1 (issue 30, point 3): distinct profile rows, one fit file per batch
bucket (a quick fit never over a full one), a quick fit that warms up off its clock, keeps and
resumes its measurements and says in one line why it could not fit, the batch-1 estimator of a
batched run, and the row that describes a padded batch."""

from __future__ import annotations

import json
import time

import pytest

from fixtures.fakes import FakeBackend, fake_data, FakeTask, FakeMetric, true_decode_step_ms, true_prefill_ms
from harness.knobs import Knobs
from harness.latency.estimator import EstimatorInput, FittedEstimator, PendingFit, rows_for_batch
from harness.latency.fit_files import FitKey, cache_dir, default_fit_path, find_fit, profile_command
from harness.latency.firstuse import (QUICK_CALLS, MIN_QUICK_CONFIGS, quick_batch_sizes, backend_key, batch1_estimator, quick_fit, quick_log_path,
                                      resolve)
from harness.latency.grid import Grid
from harness.latency.heldout_fit import fit_measurements
from harness.latency.measurement import Measurement
from harness.latency.profiler import Profiler, jobs_for


@pytest.fixture
def autofit(monkeypatch):
    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "60")


def _save_fit(path, key, buckets=(1,), **meta):
    ms = [Measurement(a, k, 0, 16, t, true_prefill_ms(16, t, a, k), [true_decode_step_ms(16, t, a, k, p) for p in (1, 2, 3)])
          for a in (4, 6, 8) for k in (1, 2, 4) for t in (8, 30)]
    est = fit_measurements(ms)
    est.prompt_bucket = int(meta.pop("prompt_bucket", 0))
    est.meta = {"key": key.to_dict(), "batch_buckets": list(buckets), **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    est.save(path)
    return path


def _evaluate(backend, out, batch_size):
    from harness import api

    res = api.evaluate(FakeTask(), knobs="6,2", backend=backend, data=fake_data(8), output=out, metric=FakeMetric(),
                       estimator="builtin", batch_size=batch_size)
    return res.summary, res.samples[0]


# -- one file per batch bucket -------------------------------------------------------------------
def test_fit_paths_name_the_batch_buckets_and_quick_fits_apart():
    key = FitKey("fake", None, "cpu-x-2c", "float32", "eager", "eager")
    names = {default_fit_path(key).name, default_fit_path(key, 8).name, default_fit_path(key, [1, 8, 32]).name,
             default_fit_path(key, 8, quick=True).name}
    assert len(names) == 4
    assert default_fit_path(key, 5).name.endswith("__b8.json")  # named by the bucket, as lookup works
    assert default_fit_path(key, [32, 1, 8]).name.endswith("__b1-8-32.json")
    assert default_fit_path(key, 8, quick=True).name.endswith("__b8__quick.json")


def test_a_batch8_quick_fit_leaves_the_batch1_fit_untouched(autofit, tmp_path):
    backend = FakeBackend()
    s1, lines1 = _evaluate(backend, tmp_path / "b1", 1)
    path1 = s1["estimator_info"]["path"]
    assert s1["estimator_info"]["batch_buckets"] == [1]
    before = open(path1, "rb").read()
    s8, _ = _evaluate(backend, tmp_path / "b8", 8)
    assert s8["estimator_info"]["batch_buckets"] == [2, 4, 8] and s8["estimator_info"]["path"] != path1  # the sizes a batch-8 run meets
    assert open(path1, "rb").read() == before
    again, lines_again = _evaluate(backend, tmp_path / "b1-again", 1)
    assert again["estimator_info"]["path"] == path1
    assert [ln["estimated"] for ln in lines_again] == [ln["estimated"] for ln in lines1]


def test_a_quick_fit_never_replaces_a_full_one(autofit):
    backend = FakeBackend()
    key = backend_key(backend, backend.info)
    # a full batch-8 fit of an engine that padded prompts (not this one's): not used, and not overwritten
    full = _save_fit(default_fit_path(key, 8), key, (8,), prompt_bucket=64, created="2026-01-01T00:00:00+00:00")
    before = full.read_bytes()
    est, note = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, batch_size=8, quiet=True)
    assert est.meta["quick"] and est.path == str(default_fit_path(key, quick_batch_sizes(8), quick=True)) and "quick fit" in note
    assert full.read_bytes() == before
    # where a full fit and a quick one both match, the full one is used, even if the quick one is newer
    full_ok = _save_fit(default_fit_path(key, [1, 8]), key, (1, 8), created="2026-01-01T00:00:00+00:00")
    assert find_fit(key, 8).path == full_ok
    assert find_fit(key, 8, prompt_bucket=0).path == full_ok


def test_old_fit_files_without_the_bucket_in_their_name_are_still_found():
    key = FitKey("fake", None, "cpu-x-2c", "float32", "eager", "eager")
    old = _save_fit(cache_dir() / f"{key.slug()}.json", key, (1,))
    assert find_fit(key, 1).path == old
    assert find_fit(key, 8).path is None
    # a newer full fit of the same bucket is preferred to it; the old file stays
    new = _save_fit(default_fit_path(key, 1), key, (1,), created="2030-01-01T00:00:00+00:00")
    assert find_fit(key, 1).path == new and old.is_file()


def test_harness_profile_writes_one_file_per_bucket_set(monkeypatch, tmp_path, capsys):
    import harness.backends as hb
    import harness.latency.fit_files as F
    from fixtures.fakes import FakeInfo
    from harness.cli import main

    monkeypatch.setattr(hb, "describe", lambda spec: FakeInfo(name=spec))
    monkeypatch.setattr(hb, "load", lambda spec, **kw: FakeBackend())
    monkeypatch.setattr(F, "shipped_dir", lambda: tmp_path / "shipped")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    grid = "blocks=4,8;top_k=1,4;tier=low;prompt=8;output=2"
    for sizes in ("1", "8"):
        with pytest.raises(SystemExit) as exc:
            main(["profile", "--model", "pm", "--grid", grid, "--batch-sizes", sizes, "--tasks", "tallyqa", "--repeats",
                  "1", "-q"])
        assert exc.value.code == 0, capsys.readouterr().err
    fits = sorted(p.name for p in (tmp_path / "cache" / "estimators").glob("pm__*.json")
                  if not p.name.endswith(".measurements.json"))
    assert len(fits) == 2 and fits[0].endswith("__b1.json") and fits[1].endswith("__b8.json")


# -- distinct profile rows -----------------------------------------------------------------------
class Recording(FakeBackend):
    """Counts text tokens as a subword tokenizer would (long words are two tokens) and keeps every request."""

    def __init__(self):
        super().__init__()
        self.requests = []

    def count_tokens(self, request, tier=None):
        _, vision = super().count_tokens(request, tier)
        return sum(1 + (len(w) > 5) for w in request.prompt.split()), vision

    def generate(self, requests, max_new_tokens, tier=None):
        self.requests.append(list(requests))
        return super().generate(requests, max_new_tokens, tier)


def test_profile_rows_are_distinct_prompts_and_images_of_the_same_token_counts():
    backend = Recording()
    grid = Grid([4, 8], [1, 4], ["low", "high"], [12, 30], [2], [4])
    prof = Profiler(backend, grid, seed=3)
    ms = prof.run(jobs_for(grid, 1, 3))
    assert {m.batch_size for m in ms} == {4}
    for reqs in backend.requests:
        assert len(reqs) == 4
        assert len({r.prompt for r in reqs}) == 4  # distinct content ...
        assert len({r.image.tobytes() for r in reqs}) == 4
        assert len({r.image.size for r in reqs}) == 1  # ... of one size (same vision tokens)
        for tier in ("low", "high"):
            assert len({backend.count_tokens(r, tier) for r in reqs}) == 1  # ... and the same token counts
    # the text tokens a batch's rows have are the batch-1 prompt's
    one = Profiler(Recording(), Grid([4], [1], ["low", "high"], [12, 30], [2], [1]), seed=3)
    ms1 = one.run(jobs_for(one.grid, 1, 3))
    assert {(m.tier_idx, m.text_tokens) for m in ms1} == {(m.tier_idx, m.text_tokens) for m in ms}
    # seeded: the same seed gives the same rows
    again = Profiler(Recording(), grid, seed=3)
    assert [again.prompt("low", 12, j) for j in range(4)] == [prof.prompt("low", 12, j) for j in range(4)]


# -- the quick fit: warm-up off the clock, resumed measurements, one line when it cannot fit -----
class Compiling(FakeBackend):
    """The first call of each (configuration, batch size) is slow, like a compile or a graph capture."""

    def __init__(self, compile_s=0.05, call_s=0.0):
        super().__init__()
        self.compile_s, self.call_s, self.seen = compile_s, call_s, set()

    def generate(self, requests, max_new_tokens, tier=None):
        key = (str(self.knobs.with_tier(tier or self.knobs.tier)), len(requests))
        if key not in self.seen:
            self.seen.add(key)
            time.sleep(self.compile_s)
        if self.call_s:
            time.sleep(self.call_s)
        return super().generate(requests, max_new_tokens, tier)


def test_the_quick_fit_compiles_and_warms_up_before_its_clock_starts():
    backend = Compiling(compile_s=0.05)
    key = backend_key(backend, backend.info)
    # 12 configurations to compile (0.6 s) against a 0.3 s clock: counted on the clock, few would be measured
    qf = quick_fit(backend, backend.info, key, batch_size=4, budget=0.3, warmup_budget=30, log_path=None)
    assert qf.estimator is not None, qf.line("x")
    keys = qf.estimator.meta["warmup"]["keys"]
    assert keys >= 12 and qf.warmup_seconds >= keys * 0.05 > qf.budget >= qf.seconds
    assert qf.n_calls == qf.total_configs == 2 * max(MIN_QUICK_CONFIGS + 2, QUICK_CALLS // 2)  # batch sizes 2 and 4
    assert qf.estimator.batch_buckets == [2, 4]


def test_keys_warmed_inside_the_timed_phase_stay_off_its_clock():
    """Past its warm-up deadline the quick fit warms the remaining keys as their jobs come; that
    compile time moves the clock's deadline instead of taking the timed calls' seconds."""
    backend = Compiling(compile_s=0.05)
    key = backend_key(backend, backend.info)
    # a warm-up phase that stops after its first key; 12 keys to compile (0.6 s) against a 0.3 s clock
    qf = quick_fit(backend, backend.info, key, batch_size=4, budget=0.3, warmup_budget=0.0, log_path=None)
    assert qf.estimator is not None, qf.line("x")
    assert qf.n_calls == qf.total_configs and qf.seconds <= qf.budget + 0.1 < qf.warmup_seconds


class Reserving(FakeBackend):
    """Records the memory reservations it is asked for and the calls that come after them."""

    def __init__(self):
        super().__init__()
        self.events = []

    def reserve(self, batch_size, input_tokens, max_new_tokens):
        self.events.append(("reserve", batch_size, input_tokens, max_new_tokens))

    def generate(self, requests, max_new_tokens, tier=None):
        tokens = max(sum(self.count_tokens(r, tier or self.knobs.tier)) for r in requests)
        self.events.append(("call", len(requests), tokens, max_new_tokens))
        return super().generate(requests, max_new_tokens, tier)


def test_a_quick_fit_and_a_run_reserve_their_largest_call_before_the_first():
    """Before its first call the quick fit asks the backend for the memory of its largest call (rows x
    (input + new tokens), the largest of every call it makes), so that the engine's caches share one
    storage; so does a batched run for its plan's largest batch."""
    backend = Reserving()
    qf = quick_fit(backend, backend.info, backend_key(backend, backend.info), batch_size=8, budget=30, log_path=None)
    assert qf.estimator is not None, qf.line("x")
    ev = backend.events
    assert ev[0][0] == "reserve" and all(e[0] == "call" for e in ev[1:3])
    size = lambda e: e[1] * (e[2] + e[3])  # noqa: E731
    calls = [e for e in ev if e[0] == "call"]
    assert size(ev[0]) == max(size(e) for e in calls) and ev[0][1] == 8
    run_backend = Reserving()
    _evaluate(run_backend, None, 3)
    first = next(i for i, e in enumerate(run_backend.events) if e[0] == "reserve")
    calls = [e for e in run_backend.events[first:] if e[0] == "call"]
    assert calls and run_backend.events[first][1] == 3 and size(run_backend.events[first]) >= max(size(e) for e in calls)


def test_a_failed_quick_fit_says_in_one_line_what_it_measured_why_and_the_profile_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "0.05")
    backend = Compiling(compile_s=0.0, call_s=0.02)  # at most 3 timed calls fit in 0.05 s
    summary, _ = _evaluate(backend, tmp_path / "run", 8)
    key = backend_key(backend, backend.info)
    cmd = profile_command(key, 8)
    notes = [n for n in summary["notes"] if "quick latency fit" in n]
    assert len(notes) == 1
    (note,) = notes
    assert "\n" not in note
    assert "measured " in note and " configurations" in note and "timed calls" in note  # what it measured
    assert f"a fit needs {MIN_QUICK_CONFIGS} configurations" in note and "ran out" in note  # why not enough
    assert "HARNESS_AUTOFIT_SECONDS" in note and f"`{cmd}`" in note  # what to do
    assert str(quick_log_path(key, 8)) in note and "resumes" in note
    err = capsys.readouterr().err
    assert sum(1 for ln in err.splitlines() if "quick latency fit" in ln) == 1  # said once, in one line
    assert not default_fit_path(key, 8, quick=True).exists()


def test_a_failing_call_is_the_reason_not_a_silent_none(autofit):
    class Breaks(FakeBackend):
        def generate(self, requests, max_new_tokens, tier=None):
            if len(self.batches) >= 7:
                raise RuntimeError("out of memory")
            return super().generate(requests, max_new_tokens, tier)

    backend = Breaks()
    est, note = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, batch_size=2, quiet=True)
    assert est is None and "a call failed (RuntimeError: out of memory)" in note and "harness profile" in note


def test_a_call_failing_after_enough_configurations_still_fits(autofit, monkeypatch, tmp_path):
    """An out-of-memory call at a shape the card cannot hold, once enough configurations are measured:
    the quick fit is made from those, and its note names the failure."""
    probe = FakeBackend()
    est0, _ = resolve(PendingFit(probe.info, "cpu"), probe, probe.info, batch_size=2, quiet=True)
    warm_calls = est0.meta["warmup"]["calls"]
    limit = warm_calls + MIN_QUICK_CONFIGS + 2  # the warm-up and a few timed calls go through

    class Breaks(FakeBackend):
        def generate(self, requests, max_new_tokens, tier=None):
            if len(self.batches) >= limit:
                raise RuntimeError("CUDA out of memory")
            return super().generate(requests, max_new_tokens, tier)

    backend = Breaks()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "second"))  # the probe's fit is not found
    est, note = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, batch_size=2, quiet=True)
    assert est is not None and est.meta["quick_fit"]["failed_call"] == "RuntimeError: CUDA out of memory"
    assert est.meta["quick_fit"]["configs"] >= MIN_QUICK_CONFIGS
    assert "stopped at a call that failed (RuntimeError: CUDA out of memory)" in note


def test_the_quick_fit_resumes_its_measurement_log(monkeypatch):
    backend = Compiling(compile_s=0.0, call_s=0.02)
    key = backend_key(backend, backend.info)
    log = quick_log_path(key, 8)
    seen = []
    for _ in range(2):  # two runs short of a fit: each keeps what it measured, the second adds to the first's
        qf = quick_fit(backend, backend.info, key, batch_size=8, budget=0.05)
        assert qf.estimator is None and qf.log_path == log and log.is_file()
        lines = log.read_text().splitlines()[1:]
        assert len(lines) == qf.n_calls and qf.n_configs < MIN_QUICK_CONFIGS
        seen.append(lines)
    assert len(seen[1]) > len(seen[0]) and seen[1][:len(seen[0])] == seen[0]
    # a run with time enough: the saved calls are not timed again
    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "60")
    calls = len(backend.batches)
    est, note = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, batch_size=8, quiet=True)
    assert est is not None and est.meta["quick_fit"]["resumed"] == len(seen[1])
    assert f"{len(seen[1])} of them resumed" in note
    timed_now = len(backend.batches) - calls - est.meta["warmup"]["calls"]
    total = est.meta["n_measurements"]
    assert timed_now == total - len(seen[1]) and total == 3 * max(MIN_QUICK_CONFIGS + 2, QUICK_CALLS // 3)
    assert not log.exists()  # the fit holds what the log was for


def test_a_measurement_log_of_another_grid_is_started_afresh():
    backend = FakeBackend()
    key = backend_key(backend, backend.info)
    log = quick_log_path(key, 2)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(json.dumps({"key": key.to_dict(), "grid": "another"}) + "\n" + json.dumps({"job": 0, "m": {}}) + "\n")
    qf = quick_fit(backend, backend.info, key, batch_size=2, budget=60)
    assert qf.estimator is not None and qf.resumed == 0 and qf.n_calls == 24


# -- the batch-1 estimator of a batched run ------------------------------------------------------
def test_batch1_estimator_of_a_batch1_run_is_the_runs_own():
    backend = FakeBackend()
    est = FittedEstimator.load(_save_fit(default_fit_path(backend_key(backend, backend.info), 1),
                                         backend_key(backend, backend.info)))
    assert batch1_estimator(est, backend, backend.info, batch_size=1) == (est, None)
    pending = PendingFit(backend.info, "cpu")
    pending.fitted = est
    assert batch1_estimator(pending, backend, backend.info, batch_size=1) == (est, None)
    assert batch1_estimator(None, backend, backend.info, batch_size=8) == (None, None)


def test_batch1_estimator_of_a_batched_run_is_the_modes_batch1_fit(autofit):
    backend = FakeBackend()
    key = backend_key(backend, backend.info)
    b1, _ = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, batch_size=1, quiet=True)
    b8, _ = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, batch_size=8, quiet=True)
    got, note = batch1_estimator(b8, backend, backend.info, batch_size=8)
    assert note is None and isinstance(got, FittedEstimator) and got.path == b1.path and got.batch_buckets == [1]
    rows = [EstimatorInput(2, 6, 1, 36, 20, 3)]
    assert got.predict(rows) == b1.predict(rows)
    # a fit of the run's mode covering bucket 1 as well as 8 is the batch-1 estimator itself
    both = FittedEstimator.load(_save_fit(default_fit_path(key, [1, 8]), key, (1, 8)))
    assert batch1_estimator(both, backend, backend.info, batch_size=8) == (both, None)


def test_batch1_estimator_makes_a_quick_batch1_fit_or_says_why_not(monkeypatch, autofit):
    from harness.latency.estimator import Estimate, LatencyEstimator

    backend = FakeBackend()
    key = backend_key(backend, backend.info)
    b8, _ = resolve(PendingFit(backend.info, "cpu"), backend, backend.info, batch_size=8, quiet=True)
    got, note = batch1_estimator(b8, backend, backend.info, batch_size=8)
    assert got.batch_buckets == [1] and got.path == str(default_fit_path(key, 1, quick=True))
    assert note.startswith("batch-1 estimator: quick fit")
    default_fit_path(key, 1, quick=True).unlink()
    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "0")
    got, note = batch1_estimator(b8, backend, backend.info, batch_size=8)
    assert got is None and "\n" not in note and "HARNESS_AUTOFIT_SECONDS=0" in note
    assert f"`{profile_command(key, 1)}`" in note and "no batch-1" in note

    class Plugin(LatencyEstimator):  # a user's estimator: per sample already
        name = "plugin"

        def predict(self, rows):
            return [Estimate(1.0, 1.0, 2.0) for _ in rows]

    plugin = Plugin()
    assert batch1_estimator(plugin, backend, backend.info, batch_size=8) == (plugin, None)


# -- the row of a padded batch -------------------------------------------------------------------
class _Out:
    def __init__(self, v, t, steps):
        self.vision_tokens, self.text_tokens, self.output_tokens = v, t, steps + 1
        self.timings = type("T", (), {"decode_step_ms": [1.0] * steps})()


def test_rows_for_batch_take_the_longest_prompt_not_the_sum_of_two_maxima():
    # the most vision tokens and the most text tokens belong to different samples
    outs = [_Out(16, 50, 3), _Out(64, 10, 5), _Out(0, 20, 2)]
    (row,) = rows_for_batch(Knobs(6, 2, "high"), outs, 2, batch_aware=True)
    assert row.vision_tokens + row.text_tokens == max(16 + 50, 64 + 10, 0 + 20) == 74  # not 64 + 50
    assert row.vision_tokens == 64 and row.output_tokens == 5 and row.batch_size == 3
    rows = rows_for_batch(Knobs(6, 2, "high"), outs, 2, batch_aware=False)  # per sample: each its own prompt
    assert [(r.vision_tokens, r.text_tokens, r.batch_size) for r in rows] == [(16, 50, 1), (64, 10, 1), (0, 20, 1)]


def test_quick_fit_sizes_cover_the_batches_a_batched_run_meets():
    from harness.latency.firstuse import quick_batch_sizes

    assert quick_batch_sizes(1) == [1] and quick_batch_sizes(2) == [2]
    assert quick_batch_sizes(32) == [2, 4, 8, 16, 32] and quick_batch_sizes(48) == [2, 4, 8, 16, 32, 48]
