"""Host work beside the device's (harness.host_overlap): the next batch's inputs are prepared while
the current batch runs, the last batch is recorded on the worker, and nothing a run records
changes (order, predictions, scores, failures)."""

from __future__ import annotations

import json
import sys
import threading

import pytest

from fixtures.fakes import FakeBackend, FakeMetric, FakeTask, evaluate_loaded, fake_data
from harness.errors import HarnessError
from harness.host_overlap import SWITCH_INTERVAL_S, HostWorker, enabled


def _stable(lines):
    drop = {"measured", "host_ms", "policy_ms"}
    return [{k: v for k, v in ln.items() if k not in drop} for ln in lines]


class Preparing(FakeBackend):
    """A fake with the real backend's host-input seam (``prepare_detached`` / ``adopt``), logging on
    which thread each batch's inputs were made and when, against its generate calls."""

    def __init__(self, batches: int = 0, **kw):
        super().__init__(**kw)
        self.expect = batches  # generate calls that wait for the next batch's inputs (all but the last)
        self.log: list[tuple[str, str, str]] = []  # (event, first sample id, thread name)
        self.adopted: list = []
        self.lock = threading.Lock()
        self.next_prepared = threading.Event()

    def resolve_tier(self, tier):
        return tier or self.info.default_tier

    def prepare_detached(self, requests, tier):
        with self.lock:
            self.log.append(("prepare", requests[0].sample_id, threading.current_thread().name))
        self.next_prepared.set()
        return (object(), [len(r.prompt) for r in requests], [0] * len(requests))

    def adopt(self, requests, tier, out):
        self.adopted.append((tuple(r.sample_id for r in requests), tier))
        return out

    def generate(self, requests, max_new_tokens, tier=None):
        self.next_prepared.clear()
        with self.lock:
            self.log.append(("generate", requests[0].sample_id, threading.current_thread().name))
        outs = super().generate(requests, max_new_tokens, tier)
        # while this batch "runs", the worker makes the next one's inputs (waited for, never slept on)
        n = len(getattr(self, "overlapped", []))
        self.overlapped = getattr(self, "overlapped", []) + [self.next_prepared.wait(timeout=5.0) if n + 1 < self.expect else None]
        return outs


def test_overlap_records_the_same_lines_in_the_same_order(tmp_path):
    data = fake_data(12, bad_image=2, raise_at=7)
    runs = {}
    for mode in ("off", "on"):
        summary, lines = evaluate_loaded(FakeBackend(), FakeTask(), data, tmp_path / mode, metric=FakeMetric(),
                                         knobs="8,4", batch_size=2, host_overlap=mode)
        on_disk = [json.loads(x) for x in (tmp_path / mode / "samples.jsonl").read_text().splitlines()]
        runs[mode] = (summary, on_disk)
        assert summary["timing"]["overlap"] is (mode == "on")
    (s_off, l_off), (s_on, l_on) = runs["off"], runs["on"]
    assert _stable(l_on) == _stable(l_off)
    assert [ln["id"] for ln in l_on] == [ln["id"] for ln in l_off]
    assert s_on["score"] == s_off["score"] and s_on["n_failed"] == s_off["n_failed"] == 3  # bad image, a failed batch of 2
    assert any("simulated backend failure" in (ln["error"] or "") for ln in l_on)


def test_next_batch_is_prepared_on_the_worker_while_one_runs(tmp_path):
    backend = Preparing(batches=4)
    summary, lines = evaluate_loaded(backend, FakeTask(), fake_data(8), tmp_path / "run", metric=FakeMetric(),
                                     knobs="8,4", batch_size=2, host_overlap="on")
    assert summary["n"] == 8 and summary["n_failed"] == 0
    prepares = [e for e in backend.log if e[0] == "prepare"]
    assert len(prepares) == 4 and all(name.startswith("harness-host") for _, _, name in prepares)
    # every batch but the last had the next one's inputs made during its generate call
    assert backend.overlapped[:-1] == [True, True, True]
    assert len(backend.adopted) == 4  # each handed over to the backend before its call
    assert all(ln["host_ms"] is not None for ln in lines)


def test_without_overlap_inputs_are_made_in_turn_on_the_main_thread(tmp_path):
    backend = Preparing()
    evaluate_loaded(backend, FakeTask(), fake_data(6), tmp_path / "run", metric=FakeMetric(), knobs="8,4",
                    batch_size=2, host_overlap="off")
    assert {name for _, _, name in backend.log} == {threading.main_thread().name}
    events = [e[0] for e in backend.log]
    assert events == ["prepare", "generate"] * 3


def test_a_failing_preparation_fails_only_its_batch(tmp_path):
    class Bad(Preparing):
        def prepare_detached(self, requests, tier):
            if any("RAISE" in r.prompt for r in requests):
                raise ValueError("image could not be cropped")
            return super().prepare_detached(requests, tier)

        def generate(self, requests, max_new_tokens, tier=None):
            return FakeBackend.generate(self, requests, max_new_tokens, tier)

    backend = Bad(fail_on="")
    summary, lines = evaluate_loaded(backend, FakeTask(), fake_data(8, raise_at=3), tmp_path / "run", metric=FakeMetric(),
                                     knobs="8,4", batch_size=2, host_overlap="on")
    failed = [ln for ln in lines if ln["error"]]
    assert 1 <= len(failed) <= 2 and all("image could not be cropped" in ln["error"] for ln in failed)
    assert summary["n"] == 8


def test_a_write_failure_on_the_worker_stops_the_run(tmp_path, monkeypatch):
    from harness.records import RunRecord

    real = RunRecord.append
    calls = {"n": 0}

    def failing(self, line):
        calls["n"] += 1
        if calls["n"] == 3:
            raise HarnessError("cannot write sample records: disk full; free space and re-run to resume")
        return real(self, line)

    monkeypatch.setattr(RunRecord, "append", failing)
    with pytest.raises(HarnessError, match="disk full"):
        evaluate_loaded(FakeBackend(), FakeTask(), fake_data(8), tmp_path / "run", metric=FakeMetric(), knobs="8,4",
                        batch_size=1, host_overlap="on")
    kept = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    assert len(kept) == 2  # what was written before the failure is kept


def test_worker_shortens_and_restores_the_switch_interval():
    before = sys.getswitchinterval()
    seen = []
    with HostWorker(True) as worker:
        worker.submit(lambda: seen.append((threading.current_thread().name, sys.getswitchinterval()))).result()
    assert seen[0][0].startswith("harness-host") and seen[0][1] <= SWITCH_INTERVAL_S
    assert sys.getswitchinterval() == before
    with HostWorker(False) as worker:  # off: jobs run at once, here
        assert worker.submit(lambda: threading.current_thread().name).result() == threading.main_thread().name


def test_modes():
    assert enabled("auto", "cuda:0") and not enabled("auto", "cpu")
    assert enabled("on", "cpu") and not enabled("off", "cuda")
    with pytest.raises(HarnessError, match="use one of auto, on, off"):
        enabled("sometimes", "cpu")


def test_host_threads_come_from_the_environment_or_stay_torch_s(monkeypatch):
    """HARNESS_HOST_THREADS sets the torch CPU threads of a run's host work; unset, torch's default
    stays; a value that is not a positive number is a one-line error naming the variable."""
    import torch

    from harness.errors import HarnessError
    from harness.host_overlap import host_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("HARNESS_HOST_THREADS", raising=False)
        assert host_threads() == before
        monkeypatch.setenv("HARNESS_HOST_THREADS", "1")
        assert host_threads() == 1 == torch.get_num_threads()
        for bad in ("0", "two"):
            monkeypatch.setenv("HARNESS_HOST_THREADS", bad)
            with pytest.raises(HarnessError, match=f"HARNESS_HOST_THREADS='{bad}'.*positive number"):
                host_threads()
    finally:
        torch.set_num_threads(before)
