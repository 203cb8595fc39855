"""Latency profiling: run the grid on the loaded model and keep every call's timings.

Every measurement is one generate call through the backend (the decode loop, clock and warm-up a
run uses: each (configuration, tier, batch bucket) is warmed until two calls agree within 5%
before its first timed call). Timed calls run in an order shuffled with the seed, so slow drift
does not line up with one knob. Measurements are appended to a log as they come
(:class:`MeasurementLog`): an interrupted profile resumes where it stopped.
"""

from __future__ import annotations

import inspect
import json
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from harness.errors import HarnessError
from harness.knobs import TIER_INDEX, Knobs
from harness.latency.measurement import Measurement
from harness.latency.grid import Grid
from harness.latency.measure import Warmup, batch_bucket

_WORDS = ("the", "a", "picture", "shows", "what", "color", "is", "many", "how", "object", "left", "right",
          "question", "answer", "image", "small", "large", "red", "blue", "green", "table", "person", "sky",
          "dog", "cat", "car", "tree", "number", "which", "of", "these", "best", "describes", "scene")


PROFILE_IMAGE = (1680, 1260)  # large enough that every tier reaches its most crops (5 x 3.75 crops of 336)


def make_image(seed: int, size=PROFILE_IMAGE):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")


def make_prompt(backend, target_tokens: int, tier: str, image, seed: int) -> str:
    """A seeded prompt whose text part has about ``target_tokens`` tokens for this backend."""
    from harness.types import GenRequest

    rng = random.Random(seed)
    words = [rng.choice(_WORDS) for _ in range(max(4, target_tokens * 2))]

    def count(n_words: int) -> int:
        return int(backend.count_tokens(GenRequest(" ".join(words[:n_words]), image), tier)[0])

    lo, hi = 1, len(words)
    while count(hi) < target_tokens:
        words.extend(rng.choice(_WORDS) for _ in range(len(words)))
        hi = len(words)
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) >= target_tokens:
            hi = mid
        else:
            lo = mid + 1
    return " ".join(words[:lo])


class _NoEos:
    """Generate to the full output length while profiling: the backend's ``eos_token_ids`` are
    emptied for the sweep and restored afterwards."""

    def __init__(self, backend):
        self.backend = backend
        self.active = hasattr(backend, "eos_token_ids") and "ignore_eos" not in _params(backend)

    def __enter__(self):
        if self.active:
            self.saved = self.backend.eos_token_ids
            self.backend.eos_token_ids = []
        return self

    def __exit__(self, *exc):
        if self.active:
            self.backend.eos_token_ids = self.saved


def _params(backend) -> set:
    try:
        return set(inspect.signature(backend.generate).parameters)
    except (TypeError, ValueError):
        return set()


def jobs_for(grid: Grid, repeats: int, seed: int) -> list[tuple]:
    """Every timed call ``(blocks, top_k, tier, prompt, batch, output, repeat)``, shuffled with the seed."""
    jobs = [(b, k, t, p, n, o, r) for (b, k, t, p, n) in grid.configs() for o in grid.output for r in range(repeats)]
    random.Random(seed).shuffle(jobs)
    return jobs


class MeasurementLog:
    """``*.measurements.partial.jsonl``: a header line (what is being measured), then one line per
    timed call (its job index and measurement). A log with another header is started afresh."""

    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        self.header = header
        self.done: dict[int, Measurement] = {}
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
            if not lines or json.loads(lines[0]) != self.header:
                return
            for line in lines[1:]:
                try:
                    d = json.loads(line)
                    self.done[int(d["job"])] = Measurement(**d["m"])
                except (ValueError, KeyError, TypeError):
                    break  # a line cut short by the interruption: measured again
        except (OSError, ValueError):
            self.done = {}

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.header) + "\n")
            for i, m in sorted(self.done.items()):
                fh.write(json.dumps({"job": i, "m": m.to_dict()}) + "\n")

    def add(self, i: int, m: Measurement) -> None:
        from harness.jsonio import LineAppender

        out = LineAppender(self.path)  # a failed write (disk full) leaves no half line
        try:
            out.write(json.dumps({"job": i, "m": m.to_dict()}) + "\n")
        finally:
            out.close(sync=False)
        self.done[i] = m

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Profiler:
    """Runs profile jobs on a backend with the run's warm-up protocol."""

    def __init__(self, backend, grid: Grid, seed: int = 0, warmup: Warmup | None = None):
        self.backend = backend
        self.grid = grid
        self.seed = seed
        self.warmup = warmup or Warmup()
        self.image = make_image(seed)
        self.prompts: dict[tuple[str, int], str] = {}
        self.ignore_eos = "ignore_eos" in _params(backend)

    def prompt(self, tier: str, p: int) -> str:
        if (tier, p) not in self.prompts:
            self.prompts[(tier, p)] = make_prompt(self.backend, p, tier, self.image, self.seed + p)
        return self.prompts[(tier, p)]

    def _gen(self, reqs, n: int, tier: str):
        extra = {"ignore_eos": True} if self.ignore_eos else {}
        return self.backend.generate(reqs, n, tier=tier, **extra)

    def measure(self, i: int, job: tuple) -> Measurement:
        from harness.types import GenRequest

        b, k, tier, p, n, out_len, r = job
        knobs = Knobs(b, k, tier)
        self.backend.apply_knobs(knobs)
        reqs = [GenRequest(self.prompt(tier, p), self.image, f"profile-{i}-{j}") for j in range(n)]

        def call() -> float:
            t = self._gen(reqs, out_len, tier)[0].timings
            return float(t.prefill_ms + t.decode_ms) if t is not None else 0.0

        self.warmup.ensure((str(knobs), batch_bucket(n)), call)
        out = self._gen(reqs, out_len, tier)[0]
        t = out.timings
        if t is None:
            raise HarnessError("the backend returned no timings; profiling needs StepTimings from generate")
        return Measurement(b, k, TIER_INDEX.get(tier, 0), int(out.vision_tokens), int(out.text_tokens),
                           float(t.prefill_ms), [float(x) for x in t.decode_step_ms], r, n)

    def run(self, jobs: list[tuple], log: MeasurementLog | None = None, deadline: float | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> list[Measurement]:
        """Measure every job not yet in ``log``; stop early (without error) past ``deadline``
        (a ``time.perf_counter()`` value): no job starts that the dearest job so far would carry past
        it. Returns all measurements, the log's included."""
        done = dict(log.done) if log else {}
        total = len(jobs)
        longest = 0.0  # the dearest job so far (warm-up included): the next may cost as much
        with _NoEos(self.backend):
            for i, job in enumerate(jobs):
                if i in done:
                    continue
                t0 = time.perf_counter()
                if deadline is not None and t0 + longest > deadline:
                    break
                m = self.measure(i, job)
                longest = max(longest, time.perf_counter() - t0)
                done[i] = m
                if log:
                    log.add(i, m)
                if progress:
                    b, k, tier, p, n, o, _ = job
                    progress(len(done), total, f"{Knobs(b, k, tier)} prompt={p} out={o} batch={n}")
        return [done[i] for i in sorted(done)]

    def calibrate(self, jobs: list[tuple]) -> float:
        """Expected seconds for ``jobs``: the cheapest and the dearest job are timed once each (after
        one untimed call), each job is costed between them by its token work, and every (configuration,
        tier, batch bucket) gets about three warm-up calls."""
        if not jobs:
            return 0.0
        work = lambda j: j[4] * (j[0] * (self.grid_vision(j[2]) + j[3]) + j[0] * j[5])  # noqa: E731
        lo, hi = min(jobs, key=work), max(jobs, key=work)
        main, self.warmup = self.warmup, Warmup(max_calls=1)
        try:
            with _NoEos(self.backend):
                self.measure(-1, lo)
                t0 = time.perf_counter()
                self.measure(-1, lo)
                t_lo = time.perf_counter() - t0
                self.measure(-2, hi)
                t0 = time.perf_counter()
                self.measure(-2, hi)
                t_hi = time.perf_counter() - t0
        finally:
            self.warmup = main
        span = max(work(hi) - work(lo), 1e-9)
        per_call = lambda j: t_lo + (t_hi - t_lo) * (work(j) - work(lo)) / span  # noqa: E731
        mean = sum(per_call(j) for j in jobs) / len(jobs)
        keys = {(j[0], j[1], j[2], batch_bucket(j[4])) for j in jobs}
        return float(mean * (len(jobs) + 3 * len(keys)))

    def grid_vision(self, tier: str) -> int:
        return int((getattr(self.backend.info, "vision_tokens", None) or {}).get(tier, 0))
