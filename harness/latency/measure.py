"""The one place latency is measured (design section 6).

GPU: CUDA events recorded around each region; nothing synchronises until :meth:`Timer.read`.
CPU: ``time.perf_counter_ns``. A :class:`Timer` collects named regions (``vision``, ``projector``,
``lm_prefill``, ``prefill``, ``decode_step``) for one generate call and turns them into a
:class:`harness.types.StepTimings`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from harness.types import StepTimings


def _is_cuda(device) -> bool:
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


class _Mark:
    """A point in time: a recorded CUDA event or a perf_counter_ns reading."""

    __slots__ = ("event", "ns")

    def __init__(self, cuda: bool):
        if cuda:
            self.event = torch.cuda.Event(enable_timing=True)
            self.event.record()
            self.ns = None
        else:
            self.event = None
            self.ns = time.perf_counter_ns()

    def ms_until(self, other: "_Mark") -> float:
        if self.event is not None:
            return float(self.event.elapsed_time(other.event))
        return (other.ns - self.ns) / 1e6


@dataclass
class Timer:
    device: str = "cpu"
    enabled: bool = True
    regions: dict[str, list[tuple[_Mark, _Mark]]] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return _is_cuda(self.device)

    @property
    def clock(self) -> str:
        return "cuda_events" if self.cuda else "perf_counter_ns"

    def mark(self) -> _Mark:
        return _Mark(self.cuda)

    @contextmanager
    def region(self, name: str):
        if not self.enabled:
            yield
            return
        start = self.mark()
        try:
            yield
        finally:
            self.regions.setdefault(name, []).append((start, self.mark()))

    def add(self, name: str, start: _Mark, end: _Mark) -> None:
        if not self.enabled:
            return
        self.regions.setdefault(name, []).append((start, end))

    def read(self) -> dict[str, list[float]]:
        """Milliseconds per region occurrence (synchronises once on GPU)."""
        if self.cuda:
            torch.cuda.synchronize()
        return {name: [a.ms_until(b) for a, b in pairs] for name, pairs in self.regions.items()}

    def step_timings(self, batch_size: int) -> StepTimings:
        ms = self.read()
        one = lambda k: (sum(ms[k]) if k in ms else None)  # noqa: E731
        steps = ms.get("decode_step", [])
        return StepTimings(
            prefill_ms=one("prefill") or 0.0,
            decode_ms=float(sum(steps)),
            decode_step_ms=[float(x) for x in steps],
            vision_ms=one("vision"),
            projector_ms=one("projector"),
            lm_prefill_ms=one("lm_prefill"),
            batch_size=batch_size,
            clock=self.clock,
        )


def synchronize(device) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize()
