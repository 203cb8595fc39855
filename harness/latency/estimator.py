"""Latency estimators: the built-in fit, the analytic roofline, user plugins.

An estimator maps a sample's (or a batch's) configuration and token counts to milliseconds:

- ``prefill_ms``: vision encoder + projector + language-model prefill;
- ``decode_ms``: the sum of per-step decode times over output positions ``1..output_tokens``
  (a step at position ``p`` reads a KV cache of ``prompt + p`` tokens, so steps slow down);
- ``total_ms`` = prefill + decode.

With ``batch_size > 1`` an input row describes a whole left-padded batch (its longest prompt, its
decode steps) and the estimate is the batch's latency, as the measurement is; :class:`Estimate`
says which (``per``). The built-in estimator (:class:`FittedEstimator`) is linear in the features
of :mod:`harness.latency.linear_model`, fitted by ``harness profile`` for one execution mode
(:mod:`harness.latency.fit_files`). Plugins: :mod:`harness.latency.plugin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.errors import HarnessError
from harness.latency.linear_model import (DECODE_FEATURES, DEFAULT_N_EXPERTS, PREFILL_FEATURES, decode_features,
                                      prefill_features)

FORMAT = "harness-estimator/2"


@dataclass
class EstimatorInput:
    top_k: int
    num_active_blocks: int
    tier_idx: int
    vision_tokens: int
    text_tokens: int
    output_tokens: int  # decode steps timed (positions 1..output_tokens)
    batch_size: int = 1


@dataclass
class Estimate:
    prefill_ms: float
    decode_ms: float
    total_ms: float
    per: str = "sample"  # "sample" or "batch": what the figures are the latency of

    def to_dict(self) -> dict:
        return {"prefill_ms": self.prefill_ms, "decode_ms": self.decode_ms, "total_ms": self.total_ms, "per": self.per}


class LatencyEstimator:
    """Base class: ``name`` is recorded in every run; ``predict`` maps rows to estimates.
    ``batch_aware``: rows with ``batch_size > 1`` are estimated as whole batches."""

    name: str = "estimator"
    batch_aware: bool = False

    def predict(self, rows: list[EstimatorInput]) -> list[Estimate]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}


class LinearEstimator(LatencyEstimator):
    """Linear in :func:`prefill_features` / :func:`decode_features` (fits and the roofline)."""

    MIN_MS = 1e-3
    batch_aware = True

    def __init__(self, prefill_coef: Sequence[float], decode_coef: Sequence[float], *, name: str = "builtin",
                 n_experts: int = DEFAULT_N_EXPERTS, meta: dict | None = None, path: str | None = None,
                 prompt_bucket: int = 0):
        self.prefill_coef = np.asarray(prefill_coef, dtype=float)
        self.decode_coef = np.asarray(decode_coef, dtype=float)
        if self.prefill_coef.shape != (len(PREFILL_FEATURES),) or self.decode_coef.shape != (len(DECODE_FEATURES),):
            raise HarnessError(f"estimator fit '{path or name}' has the wrong number of coefficients; re-run `harness profile`")
        self.name = name
        self.n_experts = int(n_experts)
        self.prompt_bucket = int(prompt_bucket or 0)  # the measured engine pads prompt passes to this (features.padded)
        self.meta = dict(meta or {})
        self.path = path

    def prefill_ms(self, vision, text, blocks, top_k, batch=1) -> np.ndarray:
        X = prefill_features(vision, text, blocks, top_k, self.n_experts, batch, self.prompt_bucket)
        return np.maximum(X @ self.prefill_coef, self.MIN_MS)

    def decode_step_ms(self, vision, text, blocks, top_k, position, batch=1) -> np.ndarray:
        X = decode_features(vision, text, blocks, top_k, position, self.n_experts, batch)
        return np.maximum(X @ self.decode_coef, self.MIN_MS)

    def predict(self, rows: list[EstimatorInput]) -> list[Estimate]:
        if not rows:
            return []
        col = lambda a: np.asarray([getattr(r, a) for r in rows], dtype=float)  # noqa: E731
        v, t, a, k, n, b = (col(x) for x in ("vision_tokens", "text_tokens", "num_active_blocks", "top_k",
                                             "output_tokens", "batch_size"))
        pre = self.prefill_ms(v, t, a, k, b)
        owner = np.repeat(np.arange(len(rows)), np.maximum(n, 0).astype(int))
        pos = np.concatenate([np.arange(1, int(m) + 1) for m in n]) if owner.size else np.zeros(0)
        steps = self.decode_step_ms(v[owner], t[owner], a[owner], k[owner], pos, b[owner]) if owner.size else np.zeros(0)
        dec = np.bincount(owner, weights=steps, minlength=len(rows))
        return [Estimate(float(p), float(d), float(p + d), "batch" if r.batch_size > 1 else "sample")
                for p, d, r in zip(pre, dec, rows)]


class FittedEstimator(LinearEstimator):
    """The built-in estimator: a fit for one :class:`harness.latency.fit_files.FitKey` and the batch
    buckets it was profiled at, saved as JSON."""

    @property
    def key(self):
        from harness.latency.fit_files import FitKey

        return FitKey.from_dict(self.meta.get("key"))

    @property
    def batch_buckets(self) -> list[int]:
        return [int(b) for b in self.meta.get("batch_buckets") or [1]]

    def to_dict(self) -> dict:
        skip = ("format", "name", "n_experts", "prompt_bucket", "prefill", "decode_per_token")
        return {"format": FORMAT, "name": self.name, "n_experts": self.n_experts, "prompt_bucket": self.prompt_bucket,
                "prefill": {"features": list(PREFILL_FEATURES), "coef": self.prefill_coef.tolist()},
                "decode_per_token": {"features": list(DECODE_FEATURES), "coef": self.decode_coef.tolist()},
                **{k: v for k, v in self.meta.items() if k not in skip}}

    def save(self, path: str | Path) -> Path:
        from harness.jsonio import atomic_write_json

        atomic_write_json(path, self.to_dict())
        self.path = str(path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "FittedEstimator":
        from harness.jsonio import read_json

        d = read_json(path, "estimator fit")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise HarnessError(f"'{path}' is not a harness estimator fit of this version (format {FORMAT}); "
                               "re-run `harness profile` (or re-fit its raw measurements with --from-measurements)")
        try:
            if list(d["prefill"]["features"]) != list(PREFILL_FEATURES) or list(d["decode_per_token"]["features"]) != list(DECODE_FEATURES):
                raise HarnessError(f"estimator fit '{path}' uses other features than this harness version; re-run `harness profile`")
            meta = {k: v for k, v in d.items() if k not in ("prefill", "decode_per_token")}
            return cls(d["prefill"]["coef"], d["decode_per_token"]["coef"], name=d.get("name", Path(path).stem),
                       n_experts=d.get("n_experts", DEFAULT_N_EXPERTS), meta=meta, path=str(path),
                       prompt_bucket=int(d.get("prompt_bucket") or 0))
        except (KeyError, TypeError) as exc:
            raise HarnessError(f"estimator fit '{path}' is incomplete (missing {exc}); re-run `harness profile`")

    def describe(self) -> dict:
        d = {"name": self.name, "kind": "quick fit" if self.meta.get("quick") else "fit", "path": self.path,
             "key": self.meta.get("key"), "batch_buckets": self.batch_buckets}
        for key in ("device_name", "created", "headline", "heldout", "quick", "shipped"):
            if key in self.meta:
                d[key] = self.meta[key]
        return d


class PendingFit(LatencyEstimator):
    """Stands in for the built-in estimator until the model is loaded; then
    :func:`harness.latency.firstuse.resolve` finds the fit for the run's execution mode, makes a
    bounded quick one, or falls back to the roofline, and sets :attr:`fitted`."""

    batch_aware = True

    def __init__(self, model_info, device: str):
        self.model_info = model_info
        self.device = device
        self.fitted: LatencyEstimator | None = None
        self.name = f"builtin:{getattr(model_info, 'name', model_info)} (fit pending)"

    def predict(self, rows):
        if self.fitted is None:
            from harness.latency.plugin import PluginError

            raise PluginError("the built-in estimator has not been resolved yet (no model loaded)")
        return self.fitted.predict(rows)

    def describe(self) -> dict:
        return self.fitted.describe() if self.fitted else {"name": self.name, "kind": "pending"}


def load_estimator(spec: str | None, model_info, device: str) -> LatencyEstimator:
    """``None``/``builtin`` -> a :class:`PendingFit` (resolved once the model is loaded); a path to
    a fit ``.json`` -> that fit; ``module:attr[@checkpoint]`` -> a plugin. (``--estimator none`` is
    handled by the caller.) Bad specs raise HarnessError."""
    if spec is None or spec.strip().lower() in ("", "builtin", "auto"):
        return PendingFit(model_info, device)
    spec = spec.strip()
    if spec.endswith(".json") and ":" not in spec.split("@")[0].replace("\\", "/").split("/")[-1]:
        if not Path(spec).is_file():
            raise HarnessError(f"--estimator fit file '{spec}' does not exist; run `harness profile` or pass module:attr")
        return FittedEstimator.load(spec)
    from harness.latency.plugin import resolve_plugin

    return resolve_plugin(spec)


def batch_tokens(outs) -> tuple[int, int]:
    """(vision, text) tokens of the row that describes a left-padded batch: its prompt length
    ``vision + text`` is the longest prompt's, ``max(vision + text)`` (never ``max(vision) +
    max(text)``, which may belong to two different samples and overstates the padded length), and
    ``vision`` the most vision tokens of any sample (the vision encoder's work), ``text`` the rest."""
    vision = max(int(o.vision_tokens) for o in outs)
    longest = max(int(o.vision_tokens) + int(o.text_tokens) for o in outs)
    return vision, longest - vision


def rows_for_batch(knobs, outs, tier_idx: int, batch_aware: bool) -> list[EstimatorInput]:
    """Estimator rows for one generate call's outputs: one row for the whole batch (its longest
    prompt, :func:`batch_tokens`, and its decode steps) when the estimator models batches, so the
    estimate is the batch's as the measurement is; else one row per sample (a per-sample estimate,
    labelled so; each sample's latency alone is :func:`batch1_rows`'). Decode steps are the timed
    ones (the first token comes from the prefill)."""
    def steps(out) -> int:
        t = getattr(out, "timings", None)
        return len(t.decode_step_ms) if t is not None else max(int(out.output_tokens) - 1, 0)

    if len(outs) > 1 and batch_aware:
        vision, text = batch_tokens(outs)
        return [EstimatorInput(knobs.top_k, knobs.num_blocks, tier_idx, vision, text, max(steps(o) for o in outs), len(outs))]
    return [EstimatorInput(knobs.top_k, knobs.num_blocks, tier_idx, int(o.vision_tokens), int(o.text_tokens), steps(o))
            for o in outs]


def probe(estimator: LatencyEstimator) -> str | None:
    """Call an estimator on one typical row; return why it is unusable, or None."""
    from harness.latency.plugin import PluginError

    try:
        out = estimator.predict([EstimatorInput(4, 12, 1, 64, 32, 3)])
        if len(out) != 1:
            return f"estimator '{estimator.name}' returned {len(out)} estimates for 1 input"
        return None
    except PluginError as exc:
        return str(exc)
    except Exception as exc:
        return f"estimator '{estimator.name}' raised {type(exc).__name__}: {exc}"


def own_decode_steps(out) -> int:
    """The decode steps a sample would take alone: the timed steps stop at the step that emits EOS
    (its output tokens, EOS excluded) or after ``max_new_tokens`` (one fewer: the first token comes
    from the prefill). In a batch the measured steps are the longest sample's, not this one's."""
    n = int(out.output_tokens)
    return n if getattr(out, "finish_reason", "length") == "eos" else max(n - 1, 0)


def batch1_rows(knobs, outs, tier_idx: int) -> list[EstimatorInput]:
    """Batch-1 estimator rows of a batch's samples: each sample's own prompt (its vision and text
    tokens, no padding) and its own decode steps (:func:`own_decode_steps`)."""
    return [EstimatorInput(knobs.top_k, knobs.num_blocks, tier_idx, int(o.vision_tokens), int(o.text_tokens),
                           own_decode_steps(o)) for o in outs]
