"""Host work beside the device's: while one batch runs on the GPU, a worker thread prepares the
next batch's inputs (prompt tokens, image preprocessing at the chosen tier, the copy to the
device) and records the batch before it (postprocessing, scores, estimates, its sample lines), as
a data loader does. The main thread keeps only what drives the device: switching knobs, warm-up
and the timed ``generate`` call.

What a measurement contains does not change:

- the worker makes no CUDA call: it builds the inputs in host memory (:meth:`Backend.prepare_detached`)
  and the main thread copies them to the device between batches (:meth:`Backend.adopt`), so nothing
  lands on the model's stream while it is measured, and no graph capture (which forbids CUDA calls
  from other threads) is ever broken;
- the decode loop keeps one step queued ahead of the GPU (:mod:`harness.decode`): while the worker
  runs, the interpreter's switch interval is shortened (:data:`SWITCH_INTERVAL_S`, far below a
  decode step) so the loop gets the interpreter back before the queued step ends;
- sample lines are written by the one worker in plan order, as without it.

``benchmarks/host_overlap.py`` measures the same samples with and without the worker. It is on by
default on CUDA only: on the CPU the model's own threads use every core, so a worker would take
time from the measured forward passes.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

MODES = ("auto", "on", "off")
SWITCH_INTERVAL_S = 0.0001  # while the worker runs: the GIL changes hands within 0.1 ms (default 5 ms)


def enabled(mode: str | None, device) -> bool:
    """Whether a run overlaps host work with the device's: ``on``, ``off``, or ``auto`` (CUDA only)."""
    mode = (mode or "auto").lower()
    if mode not in MODES:
        from harness.errors import HarnessError

        raise HarnessError(f"unknown host overlap '{mode}'; use one of {', '.join(MODES)}")
    return mode == "on" or (mode == "auto" and str(device).startswith("cuda"))


HOST_THREADS_ENV = "HARNESS_HOST_THREADS"


def host_threads() -> int:
    """Set and return the torch CPU threads of a run's host work (image preprocessing, copies,
    scores): ``HARNESS_HOST_THREADS=N`` sets N; unset, torch's own default stays."""
    import torch

    raw = os.environ.get(HOST_THREADS_ENV, "").strip()
    if raw:
        try:
            n = int(raw)
            if n < 1:
                raise ValueError
        except ValueError:
            from harness.errors import HarnessError

            raise HarnessError(f"{HOST_THREADS_ENV}='{raw}' is not a positive number of threads; set e.g. 1, or unset it")
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    return torch.get_num_threads()


class HostWorker:
    """One worker thread; jobs run in submission order and make no CUDA call. Disabled, a job runs at
    once on the calling thread, so the same loop serves both."""

    def __init__(self, on: bool):
        self.on = bool(on)
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: list[Future] = []
        self._interval: float | None = None

    def __enter__(self) -> "HostWorker":
        if self.on:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="harness-host")
            self._interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._interval, SWITCH_INTERVAL_S))
        return self

    def __exit__(self, exc_type, *exc) -> bool:
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True)  # finished batches are recorded whatever ended the loop
            if exc_type is None:
                self.raise_failed()
        finally:
            if self._interval is not None:
                sys.setswitchinterval(self._interval)
        return False

    def submit(self, job: Callable, *args) -> Future:
        """Run ``job(*args)`` on the worker, or now when disabled. A job
        that raises keeps its exception in the future (see :meth:`raise_failed`)."""
        if self._pool is None:
            fut: Future = Future()
            try:
                fut.set_result(job(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller as it would be on the worker
                fut.set_exception(exc)
            self._jobs.append(fut)
            return fut
        fut = self._pool.submit(job, *args)
        self._jobs.append(fut)
        return fut

    def raise_failed(self) -> None:
        """Raise the first exception of a finished job (a full disk while writing sample lines);
        jobs whose failures are their results (a batch's inputs) return them instead of raising."""
        for fut in [f for f in self._jobs if f.done()]:
            self._jobs.remove(fut)
            if fut.exception() is not None:
                raise fut.exception()
