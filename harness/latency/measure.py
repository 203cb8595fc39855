"""The one place latency is measured.

GPU: CUDA events recorded on the model's own device (``cuda:1`` is timed on cuda:1's current
stream); nothing synchronises until :meth:`Timer.read`, which synchronises that device only.
CPU: ``time.perf_counter_ns``. A :class:`Timer` collects named regions (``vision``, ``projector``,
``lm_prefill``, ``prefill``, ``decode``, ``decode_step``) for one generate call and turns them into
a :class:`harness.types.StepTimings`.

Warm-up (:class:`Warmup`): before the first measured call of each (configuration, tier, batch
bucket) untimed calls run until two consecutive calls agree within 5% (at most ``max_calls``), so
compilation, capture, autotuning, allocator growth and clock ramp-up never land in a sample's
measured time, the first sample's included. Warm-up seconds are reported apart.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

from harness.types import StepTimings

WARMUP_TOLERANCE = 0.05  # two consecutive warm-up calls within 5% of each other = warm
WARMUP_MAX_CALLS = 5  # at most this many untimed calls per warm-up key


def _cuda_device(device) -> torch.device | None:
    """The CUDA device ``device`` names (index resolved), or None for a CPU / no CUDA."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)


def _is_cuda(device) -> bool:
    return _cuda_device(device) is not None


class _Mark:
    """A point in time: a CUDA event recorded on ``cuda``'s current stream, or a perf_counter_ns reading."""

    __slots__ = ("event", "ns")

    def __init__(self, cuda: torch.device | None):
        if cuda is not None:
            self.event = torch.cuda.Event(enable_timing=True)
            self.event.record(torch.cuda.current_stream(cuda))
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

    def __post_init__(self):
        self._cuda = _cuda_device(self.device)

    @property
    def cuda(self) -> bool:
        return self._cuda is not None

    @property
    def clock(self) -> str:
        return "cuda_events" if self.cuda else "perf_counter_ns"

    def mark(self) -> _Mark:
        return _Mark(self._cuda)

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
        """Milliseconds per region occurrence (synchronises the timed device once on GPU)."""
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
        return {name: [a.ms_until(b) for a, b in pairs] for name, pairs in self.regions.items()}

    def step_timings(self, batch_size: int) -> StepTimings:
        """``decode_ms`` is the ``decode`` region (first token to last, bookkeeping between steps
        included) when the decoder recorded one, else the sum of the steps."""
        ms = self.read()
        one = lambda k: (sum(ms[k]) if k in ms else None)  # noqa: E731
        steps = [float(x) for x in ms.get("decode_step", [])]
        decode = one("decode")
        return StepTimings(
            prefill_ms=one("prefill") or 0.0,
            decode_ms=float(decode if decode is not None else sum(steps)),
            decode_step_ms=steps,
            vision_ms=one("vision"),
            projector_ms=one("projector"),
            lm_prefill_ms=one("lm_prefill"),
            batch_size=batch_size,
            clock=self.clock,
        )


def synchronize(device) -> None:
    cuda = _cuda_device(device)
    if cuda is not None:
        torch.cuda.synchronize(cuda)


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class HostClock:
    """Wall-clock time of host-side work around the model (a policy's decision, input preparation),
    as ``with clock as c: ...; c.ms``. On CUDA the device is synchronised before and after, so GPU
    work the block queues is counted and no earlier work is. Kept apart from :class:`Timer`, which
    times the model alone. ``sync=False`` for host-only work on another thread
    (:mod:`harness.host_overlap`): no CUDA call, nothing waited for."""

    def __init__(self, device, sync: bool = True):
        self.cuda = bool(sync) and str(device).startswith("cuda")
        self.device = device
        self.ms = 0.0

    def __enter__(self):
        if self.cuda:
            synchronize(self.device)
        self._t0 = time.perf_counter_ns()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            synchronize(self.device)
        self.ms = (time.perf_counter_ns() - self._t0) / 1e6
        return False


def batch_bucket(batch_size: int) -> int:
    """The batch-size bucket a batch belongs to, the one rule for fits, warm-up and the fast engine's
    CUDA graphs: the next power of two up to 64, then the next multiple of 64."""
    b = max(1, int(batch_size))
    for bucket in BATCH_BUCKETS:
        if b <= bucket:
            return bucket
    return -(-b // 64) * 64


def agree(a: float, b: float, tolerance: float = WARMUP_TOLERANCE) -> bool:
    """Two timings agree when they differ by at most ``tolerance`` of the larger."""
    hi = max(abs(a), abs(b))
    return hi == 0 or abs(a - b) <= tolerance * hi


@dataclass
class WarmupResult:
    calls: int
    settled: bool
    seconds: float
    last_ms: list[float]


def warm_until_stable(call: Callable[[], float], tolerance: float = WARMUP_TOLERANCE,
                      max_calls: int = WARMUP_MAX_CALLS) -> WarmupResult:
    """Call ``call`` (an untimed-for-the-record generate returning its measured ms) until two
    consecutive calls agree within ``tolerance``, at most ``max_calls`` times (at least 2 when
    ``max_calls`` >= 2)."""
    t0 = time.perf_counter()
    seen: list[float] = []
    settled = False
    for _ in range(max(0, int(max_calls))):
        seen.append(float(call()))
        if len(seen) >= 2 and agree(seen[-1], seen[-2], tolerance):
            settled = True
            break
    return WarmupResult(len(seen), settled, time.perf_counter() - t0, seen[-3:])


@dataclass
class Warmup:
    """Warms each key once (see :func:`warm_until_stable`) and keeps the account for summary.json."""

    tolerance: float = WARMUP_TOLERANCE
    max_calls: int = WARMUP_MAX_CALLS
    done: set = field(default_factory=set)
    seconds: float = 0.0
    calls: int = 0
    unsettled: list = field(default_factory=list)
    failed: int = 0

    def ensure(self, key: Hashable, call: Callable[[], float]) -> WarmupResult | None:
        """Warm ``key`` unless it already is; a call that raises ends this key's warm-up (the timed
        call reports the failure)."""
        if key in self.done or self.max_calls <= 0:
            return None
        self.done.add(key)
        t0 = time.perf_counter()
        try:
            res = warm_until_stable(call, self.tolerance, self.max_calls)
        except Exception:
            self.failed += 1
            self.seconds += time.perf_counter() - t0
            return None
        self.seconds += res.seconds
        self.calls += res.calls
        if not res.settled:
            self.unsettled.append(str(key))
        return res

    def summary(self) -> dict:
        return {"seconds": round(self.seconds, 3), "keys": len(self.done), "calls": self.calls,
                "unsettled": len(self.unsettled), "failed": self.failed, "tolerance": self.tolerance,
                "max_calls": self.max_calls,
                "rule": "untimed calls per warm-up key (what the engine compiles or captures: active blocks, shapes; "
                        "top_k only where it has its own graphs) until two consecutive agree within "
                        f"{round(100 * self.tolerance)}% (at most {self.max_calls})"}
