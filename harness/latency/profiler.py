"""Latency profiling: run the grid on the loaded model and keep every call's timings.

Every measurement is one generate call through the backend (the decode loop, clock and warm-up a
run uses: each (configuration, tier, batch bucket) is warmed until two calls agree within 5%
before its first timed call). Timed calls run in an order shuffled with the seed, so slow drift
does not line up with one knob. Measurements are appended to a log as they come
(:class:`MeasurementLog`): an interrupted profile resumes where it stopped.

The rows of a batch are distinct seeded prompts and images (:meth:`Profiler.requests`) of the same
text and vision token counts, as the samples of a real batch are: each row routes its tokens to its
own experts, so the distinct experts a batch loads grow with the batch as the features assume
(:func:`harness.latency.linear_model.distinct_experts`), not as one repeated prompt would.
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


def make_prompt(backend, target_tokens: int, tier: str, image, seed) -> str:
    """A seeded prompt (``seed``: an int or a string) whose text part has about ``target_tokens``
    tokens for this backend (the fewest words that reach it)."""
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


ROW_PROMPT_TRIES = 8  # seeds tried for a row's prompt to reach the first row's text token count exactly


class Profiler:
    """Runs profile jobs on a backend with the run's warm-up protocol."""

    def __init__(self, backend, grid: Grid, seed: int = 0, warmup: Warmup | None = None):
        self.backend = backend
        self.grid = grid
        self.seed = seed
        self.warmup = warmup or Warmup()
        self.images: dict[int, object] = {0: make_image(seed)}
        self.prompts: dict[tuple[str, int, int], str] = {}
        self.ignore_eos = "ignore_eos" in _params(backend)
        self.slowest = 0.0  # seconds of the dearest job :meth:`run` timed (its warm-up included, if any)

    @property
    def image(self):
        """The image of a batch's first row (and of every batch-1 call)."""
        return self.images[0]

    def row_image(self, j: int):
        """Row ``j``'s image: seeded noise of the same size as every row's (same vision tokens), its own content."""
        if j not in self.images:
            self.images[j] = make_image(self.seed + 7919 * j)
        return self.images[j]

    def _text_tokens(self, prompt: str, tier: str) -> int:
        """Text tokens of a prompt counted without its image: what an image adds is the same for
        every row (same size, same tier), and the processor's image work is kept out of the search."""
        from harness.types import GenRequest

        return int(self.backend.count_tokens(GenRequest(prompt, None), tier)[0])

    def prompt(self, tier: str, p: int, j: int = 0) -> str:
        """Row ``j``'s prompt of about ``p`` text tokens. Row 0's is the seeded prompt of a batch-1
        call; every other row has its own seeded words with exactly row 0's text token count (a few
        seeds are tried; should none reach it, row 0's words are used in another order, then row 0's
        prompt itself), so a batch's rows differ in content, never in length."""
        if (tier, p, j) in self.prompts:
            return self.prompts[(tier, p, j)]
        first = self.prompts.get((tier, p, 0)) or make_prompt(self.backend, p, tier, self.image, self.seed + p)
        self.prompts[(tier, p, 0)] = first
        if j == 0:
            return first
        want = self._text_tokens(first, tier)
        choice = None
        for attempt in range(ROW_PROMPT_TRIES):
            cand = make_prompt(self.backend, want, tier, None, f"{self.seed}-{tier}-{p}-row{j}-{attempt}")
            if cand != first and self._text_tokens(cand, tier) == want:
                choice = cand
                break
        if choice is None:
            words = first.split()
            random.Random(f"{self.seed}-{p}-{j}").shuffle(words)
            cand = " ".join(words)
            choice = cand if self._text_tokens(cand, tier) == want else first
        self.prompts[(tier, p, j)] = choice
        return choice

    def requests(self, i: int, tier: str, p: int, n: int) -> list:
        """The ``n`` rows of job ``i``: distinct seeded prompts and images, the same token counts."""
        from harness.types import GenRequest

        return [GenRequest(self.prompt(tier, p, j), self.row_image(j), f"profile-{i}-{j}") for j in range(n)]

    def _gen(self, reqs, n: int, tier: str):
        extra = {"ignore_eos": True} if self.ignore_eos else {}
        return self.backend.generate(reqs, n, tier=tier, **extra)

    def warm_key(self, job: tuple, reqs=None) -> tuple:
        """The warm-up key of a job, the run's rule: what the engine compiles or captures for it (the
        backend's ``warmup_key``, with the job's knobs applied and its requests), else
        (configuration and tier, batch bucket)."""
        b, k, tier, _, n, out_len, _ = job
        key_of = getattr(self.backend, "warmup_key", None)
        if callable(key_of) and reqs is not None:
            return key_of(reqs, out_len, tier)
        return (str(Knobs(b, k, tier)), batch_bucket(n))

    def warm(self, i: int, job: tuple) -> bool:
        """Warm ``job``'s key (compile, capture, clock ramp-up) unless it already is, without timing
        the job; True when it warmed."""
        b, k, tier, p, n, out_len, _ = job
        self.backend.apply_knobs(Knobs(b, k, tier))
        reqs = self.requests(i, tier, p, n)
        key = self.warm_key(job, reqs)
        if key in self.warmup.done:
            return False
        with _NoEos(self.backend):
            self.warmup.ensure(key, lambda: self._call_ms(reqs, out_len, tier))
        return True

    def _call_ms(self, reqs, out_len: int, tier: str) -> float:
        t = self._gen(reqs, out_len, tier)[0].timings
        return float(t.prefill_ms + t.decode_ms) if t is not None else 0.0

    def measure(self, i: int, job: tuple) -> Measurement:
        from harness.latency.estimator import batch_tokens

        b, k, tier, p, n, out_len, r = job
        knobs = Knobs(b, k, tier)
        self.backend.apply_knobs(knobs)
        reqs = self.requests(i, tier, p, n)
        self.warmup.ensure(self.warm_key(job, reqs), lambda: self._call_ms(reqs, out_len, tier))
        outs = self._gen(reqs, out_len, tier)
        t = outs[0].timings
        if t is None:
            raise HarnessError("the backend returned no timings; profiling needs StepTimings from generate")
        vision, text = batch_tokens(outs)
        return Measurement(b, k, TIER_INDEX.get(tier, 0), vision, text,
                           float(t.prefill_ms), [float(x) for x in t.decode_step_ms], r, n)

    def reserve(self, jobs: list[tuple]) -> None:
        """Let the backend take the memory of the largest of ``jobs`` before the first call
        (:meth:`harness.backends.base.Backend.reserve`: one cache storage for every shape to come)."""
        fn = getattr(self.backend, "reserve", None)
        if not callable(fn) or not jobs:
            return
        tokens = {}
        for (_, _, tier, p, _, _, _) in jobs:
            if (tier, p) not in tokens:
                tokens[(tier, p)] = sum(self.backend.count_tokens(self.requests(-1, tier, p, 1)[0], tier))
        _, _, tier, p, n, o, _ = max(jobs, key=lambda j: j[4] * (tokens[(j[2], j[3])] + j[5]))  # the largest cache
        fn(n, tokens[(tier, p)], o)

    def warm_all(self, jobs: list[tuple], skip=(), deadline: float | None = None) -> int:
        """Warm the keys of ``jobs`` (those whose index is not in ``skip``) in job order before any
        job is timed, so compilation and graph capture stay off a clock that bounds the timed calls;
        past ``deadline`` (a ``time.perf_counter()`` value) no further key starts, except the first:
        the one-time compile is paid whatever happens. Returns the keys warmed."""
        warmed = 0
        self.reserve([job for i, job in enumerate(jobs) if i not in skip])
        with _NoEos(self.backend):
            for i, job in enumerate(jobs):
                if i in skip:
                    continue
                if warmed and deadline is not None and time.perf_counter() > deadline:
                    break
                warmed += int(self.warm(i, job))
        return warmed

    def run(self, jobs: list[tuple], log: MeasurementLog | None = None, deadline: float | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> list[Measurement]:
        """Measure every job not yet in ``log``; stop early (without error) past ``deadline``
        (a ``time.perf_counter()`` value): no job starts that the dearest job so far would carry past
        it. A job whose key was not warm yet (past :meth:`warm_all`'s deadline) is warmed first, and
        that warm-up (compile, capture) moves the deadline by its own length: the clock counts timed
        calls only (``warm_in_run``: the seconds so moved). Returns all measurements, the log's included."""
        done = dict(log.done) if log else {}
        total = len(jobs)
        self.reserve([job for i, job in enumerate(jobs) if i not in done])
        longest = 0.0  # the dearest job so far (its warm-up excluded): the next may cost as much
        self.warm_in_run = 0.0
        with _NoEos(self.backend):
            for i, job in enumerate(jobs):
                if i in done:
                    continue
                t0 = time.perf_counter()
                if deadline is not None and t0 + longest > deadline:
                    break
                w0 = self.warmup.seconds
                m = self.measure(i, job)
                warm = self.warmup.seconds - w0
                self.warm_in_run += warm
                if deadline is not None:
                    deadline += warm  # compile and capture stay off the clock
                longest = max(longest, time.perf_counter() - t0 - warm)
                self.slowest = longest
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
