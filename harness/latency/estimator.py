"""Latency estimators: the built-in least-squares fit and user plugins (docs/contracts.md, "Latency estimators").

An estimator maps one sample's configuration and token counts to milliseconds:

- ``prefill_ms``: vision encoder + projector + language-model prefill;
- ``decode_ms``: the sum of per-token decode times over output positions ``1..output_tokens``
  (a decode step at position ``p`` reads a KV cache of ``prompt + p`` tokens, so steps slow down);
- ``total_ms`` = prefill + decode.

The built-in estimator is a weighted least-squares fit (relative error is minimised, which is what
MAPE measures) over physically motivated features: vision tokens (encoder work), active blocks
(per-block launch overhead), prompt x active blocks (dense work), prompt x routed-expert work,
expected distinct experts hit per block (expert weights read), prompt^2 x blocks (attention), and
for decode the KV length x blocks. It is fitted by ``harness profile`` and stored as JSON under
``configs/estimators/<model>__<device-slug>.json``.

Plugins (``--estimator module:attr[@checkpoint]``) are a ``torch.nn.Module`` (instance or class), a
class to instantiate, or a callable whose call takes keyword tensors of shape ``[batch]``:
``vision_tokens, text_tokens, tier_idx, top_k, num_active_blocks, token_position`` and returns
``{"T_prefill_total": ..., "T_decode_per_token": ...}`` (or ``"T_decode_total"``).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.errors import HarnessError

FORMAT = "harness-estimator/1"
PLUGIN_KEYS = ("vision_tokens", "text_tokens", "tier_idx", "top_k", "num_active_blocks", "token_position")
DEFAULT_N_EXPERTS = 64


@dataclass
class EstimatorInput:
    top_k: int
    num_active_blocks: int
    tier_idx: int
    vision_tokens: int
    text_tokens: int
    output_tokens: int


@dataclass
class Estimate:
    prefill_ms: float
    decode_ms: float
    total_ms: float

    def to_dict(self) -> dict:
        return {"prefill_ms": self.prefill_ms, "decode_ms": self.decode_ms, "total_ms": self.total_ms}


class LatencyEstimator:
    """Base class: ``name`` is recorded in every run; ``predict`` maps rows to estimates."""

    name: str = "estimator"

    def predict(self, rows: list[EstimatorInput]) -> list[Estimate]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}


# -- device / file naming -------------------------------------------------------------------------
def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def device_slug(device: str) -> str:
    """``cpu`` for any CPU (fits travel between CPUs of a CI fleet); ``cuda-<card name>`` on GPU."""
    dev = str(device or "cpu")
    if dev.startswith("cuda"):
        try:
            import torch

            idx = int(dev.split(":")[1]) if ":" in dev else 0
            return "cuda-" + slugify(torch.cuda.get_device_name(idx))
        except Exception:
            return "cuda"
    return slugify(dev.split(":")[0])


def model_slug(model_info) -> str:
    name = getattr(model_info, "name", None) or str(model_info)
    return slugify(str(name).replace(":", "-").split("/")[-1] if "/" in str(name) else str(name).replace(":", "-"))


def estimators_dir() -> Path:
    """The packaged ``configs/estimators`` folder."""
    import harness.configs as configs

    return Path(configs.__file__).resolve().parent / "estimators"


def cache_dir() -> Path:
    base = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "harness")
    return Path(base) / "estimators"


def fit_filename(model_info, device: str) -> str:
    return f"{model_slug(model_info)}__{device_slug(device)}.json"


def find_fit(model_info, device: str) -> Path | None:
    """The saved fit for (model, device): ``configs/estimators`` first, then the user cache."""
    name = fit_filename(model_info, device)
    for folder in (estimators_dir(), cache_dir()):
        p = folder / name
        if p.is_file():
            return p
    return None


def writable_fit_path(model_info, device: str) -> Path:
    """Where a new fit goes: ``configs/estimators`` when writable, else the user cache."""
    name = fit_filename(model_info, device)
    folder = estimators_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder / name
    except OSError:
        pass
    return cache_dir() / name


# -- features -------------------------------------------------------------------------------------
def _arr(rows, attr) -> np.ndarray:
    return np.asarray([getattr(r, attr) for r in rows], dtype=float)


PREFILL_FEATURES = ("const", "vision", "blocks", "prompt_x_blocks", "prompt_x_expert_work",
                    "distinct_experts_x_blocks", "prompt_sq_x_blocks", "topk_x_blocks")
DECODE_FEATURES = ("const", "blocks", "topk_x_blocks", "kv_x_blocks", "kv")


def prefill_features(vision, text, blocks, top_k, n_experts: int = DEFAULT_N_EXPERTS) -> np.ndarray:
    """Columns of :data:`PREFILL_FEATURES` for arrays of equal length."""
    v, t, a, k = (np.asarray(x, dtype=float) for x in (vision, text, blocks, top_k))
    L = v + t
    moe = np.maximum(a - 1, 0)  # blocks after block 0 use top_k
    e = float(n_experts)
    distinct = e * (1.0 - np.power(np.clip(1.0 - k / e, 0.0, 1.0), L))  # expected experts hit per block
    return np.stack([np.ones_like(L), v, a, a * L, moe * k * L, moe * distinct, a * L * L / 1000.0, moe * k], axis=1)


def decode_features(vision, text, blocks, top_k, position) -> np.ndarray:
    """Columns of :data:`DECODE_FEATURES`: one decode step at 1-based output ``position``."""
    v, t, a, k, p = (np.asarray(x, dtype=float) for x in (vision, text, blocks, top_k, position))
    kv = v + t + p
    moe = np.maximum(a - 1, 0)
    return np.stack([np.ones_like(kv), a, moe * k, a * kv, kv], axis=1)


def nnls(A: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """Non-negative least squares, Lawson-Hanson active set: argmin ||Ax - b|| subject to x >= 0."""
    m, n = A.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = A.T @ (b - A @ x)
    tol = 10 * np.finfo(float).eps * np.linalg.norm(A, 1) * max(m, n)
    for _ in range(max_iter or 3 * n):
        if passive.all() or w[~passive].max(initial=-np.inf) <= tol:
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(A[:, passive], b, rcond=None)[0]
            if z[passive].min() > 0:
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        x = z
        w = A.T @ (b - A @ x)
    return x


def fit_weighted_lstsq(X: np.ndarray, y: np.ndarray, ridge: float = 1e-10, nonneg: bool = False) -> np.ndarray:
    """Least squares minimising relative error (rows weighted by 1/y), columns scaled to unit RMS
    and a tiny ridge for conditioning; ``nonneg`` constrains every coefficient to be >= 0 (each
    feature is a cost term). Returns coefficients for the unscaled columns."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError("fit needs a non-empty design matrix matching the targets")
    w = 1.0 / np.maximum(np.abs(y), 1e-9)
    scale = np.sqrt((X ** 2).mean(axis=0))
    scale[scale == 0] = 1.0
    Xs = X / scale * w[:, None]
    ys = y * w
    n_col = X.shape[1]
    A = np.vstack([Xs, math.sqrt(ridge) * np.eye(n_col)])
    b = np.concatenate([ys, np.zeros(n_col)])
    if nonneg:
        coef = nnls(A, b)
    else:
        coef, *_ = np.linalg.lstsq(A, b, rcond=None)
    return coef / scale


# -- built-in estimator ---------------------------------------------------------------------------
class FittedEstimator(LatencyEstimator):
    """The built-in estimator: linear in :func:`prefill_features` / :func:`decode_features`."""

    MIN_MS = 1e-3

    def __init__(self, prefill_coef: Sequence[float], decode_coef: Sequence[float], *, name: str = "builtin",
                 n_experts: int = DEFAULT_N_EXPERTS, meta: dict | None = None, path: str | None = None):
        self.prefill_coef = np.asarray(prefill_coef, dtype=float)
        self.decode_coef = np.asarray(decode_coef, dtype=float)
        if self.prefill_coef.shape != (len(PREFILL_FEATURES),) or self.decode_coef.shape != (len(DECODE_FEATURES),):
            raise HarnessError(f"estimator fit '{path or name}' has the wrong number of coefficients; re-run `harness profile`")
        self.name = name
        self.n_experts = int(n_experts)
        self.meta = dict(meta or {})
        self.path = path

    # predictions --------------------------------------------------------------------------------
    def prefill_ms(self, vision, text, blocks, top_k) -> np.ndarray:
        X = prefill_features(vision, text, blocks, top_k, self.n_experts)
        return np.maximum(X @ self.prefill_coef, self.MIN_MS)

    def decode_step_ms(self, vision, text, blocks, top_k, position) -> np.ndarray:
        X = decode_features(vision, text, blocks, top_k, position)
        return np.maximum(X @ self.decode_coef, self.MIN_MS)

    def decode_total_ms(self, vision, text, blocks, top_k, output_tokens) -> np.ndarray:
        """Sum of per-step times over positions 1..n, in closed form per row (features are linear in p
        except for the clip, which only matters for nonsensical fits)."""
        v, t, a, k, n = (np.asarray(x, dtype=float) for x in (vision, text, blocks, top_k, output_tokens))
        out = np.zeros_like(n)
        for i in range(n.size):
            m = int(n[i])
            if m <= 0:
                continue
            pos = np.arange(1, m + 1)
            out[i] = self.decode_step_ms(np.full(m, v[i]), np.full(m, t[i]), np.full(m, a[i]), np.full(m, k[i]), pos).sum()
        return out

    def predict(self, rows: list[EstimatorInput]) -> list[Estimate]:
        if not rows:
            return []
        v, t, a, k, n = (_arr(rows, x) for x in ("vision_tokens", "text_tokens", "num_active_blocks", "top_k", "output_tokens"))
        pre = self.prefill_ms(v, t, a, k)
        dec = self.decode_total_ms(v, t, a, k, n)
        return [Estimate(float(p), float(d), float(p + d)) for p, d in zip(pre, dec)]

    # persistence --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "n_experts": self.n_experts,
            "prefill": {"features": list(PREFILL_FEATURES), "coef": self.prefill_coef.tolist()},
            "decode_per_token": {"features": list(DECODE_FEATURES), "coef": self.decode_coef.tolist()},
            **{k: v for k, v in self.meta.items() if k not in ("format", "name", "n_experts", "prefill", "decode_per_token")},
        }

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
            raise HarnessError(f"'{path}' is not a harness estimator fit (format {FORMAT}); re-run `harness profile`")
        try:
            if list(d["prefill"]["features"]) != list(PREFILL_FEATURES) or list(d["decode_per_token"]["features"]) != list(DECODE_FEATURES):
                raise HarnessError(f"estimator fit '{path}' uses other features than this harness version; re-run `harness profile`")
            meta = {k: v for k, v in d.items() if k not in ("prefill", "decode_per_token")}
            return cls(d["prefill"]["coef"], d["decode_per_token"]["coef"], name=d.get("name", Path(path).stem),
                       n_experts=d.get("n_experts", DEFAULT_N_EXPERTS), meta=meta, path=str(path))
        except (KeyError, TypeError) as exc:
            raise HarnessError(f"estimator fit '{path}' is incomplete (missing {exc}); re-run `harness profile`")

    def describe(self) -> dict:
        d = {"name": self.name, "kind": "builtin", "path": self.path}
        for key in ("device_name", "created", "heldout", "quick"):
            if key in self.meta:
                d[key] = self.meta[key]
        return d


@dataclass
class Measurement:
    """One profiled generate call at batch 1 (``decode_step_ms[i]`` = step at position i+1)."""

    num_active_blocks: int
    top_k: int
    tier_idx: int
    vision_tokens: int
    text_tokens: int
    prefill_ms: float
    decode_step_ms: list[float]
    repeat: int = 0

    @property
    def config_key(self) -> tuple:
        return (self.num_active_blocks, self.top_k, self.tier_idx, self.text_tokens)

    @property
    def decode_ms(self) -> float:
        return float(sum(self.decode_step_ms))

    def to_dict(self) -> dict:
        return dict(self.__dict__)


INTERFERENCE_FACTOR = 2.0


def drop_interference(measurements: Sequence[Measurement], factor: float = INTERFERENCE_FACTOR) -> list[Measurement]:
    """Drop calls slower than ``factor`` x the fastest repeat of the same (configuration, output
    length): on a shared machine another process can slow a whole call down many times (CPU thread
    oversubscription gives ~10x); such calls measure the neighbours, not the model."""
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(m.config_key + (m.vision_tokens, len(m.decode_step_ms)), []).append(m)
    keep = []
    for g in groups.values():
        fastest = min(m.prefill_ms + m.decode_ms for m in g)
        keep.extend(m for m in g if m.prefill_ms + m.decode_ms <= factor * fastest)
    return keep


def fit_measurements(measurements: Sequence[Measurement], n_experts: int = DEFAULT_N_EXPERTS, name: str = "builtin",
                     meta: dict | None = None, nonneg: bool = False) -> FittedEstimator:
    """Fit prefill on one row per configuration and decode on one row per (configuration, position),
    using the median over repeats to damp outliers. ``nonneg``: every cost coefficient >= 0 (robust
    on noisy devices; slightly less flexible)."""
    if not measurements:
        raise HarnessError("no latency measurements to fit; profile at least one configuration")
    measurements = drop_interference(measurements)
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(m.config_key + (m.vision_tokens,), []).append(m)
    pre_rows, pre_y, dec_rows, dec_y = [], [], [], []
    for key, ms in groups.items():
        m0 = ms[0]
        pre_rows.append((m0.vision_tokens, m0.text_tokens, m0.num_active_blocks, m0.top_k))
        pre_y.append(float(np.median([m.prefill_ms for m in ms])))
        n_steps = max(len(m.decode_step_ms) for m in ms)
        for p in range(1, n_steps + 1):
            vals = [m.decode_step_ms[p - 1] for m in ms if len(m.decode_step_ms) >= p]
            dec_rows.append((m0.vision_tokens, m0.text_tokens, m0.num_active_blocks, m0.top_k, p))
            dec_y.append(float(np.median(vals)))
    P = np.asarray(pre_rows, dtype=float)
    Xp = prefill_features(P[:, 0], P[:, 1], P[:, 2], P[:, 3], n_experts)
    coef_p = fit_weighted_lstsq(Xp, np.asarray(pre_y), nonneg=nonneg)
    if dec_rows:
        D = np.asarray(dec_rows, dtype=float)
        Xd = decode_features(D[:, 0], D[:, 1], D[:, 2], D[:, 3], D[:, 4])
        coef_d = fit_weighted_lstsq(Xd, np.asarray(dec_y), nonneg=nonneg)
    else:
        coef_d = np.zeros(len(DECODE_FEATURES))
    return FittedEstimator(coef_p, coef_d, name=name, n_experts=n_experts, meta=meta)


def error_stats(estimated: Sequence[float], measured: Sequence[float]) -> dict:
    """MAPE (fraction) and share of estimates within +-10% of the measurement."""
    e = np.asarray([x for x, m in zip(estimated, measured) if x is not None and m is not None and m > 0], dtype=float)
    m = np.asarray([m for x, m in zip(estimated, measured) if x is not None and m is not None and m > 0], dtype=float)
    if m.size == 0:
        return {"mape": None, "within_10pct": None, "n": 0}
    rel = np.abs(e - m) / m
    return {"mape": float(rel.mean()), "within_10pct": float((rel <= 0.10).mean()), "n": int(m.size)}


def evaluate(estimator: LatencyEstimator, measurements: Sequence[Measurement]) -> dict:
    """Prefill / decode / total error of an estimator against single measurements."""
    rows = [EstimatorInput(m.top_k, m.num_active_blocks, m.tier_idx, m.vision_tokens, m.text_tokens,
                           len(m.decode_step_ms)) for m in measurements]
    est = estimator.predict(rows)
    return {
        "prefill": error_stats([e.prefill_ms for e in est], [m.prefill_ms for m in measurements]),
        "decode": error_stats([e.decode_ms for e in est], [m.decode_ms if m.decode_step_ms else None for m in measurements]),
        "total": error_stats([e.total_ms for e in est], [m.prefill_ms + m.decode_ms for m in measurements]),
    }


def _median_groups(measurements: Sequence[Measurement]) -> list[tuple[Measurement, int, float, float, float]]:
    """Per (configuration, output length): (first measurement, steps, median prefill, decode, total)."""
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(m.config_key + (m.vision_tokens, len(m.decode_step_ms)), []).append(m)
    out = []
    for key, g in groups.items():
        out.append((g[0], key[-1], float(np.median([m.prefill_ms for m in g])), float(np.median([m.decode_ms for m in g])),
                    float(np.median([m.prefill_ms + m.decode_ms for m in g]))))
    return out


def evaluate_medians(estimator: LatencyEstimator, measurements: Sequence[Measurement]) -> dict:
    """Error against the median of the repeated measurements of each (configuration, output length):
    what the estimator is for (expected latency), with repeat-to-repeat noise damped (calls slowed
    down by interference, see :func:`drop_interference`, are left out of the medians)."""
    groups = _median_groups(drop_interference(measurements))
    if not groups:
        return {}
    rows = [EstimatorInput(m.top_k, m.num_active_blocks, m.tier_idx, m.vision_tokens, m.text_tokens, n)
            for m, n, *_ in groups]
    est = estimator.predict(rows)
    return {
        "prefill": error_stats([e.prefill_ms for e in est], [g[2] for g in groups]),
        "decode": error_stats([e.decode_ms for e in est], [g[3] if g[1] else None for g in groups]),
        "total": error_stats([e.total_ms for e in est], [g[4] for g in groups]),
    }


def measurement_noise(measurements: Sequence[Measurement]) -> dict:
    """How far single measurements fall from the median of their repeats (a floor for any
    estimator judged on single measurements): mean relative deviation and share within +-10%."""
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(m.config_key + (m.vision_tokens, len(m.decode_step_ms)), []).append(m)
    out = {}
    for part, fn in (("prefill", lambda m: m.prefill_ms), ("decode", lambda m: m.decode_ms),
                     ("total", lambda m: m.prefill_ms + m.decode_ms)):
        est, meas = [], []
        for g in groups.values():
            if len(g) < 2:
                continue
            med = float(np.median([fn(m) for m in g]))
            for m in g:
                est.append(med)
                meas.append(fn(m))
        s = error_stats(est, meas)
        out[part] = {"mean_rel_dev": s["mape"], "within_10pct": s["within_10pct"], "n": s["n"]}
    return out


# -- plugins --------------------------------------------------------------------------------------
class PluginError(Exception):
    """A plugin estimator raised or returned the wrong keys while predicting."""


class PluginEstimator(LatencyEstimator):
    """Wraps a user's module/callable with the keyword-tensor signature of docs/contracts.md."""

    def __init__(self, fn: Callable, spec: str):
        self.fn = fn
        self.name = spec
        self.spec = spec
        self._dtype_mode = None  # "float" or "long", found on first call

    def _call(self, cols: dict[str, list[float]]) -> dict:
        import torch

        modes = [self._dtype_mode] if self._dtype_mode else ["float", "long"]
        first_exc = None
        for mode in modes:
            dtype = torch.float32 if mode == "float" else torch.long
            kwargs = {k: torch.tensor(cols[k], dtype=dtype) for k in PLUGIN_KEYS}
            try:
                with torch.no_grad():
                    out = self.fn(**kwargs)
            except Exception as exc:  # the plugin's own failure
                first_exc = first_exc or exc
                continue
            self._dtype_mode = mode
            return out
        raise PluginError(f"estimator plugin '{self.spec}' raised {type(first_exc).__name__}: {first_exc}")

    @staticmethod
    def _values(out, key: str, n: int, spec: str) -> np.ndarray:
        val = out[key]
        try:
            import torch

            if isinstance(val, torch.Tensor):
                val = val.detach().float().cpu().numpy()
        except ImportError:  # pragma: no cover
            pass
        arr = np.asarray(val, dtype=float).reshape(-1)
        if arr.size == 1 and n > 1:
            arr = np.full(n, float(arr[0]))
        if arr.size != n:
            raise PluginError(f"estimator plugin '{spec}' returned {arr.size} values for '{key}' on a batch of {n}; return shape [batch]")
        if not np.all(np.isfinite(arr)):
            raise PluginError(f"estimator plugin '{spec}' returned non-finite values for '{key}'")
        return arr

    def predict(self, rows: list[EstimatorInput]) -> list[Estimate]:
        if not rows:
            return []
        # one call: per sample, one row per output position (at least one, for the prefill)
        cols: dict[str, list[float]] = {k: [] for k in PLUGIN_KEYS}
        owner: list[int] = []
        for i, r in enumerate(rows):
            n = max(int(r.output_tokens), 1)
            for p in range(1, n + 1):
                cols["vision_tokens"].append(r.vision_tokens)
                cols["text_tokens"].append(r.text_tokens)
                cols["tier_idx"].append(r.tier_idx)
                cols["top_k"].append(r.top_k)
                cols["num_active_blocks"].append(r.num_active_blocks)
                cols["token_position"].append(p)
                owner.append(i)
        out = self._call(cols)
        if not isinstance(out, dict):
            raise PluginError(f"estimator plugin '{self.spec}' returned {type(out).__name__}; return a dict with T_prefill_total and T_decode_per_token (or T_decode_total)")
        if "T_prefill_total" not in out or not ({"T_decode_per_token", "T_decode_total"} & set(out)):
            raise PluginError(f"estimator plugin '{self.spec}' returned keys {sorted(map(str, out))}; expected T_prefill_total and T_decode_per_token (or T_decode_total)")
        n_rows = len(owner)
        owner_a = np.asarray(owner)
        pre_all = self._values(out, "T_prefill_total", n_rows, self.spec)
        first = np.searchsorted(owner_a, np.arange(len(rows)))
        prefill = pre_all[first]
        if "T_decode_per_token" in out:
            per = self._values(out, "T_decode_per_token", n_rows, self.spec)
            decode = np.bincount(owner_a, weights=per, minlength=len(rows))
            for i, r in enumerate(rows):
                if int(r.output_tokens) <= 0:
                    decode[i] = 0.0
        else:  # T_decode_total: ask at token_position = output_tokens
            cols2 = {k: [] for k in PLUGIN_KEYS}
            for r in rows:
                for k, v in (("vision_tokens", r.vision_tokens), ("text_tokens", r.text_tokens), ("tier_idx", r.tier_idx),
                             ("top_k", r.top_k), ("num_active_blocks", r.num_active_blocks),
                             ("token_position", max(int(r.output_tokens), 0))):
                    cols2[k].append(v)
            out2 = self._call(cols2)
            if not isinstance(out2, dict) or "T_decode_total" not in out2:
                raise PluginError(f"estimator plugin '{self.spec}' stopped returning T_decode_total")
            decode = self._values(out2, "T_decode_total", len(rows), self.spec)
        return [Estimate(float(p), float(d), float(p + d)) for p, d in zip(prefill, decode)]

    def describe(self) -> dict:
        return {"name": self.name, "kind": "plugin"}


def _resolve_plugin(spec: str) -> PluginEstimator:
    from harness.registry import import_attr

    target, _, checkpoint = spec.partition("@")
    if ":" not in target:
        raise HarnessError(f"--estimator '{spec}' is not of the form module:attr[@checkpoint]")
    if checkpoint and not Path(checkpoint).is_file():
        raise HarnessError(f"--estimator checkpoint '{checkpoint}' does not exist; pass module:attr@PATH to an existing file")
    obj = import_attr(target)
    try:
        import torch

        module_type = torch.nn.Module
    except ImportError:  # pragma: no cover
        module_type = ()
    try:
        if isinstance(obj, type):
            if module_type and issubclass(obj, module_type):
                inst = obj()
                if checkpoint:
                    _load_checkpoint(inst, checkpoint, spec)
            else:
                inst = obj(checkpoint) if checkpoint else obj()
            fn = inst
        else:
            fn = obj
            if checkpoint:
                if module_type and isinstance(obj, module_type):
                    _load_checkpoint(obj, checkpoint, spec)
                else:
                    raise HarnessError(f"--estimator '{spec}': a checkpoint needs a torch.nn.Module or a class, not a {type(obj).__name__}")
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"--estimator '{spec}' could not be constructed: {type(exc).__name__}: {exc}")
    if module_type and isinstance(fn, module_type):
        fn.eval()
    if not callable(fn):
        raise HarnessError(f"--estimator '{spec}' is a {type(fn).__name__}, not callable; point it at a module, class or function")
    return PluginEstimator(fn, spec)


def _load_checkpoint(module, path: str, spec: str) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        module.load_state_dict(state)
    except Exception as exc:
        raise HarnessError(f"--estimator '{spec}': cannot load checkpoint '{path}': {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


class PendingFit(LatencyEstimator):
    """Stands in for the built-in estimator of a (model, device) with no saved fit yet; the run
    fits a quick one once the model is loaded (:func:`harness.latency.profile.quick_fit`)."""

    def __init__(self, model_info, device: str):
        self.model_info = model_info
        self.device = device
        self.fitted: FittedEstimator | None = None
        self.name = f"builtin:{fit_filename(model_info, device)[:-5]} (quick fit pending)"

    def predict(self, rows):
        if self.fitted is None:
            raise PluginError("the quick estimator fit has not run yet")
        return self.fitted.predict(rows)

    def describe(self) -> dict:
        return self.fitted.describe() if self.fitted else {"name": self.name, "kind": "builtin"}


def load_estimator(spec: str | None, model_info, device: str) -> LatencyEstimator:
    """``None``/``builtin`` -> the saved fit for (model, device) (or a :class:`PendingFit` when
    there is none yet); a path to a fit ``.json`` -> that fit; ``module:attr[@checkpoint]`` -> a
    plugin. (``--estimator none`` is handled by the caller.) Bad specs raise HarnessError."""
    if spec is None or spec.strip().lower() in ("", "builtin", "auto"):
        path = find_fit(model_info, device)
        if path is None:
            return PendingFit(model_info, device)
        est = FittedEstimator.load(path)
        return est
    spec = spec.strip()
    if spec.endswith(".json") and ":" not in spec.split("@")[0].replace("\\", "/").split("/")[-1]:
        if not Path(spec).is_file():
            raise HarnessError(f"--estimator fit file '{spec}' does not exist; run `harness profile` or pass module:attr")
        return FittedEstimator.load(spec)
    return _resolve_plugin(spec)


def probe(estimator: LatencyEstimator) -> str | None:
    """Call an estimator on one typical row; return why it is unusable, or None."""
    try:
        out = estimator.predict([EstimatorInput(4, 12, 1, 64, 32, 3)])
        if len(out) != 1:
            return f"estimator '{estimator.name}' returned {len(out)} estimates for 1 input"
        return None
    except PluginError as exc:
        return str(exc)
    except Exception as exc:
        return f"estimator '{estimator.name}' raised {type(exc).__name__}: {exc}"


def load_fit_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
