"""What the built-in estimator is linear in, and how it is fitted.

A generate call on a batch of ``b`` left-padded prompts of ``L = vision + text`` tokens, with
``a`` active blocks of which ``a - 1`` route each token to ``k`` of ``E`` experts:

- **prefill** columns (:data:`PREFILL_FEATURES`): a constant, vision-encoder work ``b*v``,
  per-block launch overhead ``a``, dense work ``a*b*L``, routed-expert work ``(a-1)*k*b*L``, expert
  weights read ``(a-1)*D(b*L)``, attention ``a*b*L^2`` and per-block routing ``(a-1)*k``;
- **decode step** columns at 1-based output position ``p`` (:data:`DECODE_FEATURES`): a constant,
  per-block overhead ``a``, expert weights read ``(a-1)*D(b)``, dense work ``a*b``, routed-expert
  work ``(a-1)*k*b``, attention over the KV cache ``a*b*(L+p)`` and ``b*(L+p)``.

An engine that pads each prompt pass to a multiple of ``prompt_bucket`` tokens (the fast engine
on CUDA: a CUDA graph per padded length) does the language model's prompt work on the padded
length: with a bucket, ``L`` in the language-model columns is ``ceil(L / bucket) * bucket`` (the
vision column stays ``b*v``). The fit records the bucket of the engine it measured.

``D(n) = E * (1 - (1 - k/E)^n)`` is the expected number of distinct experts that ``n`` tokens,
each choosing ``k`` of ``E``, load in one block: at batch 1 a decode step reads ``k`` experts, at
batch 32 with ``k = 8`` of 64 about 63 of them, which is why a batch's step costs far less than
``b`` single steps yet more than one. At batch 1 some columns coincide (``D(1) = k``), so a fit
made at batch 1 says nothing about larger batches: fits record the batch buckets they cover.

Fits minimise relative error (rows weighted by ``1/y``, which is what MAPE measures) with
``scipy.optimize.nnls`` when every cost term must be >= 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from harness.errors import HarnessError
from harness.latency.measurement import Measurement, drop_interference

DEFAULT_N_EXPERTS = 64
PREFILL_FEATURES = ("const", "vision", "blocks", "tokens_x_blocks", "tokens_x_expert_work",
                    "distinct_experts_x_blocks", "tokens_sq_x_blocks", "topk_x_blocks")
DECODE_FEATURES = ("const", "blocks", "distinct_experts_x_blocks", "batch_x_blocks", "batch_x_expert_work",
                   "kv_x_blocks", "kv")


def distinct_experts(n_tokens, top_k, n_experts: int = DEFAULT_N_EXPERTS):
    """Expected distinct experts hit by ``n_tokens`` tokens each choosing ``top_k`` of ``n_experts``
    (uniform routing): ``E * (1 - (1 - k/E)^n)``."""
    e = float(n_experts)
    k = np.asarray(top_k, dtype=float)
    n = np.asarray(n_tokens, dtype=float)
    return e * (1.0 - np.power(np.clip(1.0 - k / e, 0.0, 1.0), n))


def padded(length, prompt_bucket: int = 0):
    """Prompt length as an engine with ``prompt_bucket`` runs it (the length itself without one)."""
    L = np.asarray(length, dtype=float)
    return np.ceil(L / prompt_bucket) * prompt_bucket if prompt_bucket else L


def prefill_features(vision, text, blocks, top_k, n_experts: int = DEFAULT_N_EXPERTS, batch=1,
                     prompt_bucket: int = 0) -> np.ndarray:
    v, t, a, k, b = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (vision, text, blocks, top_k, batch)))
    L = padded(v + t, prompt_bucket)
    moe = np.maximum(a - 1, 0)
    return np.stack([np.ones_like(L), b * v, a, a * b * L, moe * k * b * L, moe * distinct_experts(b * L, k, n_experts),
                     a * b * L * L / 1000.0, moe * k], axis=1)


def decode_features(vision, text, blocks, top_k, position, n_experts: int = DEFAULT_N_EXPERTS, batch=1) -> np.ndarray:
    v, t, a, k, p, b = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (vision, text, blocks, top_k, position, batch)))
    kv = v + t + p
    moe = np.maximum(a - 1, 0)
    return np.stack([np.ones_like(kv), a, moe * distinct_experts(b, k, n_experts), a * b, moe * k * b, a * b * kv, b * kv],
                    axis=1)


def fit_weighted_lstsq(X: np.ndarray, y: np.ndarray, ridge: float = 1e-10, nonneg: bool = False) -> np.ndarray:
    """Least squares minimising relative error (rows weighted by 1/y), columns scaled to unit RMS
    and a tiny ridge for conditioning; ``nonneg`` constrains every coefficient to be >= 0 (each
    feature is a cost term). Returns coefficients for the unscaled columns."""
    from scipy.optimize import nnls

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError("fit needs a non-empty design matrix matching the targets")
    w = 1.0 / np.maximum(np.abs(y), 1e-9)
    scale = np.sqrt((X ** 2).mean(axis=0))
    scale[scale == 0] = 1.0
    n_col = X.shape[1]
    A = np.vstack([X / scale * w[:, None], math.sqrt(ridge) * np.eye(n_col)])
    b = np.concatenate([y * w, np.zeros(n_col)])
    coef = nnls(A, b, maxiter=50 * n_col)[0] if nonneg else np.linalg.lstsq(A, b, rcond=None)[0]
    return coef / scale


def design(measurements: Sequence[Measurement], n_experts: int, prompt_bucket: int = 0) -> tuple:
    """Median-of-repeats rows: ``(Xp, yp, Xd, yd)`` for prefill and per-position decode steps."""
    groups: dict[tuple, list[Measurement]] = {}
    for m in drop_interference(measurements):
        groups.setdefault(m.config_key + (m.vision_tokens,), []).append(m)
    pre_rows, pre_y, dec_rows, dec_y = [], [], [], []
    for ms in groups.values():
        m0 = ms[0]
        base = (m0.vision_tokens, m0.text_tokens, m0.num_active_blocks, m0.top_k, m0.batch_size)
        pre_rows.append(base)
        pre_y.append(float(np.median([m.prefill_ms for m in ms])))
        for p in range(1, max(len(m.decode_step_ms) for m in ms) + 1):
            vals = [m.decode_step_ms[p - 1] for m in ms if len(m.decode_step_ms) >= p]
            dec_rows.append(base + (p,))
            dec_y.append(float(np.median(vals)))
    P = np.asarray(pre_rows, dtype=float)
    Xp = prefill_features(P[:, 0], P[:, 1], P[:, 2], P[:, 3], n_experts, P[:, 4], prompt_bucket)
    if not dec_rows:
        return Xp, np.asarray(pre_y), None, None
    D = np.asarray(dec_rows, dtype=float)
    Xd = decode_features(D[:, 0], D[:, 1], D[:, 2], D[:, 3], D[:, 5], n_experts, D[:, 4])
    return Xp, np.asarray(pre_y), Xd, np.asarray(dec_y)


def fit_coefficients(measurements: Sequence[Measurement], n_experts: int = DEFAULT_N_EXPERTS,
                     nonneg: bool = False, prompt_bucket: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prefill coefficients on one row per configuration and decode coefficients on one row per
    (configuration, position), each the median over repeats (interference dropped first)."""
    if not measurements:
        raise HarnessError("no latency measurements to fit; profile at least one configuration")
    Xp, yp, Xd, yd = design(measurements, n_experts, prompt_bucket)
    coef_p = fit_weighted_lstsq(Xp, yp, nonneg=nonneg)
    coef_d = fit_weighted_lstsq(Xd, yd, nonneg=nonneg) if Xd is not None else np.zeros(len(DECODE_FEATURES))
    return coef_p, coef_d
