"""What a run resolves before it starts, shared by ``harness run``, ``harness sweep``, ``harness profile``, the Python API and
the benchmarks: device and dtype resolution, the estimator (with a fit on first use), the policy."""

from __future__ import annotations

import time

from harness.errors import HarnessError, warn


def build_policy(spec: str, args: dict | None, *, info, estimator, knob_space=None, accuracy_table=None, seed=0,
                 max_new_tokens=16, tasks=(), latency_budget_ms=None):
    from harness.policies import build, default_knob_space
    from harness.policies.base import PolicyContext

    ctx = PolicyContext(model_info=info, knob_space=list(knob_space) if knob_space else default_knob_space(info),
                        estimator=estimator, accuracy_table=accuracy_table, seed=seed, max_new_tokens=max_new_tokens,
                        tasks=tuple(tasks), latency_budget_ms=latency_budget_ms)
    return build(spec, args or {}, ctx)


def task_max_new_tokens(task, style: str | None) -> int:
    fn = getattr(task, "max_new_tokens_for", None)
    if callable(fn):
        try:
            return int(fn(style))
        except Exception:
            pass
    return int(getattr(task, "max_new_tokens", 16) or 16)



# transformers' grouped_mm experts kernel is the fastest on GPU and on CPU too (the eager per-expert
# loop is 2-10x slower on CPU for 64 experts, with multi-second first calls); backends fall back to
# eager where it is unavailable.
DEFAULT_EXPERTS_IMPL = "grouped_mm"


def resolve_device(device: str) -> str:
    dev = (device or "auto").strip().lower()
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise HarnessError(f"--device {device} requested but CUDA is not available here; use --device cpu or auto")
    elif dev.startswith("mps"):
        raise HarnessError(f"--device {device} is not supported: the timers synchronise CUDA only, so on MPS prefill "
                           "would be under-measured and decode over-measured; use --device cpu or cuda[:N]")
    elif dev != "cpu":
        raise HarnessError(f"unknown --device '{device}'; use auto, cpu or cuda[:N]")
    return dev


def resolve_dtype(dtype: str, device: str) -> str:
    d = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
    if d == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return d


def prepare_estimator(spec: str | None, info, device: str, quiet: bool):
    """-> (estimator or None or PendingFit, note). Bad specs raise; a plugin that fails on a probe
    call is dropped with a note (the run continues without estimates)."""
    from harness.latency.estimator import load_estimator, probe

    if spec is not None and spec.strip().lower() in ("none", "off", "no"):
        return None, "estimator disabled (--estimator none)"
    est = load_estimator(spec, info, device)
    if type(est).__name__ == "PendingFit":
        return est, None
    why = probe(est)
    if why:
        note = f"{why}; the run continues without estimates"
        warn(note, quiet)
        return None, note
    return est, None


def ensure_fitted(est, backend, info, device: str, seed: int, quiet: bool, *, model_spec: str | None = None,
                  batch_size: int = 1, world=None):
    """Resolve the built-in estimator on the loaded model (:func:`harness.latency.firstuse.resolve`:
    the fit for this execution mode, else a bounded quick fit saved in the user cache, else the
    labelled roofline). A fit file named on the command line is checked against the run's mode: a
    mismatch is said in a warning and in summary.json, never passed over in silence. Under torchrun
    (``world``) rank 0 makes a pending fit and every rank uses it; a rank with no work (no backend)
    keeps ``est``."""
    from harness.backends import model_fingerprint
    from harness.latency.estimator import FittedEstimator, PendingFit
    from harness.latency.firstuse import backend_key, resolve

    if world is not None and isinstance(est, PendingFit):
        return world.from_main("fitting the latency estimator", lambda: ensure_fitted(
            est, backend, info, device, seed, quiet, model_spec=model_spec, batch_size=batch_size))
    if backend is None:
        return est, None
    weights = model_fingerprint(model_spec or getattr(info, "name", ""))
    if isinstance(est, PendingFit):
        return resolve(est, backend, info, model_spec=model_spec, weights=weights, batch_size=batch_size, seed=seed,
                       quiet=quiet)
    if isinstance(est, FittedEstimator):
        from harness.latency.measure import batch_bucket

        key, fit_key = backend_key(backend, info, weights), est.key
        diff = key.differences(fit_key) if fit_key else ["execution mode (the fit names none)"]
        if batch_bucket(batch_size) not in est.batch_buckets:
            diff.append("batch bucket")
        if diff:
            note = (f"estimator fit {est.path} was made for another {', '.join(diff)} than this run "
                    f"({key.describe()}, batch {batch_size}); its estimates are of that mode")
            warn(note, quiet)
            est.meta["mode_mismatch"] = diff
            return est, note
    return est, None


def ensure_batch1(est, backend, info, *, batch_size: int, seed: int = 0, quiet: bool = True,
                  model_spec: str | None = None, world=None):
    """The batch-1 (per-sample) estimator of a run at ``batch_size``, given ``est``, the estimator
    :func:`ensure_fitted` returned for it: ``(estimator or None, note or None)``
    (:func:`harness.latency.firstuse.batch1_estimator`: the run's own estimator at batch 1, else the
    batch-1 fit of the run's execution mode, else a bounded quick fit at batch 1, else None with one
    line saying why). Under torchrun (``world``) rank 0 finds or makes it and every rank uses it."""
    from harness.latency.firstuse import batch1_estimator

    if world is not None:
        return world.from_main("fitting the batch-1 latency estimator", lambda: ensure_batch1(
            est, backend, info, batch_size=batch_size, seed=seed, quiet=quiet, model_spec=model_spec))
    weights = None
    if backend is not None and est is not None:
        from harness.backends import model_fingerprint

        weights = model_fingerprint(model_spec or getattr(info, "name", ""))
    return batch1_estimator(est, backend, info, batch_size=batch_size, model_spec=model_spec, weights=weights,
                            seed=seed, quiet=quiet)
