"""Estimator plugins: ``--estimator module:attr[@checkpoint]``.

A plugin is a ``torch.nn.Module`` (instance or class), a class to instantiate, or a callable whose
call takes keyword tensors of shape ``[batch]``: ``vision_tokens, text_tokens, tier_idx, top_k,
num_active_blocks, token_position`` and returns ``{"T_prefill_total": ..., "T_decode_per_token":
...}`` (or ``"T_decode_total"``), in milliseconds, for one sample. The signature is a contract
(docs/contracts.md, "Latency estimators"): existing estimators plug in unchanged. Plugins estimate per sample (batch size 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from harness.errors import HarnessError
from harness.latency.estimator import Estimate, EstimatorInput, LatencyEstimator

PLUGIN_KEYS = ("vision_tokens", "text_tokens", "tier_idx", "top_k", "num_active_blocks", "token_position")


class PluginError(Exception):
    """A plugin estimator raised or returned the wrong keys while predicting."""


class PluginEstimator(LatencyEstimator):
    """Wraps a user's module/callable with the design-section-2 keyword-tensor signature."""

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


def resolve_plugin(spec: str) -> PluginEstimator:
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
