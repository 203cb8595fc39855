"""Latency profiling: sweep knobs x tiers x prompt lengths x output lengths on the loaded model,
fit the built-in estimator on part of the configurations and report its error on the rest.

Every measurement is one batch-1 generate call through the backend (so the same decode loop and
clock as ``harness run``); warm-up calls per configuration are excluded; the order of the timed
calls is shuffled with the seed so slow drift does not line up with one knob.
"""

from __future__ import annotations

import inspect
import platform
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.knobs import TIER_INDEX, Knobs
from harness.latency.estimator import (DEFAULT_N_EXPERTS, FittedEstimator, Measurement, device_slug,
                                       drop_interference, evaluate, evaluate_medians, fit_measurements,
                                       measurement_noise)

_WORDS = ("the", "a", "picture", "shows", "what", "color", "is", "many", "how", "object", "left", "right",
          "question", "answer", "image", "small", "large", "red", "blue", "green", "table", "person", "sky",
          "dog", "cat", "car", "tree", "number", "which", "of", "these", "best", "describes", "scene")


@dataclass
class Grid:
    blocks: list[int]
    top_k: list[int]
    tiers: list[str]
    prompt: list[int]  # target text tokens
    output: list[int]  # max new tokens

    def configs(self) -> list[tuple[int, int, str, int]]:
        return [(b, k, t, p) for b in self.blocks for k in self.top_k for t in self.tiers for p in self.prompt]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def default_grid(info, quick: bool = False) -> Grid:
    n = int(info.n_blocks)
    lo = int(getattr(info, "min_blocks", None) or max(1, n - 4))
    kmax = int(info.max_top_k)
    tiers = list(getattr(info, "tiers", None) or ["low", "medium", "high"])
    if quick:
        return Grid(sorted({lo, n}), sorted({1, kmax}), tiers, [16, 96], [6])
    blocks = sorted({lo, (lo + n) // 2, n} | ({lo + 1, n - 1} if n - lo >= 4 else set()))
    ks = sorted({1, 2, max(1, kmax // 2), max(1, 3 * kmax // 4), kmax})
    return Grid(blocks, ks, tiers, [16, 64, 160], [8, 24])


def parse_grid(text: str | None, info) -> Grid:
    """``blocks=12,14,16;top_k=1,4,8;tier=low,high;prompt=16,64;output=8,24`` (any subset)."""
    grid = default_grid(info)
    if not text:
        return grid
    names = {"blocks": "blocks", "num_blocks": "blocks", "top_k": "top_k", "k": "top_k", "tier": "tiers",
             "tiers": "tiers", "prompt": "prompt", "prompt_tokens": "prompt", "output": "output",
             "output_tokens": "output"}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, eq, vals = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in names:
            raise HarnessError(f"--grid part '{part}' is not KEY=V1,V2 with KEY one of blocks, top_k, tier, prompt, output")
        items = [v.strip() for v in vals.split(",") if v.strip()]
        if not items:
            raise HarnessError(f"--grid '{key}' has no values")
        attr = names[key]
        if attr == "tiers":
            from harness.knobs import parse_tier

            setattr(grid, attr, [parse_tier(v) for v in items])
        else:
            try:
                setattr(grid, attr, sorted({int(v) for v in items}))
            except ValueError:
                raise HarnessError(f"--grid '{key}' values must be integers, got '{vals}'")
    for b in grid.blocks:
        for k in grid.top_k:
            Knobs(b, k).validate(info.n_blocks, info.max_top_k, getattr(info, "min_blocks", None),
                                 getattr(info, "tiers", None), model=getattr(info, "name", "the model"))
    for t in grid.tiers:
        Knobs(info.n_blocks, 1, t).validate(info.n_blocks, info.max_top_k, getattr(info, "min_blocks", None),
                                            getattr(info, "tiers", None), model=getattr(info, "name", "the model"))
    if any(p < 1 for p in grid.prompt) or any(o < 1 for o in grid.output):
        raise HarnessError("--grid prompt and output lengths must be >= 1")
    return grid


def make_image(seed: int, size=(640, 480)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def make_prompt(backend, target_tokens: int, tier: str, image, seed: int) -> str:
    """A seeded prompt whose text part has about ``target_tokens`` tokens for this backend."""
    from harness.types import GenRequest

    rng = random.Random(seed)
    words = [rng.choice(_WORDS) for _ in range(max(4, target_tokens * 2))]

    def count(n_words: int) -> int:
        return int(backend.count_tokens(GenRequest(" ".join(words[:n_words]), image), tier)[0])

    lo, hi = 1, len(words)
    while count(hi) < target_tokens:  # extend until long enough
        words.extend(rng.choice(_WORDS) for _ in range(len(words)))
        hi = len(words)
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) >= target_tokens:
            hi = mid
        else:
            lo = mid + 1
    return " ".join(words[:lo])


def _gen_kwargs(backend) -> dict:
    """Ask the backend not to stop at EOS while profiling, if it supports that."""
    try:
        params = inspect.signature(backend.generate).parameters
    except (TypeError, ValueError):
        return {}
    if "ignore_eos" in params:
        return {"ignore_eos": True}
    if "min_new_tokens" in params:
        return {"min_new_tokens": None}  # filled per call
    return {}


class _NoEos:
    """Generate to the full output length while profiling: a backend without an ``ignore_eos``
    option gets its ``eos_token_ids`` emptied for the sweep and restored afterwards."""

    def __init__(self, backend, active: bool):
        self.backend = backend
        self.active = active and hasattr(backend, "eos_token_ids")

    def __enter__(self):
        if self.active:
            self.saved = self.backend.eos_token_ids
            self.backend.eos_token_ids = []
        return self

    def __exit__(self, *exc):
        if self.active:
            self.backend.eos_token_ids = self.saved


def measure_grid(backend, grid: Grid, repeats: int = 3, seed: int = 0, warmup: int = 1,
                 progress: Callable[[int, int, str], None] | None = None) -> list[Measurement]:
    """Run the sweep; returns one :class:`Measurement` per timed call."""
    image = make_image(seed)
    kw = _gen_kwargs(backend)
    prompts: dict[tuple[str, int], tuple[str, int]] = {}
    for tier in grid.tiers:
        for p in grid.prompt:
            text = make_prompt(backend, p, tier, image, seed + p)
            prompts[(tier, p)] = (text, 0)
    jobs = []
    for (b, k, tier, p) in grid.configs():
        for out_len in grid.output:
            for r in range(repeats):
                jobs.append((b, k, tier, p, out_len, r))
    random.Random(seed).shuffle(jobs)
    # warm-up calls once per (knobs, tier), excluded from the results
    warmed: set = set()
    results: list[Measurement] = []
    total = len(jobs)

    def gen(req, n, tier):
        extra = dict(kw)
        if "min_new_tokens" in extra:
            extra["min_new_tokens"] = n
        return backend.generate([req], n, tier=tier, **extra)[0]

    with _NoEos(backend, not kw):
        for i, job in enumerate(jobs):
            results.append(_measure_one(backend, gen, prompts, image, warmed, warmup, grid, i, job))
            if progress:
                b, k, tier, p, out_len, _ = job
                progress(i + 1, total, f"{Knobs(b, k, tier)} prompt={p} out={out_len}")
    return results


def _measure_one(backend, gen, prompts, image, warmed, warmup, grid, i, job) -> Measurement:
    from harness.types import GenRequest

    b, k, tier, p, out_len, r = job
    backend.apply_knobs(Knobs(b, k, tier))
    text, _ = prompts[(tier, p)]
    req = GenRequest(text, image, f"profile-{i}")
    if (b, k, tier) not in warmed:
        for _ in range(max(warmup, 0)):
            gen(req, min(4, max(grid.output)), tier)
        warmed.add((b, k, tier))
    out = gen(req, out_len, tier)
    t = out.timings
    if t is None:
        raise HarnessError("the backend returned no timings; profiling needs StepTimings from generate")
    return Measurement(b, k, TIER_INDEX.get(tier, 0), int(out.vision_tokens), int(out.text_tokens),
                       float(t.prefill_ms), [float(x) for x in t.decode_step_ms], r)


def split_heldout(measurements: Sequence[Measurement], frac: float = 0.25, seed: int = 0):
    """Hold out whole configurations (blocks, top_k, tier, prompt length): the fit never sees them."""
    keys = sorted({m.config_key for m in measurements})
    rng = random.Random(seed)
    n_hold = max(1, int(round(len(keys) * frac))) if len(keys) >= 4 else 0
    held = set(rng.sample(keys, n_hold)) if n_hold else set()
    train = [m for m in measurements if m.config_key not in held]
    test = [m for m in measurements if m.config_key in held]
    return train, test


def choose_constraint(measurements: Sequence[Measurement], n_experts: int, seed: int) -> bool:
    """Unconstrained or non-negative coefficients, whichever predicts configurations held out of
    ``measurements`` (an inner split, never the reported held-out set) better; non-negative when
    there are too few configurations to tell."""
    from harness.latency.estimator import evaluate_medians

    inner_train, inner_test = split_heldout(measurements, 0.3, seed + 1)
    if not inner_test or len({m.config_key for m in inner_train}) < 8:
        return True
    err = {}
    for nonneg in (False, True):
        r = evaluate_medians(fit_measurements(inner_train, n_experts=n_experts, nonneg=nonneg), inner_test)
        err[nonneg] = r["total"]["mape"] if r.get("total") and r["total"]["mape"] is not None else float("inf")
    return err[True] <= err[False]


@dataclass
class ProfileResult:
    estimator: FittedEstimator
    measurements: list[Measurement]
    heldout: dict
    train_error: dict
    grid: Grid
    seconds: float
    extra: dict = field(default_factory=dict)


def profile_backend(backend, info, device: str, grid: Grid, repeats: int = 3, seed: int = 0, warmup: int = 1,
                    holdout: float = 0.25, quick: bool = False,
                    progress: Callable[[int, int, str], None] | None = None) -> ProfileResult:
    """Sweep, fit on the configurations not held out, evaluate on the held-out ones, then refit on
    everything for the saved estimator (its reported error stays the held-out one)."""
    t0 = time.perf_counter()
    ms = measure_grid(backend, grid, repeats=repeats, seed=seed, warmup=warmup, progress=progress)
    return fit_and_report(ms, info, device, grid, repeats=repeats, seed=seed, holdout=holdout, quick=quick,
                          dtype=str(getattr(backend, "dtype", "")), t0=t0)


def fit_and_report(ms: list[Measurement], info, device: str, grid: Grid, *, repeats: int, seed: int = 0,
                   holdout: float = 0.25, quick: bool = False, dtype: str = "", t0: float | None = None) -> ProfileResult:
    """Fit and evaluate measurements (fresh, or saved raw measurements re-fitted)."""
    t0 = time.perf_counter() if t0 is None else t0
    n_experts = int(getattr(info, "n_experts", None) or DEFAULT_N_EXPERTS)
    train, test = split_heldout(ms, holdout, seed)
    nonneg = choose_constraint(train or ms, n_experts, seed)
    fit_train = fit_measurements(train or ms, n_experts=n_experts, nonneg=nonneg)
    # the headline: held-out configurations, each judged against the median of its repeats;
    # single-measurement errors and the repeat-to-repeat noise are reported beside it
    heldout = evaluate_medians(fit_train, test) if test else {}
    heldout["n_configs"] = len({m.config_key for m in test})
    heldout["ground_truth"] = "median of the repeats of each held-out (configuration, output length)"
    heldout_single = evaluate(fit_train, test) if test else {}
    noise = measurement_noise(ms)
    full = fit_measurements(ms, n_experts=n_experts, nonneg=nonneg)
    train_err = evaluate(full, ms)
    seconds = time.perf_counter() - t0
    model = getattr(info, "name", "model")
    slug = device_slug(device)
    meta = {
        "model": model,
        "device": slug,
        "device_name": device_name(device),
        "dtype": dtype,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "grid": grid.to_dict(),
        "repeats": repeats,
        "seed": seed,
        "n_measurements": len(ms),
        "n_interference_excluded": len(ms) - len(drop_interference(ms)),
        "heldout": heldout,
        "heldout_single_measurements": heldout_single,
        "measurement_noise": noise,
        "fit_error_all": train_err,
        "quick": quick,
        "nonneg": nonneg,
        "profile_seconds": round(seconds, 2),
    }
    full.meta = meta
    full.name = f"builtin:{_slug(model)}__{slug}" + (" (quick fit)" if quick else "")
    return ProfileResult(full, ms, heldout, train_err, grid, seconds,
                         extra={"heldout_single_measurements": heldout_single, "measurement_noise": noise})


def _slug(name: str) -> str:
    from harness.latency.estimator import model_slug

    return model_slug(type("I", (), {"name": name})())


def device_name(device: str) -> str:
    dev = str(device or "cpu")
    if dev.startswith("cuda"):
        try:
            import torch

            return torch.cuda.get_device_name(int(dev.split(":")[1]) if ":" in dev else 0)
        except Exception:
            return dev
    return platform.processor() or platform.machine() or "cpu"


def quick_fit(backend, info, device: str, seed: int = 0) -> FittedEstimator:
    """The small fit a run makes for a (model, device) pair with no saved fit."""
    res = profile_backend(backend, info, device, default_grid(info, quick=True), repeats=1, seed=seed,
                          warmup=1, holdout=0.0, quick=True)
    return res.estimator


def save_profile(result: ProfileResult, path) -> tuple:
    """Save the fit to ``path`` and the raw measurements beside it (``*.measurements.json``)."""
    from pathlib import Path

    from harness.jsonio import atomic_write_json

    path = Path(path)
    raw = path.with_name(path.stem + ".measurements.json")
    result.estimator.meta["measurements_file"] = raw.name
    result.estimator.save(path)
    atomic_write_json(raw, {"model": result.estimator.meta.get("model"), "device": result.estimator.meta.get("device"),
                            "grid": result.grid.to_dict(), "measurements": [m.to_dict() for m in result.measurements]})
    return path, raw


def load_measurements(path) -> tuple[list[Measurement], dict]:
    """Raw measurements saved by :func:`save_profile` -> (measurements, file header)."""
    from harness.jsonio import read_json

    d = read_json(path, "measurements file")
    try:
        ms = [Measurement(**m) for m in d["measurements"]]
    except (KeyError, TypeError) as exc:
        raise HarnessError(f"'{path}' is not a harness measurements file ({exc}); pass a *.measurements.json from `harness profile`")
    return ms, d
