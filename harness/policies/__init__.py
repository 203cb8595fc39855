"""Policies: per-sample knob choice (``--policy``), evaluated as part of ``harness run``.

- :data:`REGISTRY` -- ``Registry("policy", "harness.policies", ...)`` with built-ins ``fixed``,
  ``budget``, ``random``, ``oracle``; user policies register with :func:`register`, through the
  ``harness.policies`` entry point group, or as ``package.module:Name``.
- :func:`build` -- ``--policy SPEC --policy-arg key=value`` -> a ready :class:`Policy`; config
  errors are raised here, before the model loads.
- :func:`choose_safely` -- what the runner calls: never raises for a misbehaving policy; returns
  a :class:`Knobs` (tier filled in, validated against the model) or a :class:`PolicyFailure`
  with the message to record, one per input.
- :func:`load_knob_space` -- ``--knob-space`` (``configs/knob_spaces/*.toml`` or a path).
"""

from __future__ import annotations

from pathlib import Path

import inspect
from typing import Any, Callable, Iterable, Sequence

from harness.errors import HarnessError
from harness.knobs import Knobs
from harness.policies.base import Param, Policy, PolicyContext, PolicyFailure, PolicyInput, convert_args
from harness.policies.knob_space import available as available_knob_spaces
from harness.policies.knob_space import default_knob_space, load_knob_space
from harness.registry import Registry

__all__ = [
    "REGISTRY", "register", "build", "choose_safely", "parse_policy_args", "Policy", "PolicyInput",
    "PolicyContext", "PolicyFailure", "Param", "load_knob_space", "default_knob_space",
    "available_knob_spaces", "as_knobs",
]

REGISTRY: Registry = Registry("policy", "harness.policies", builtins={
    "fixed": "harness.policies.fixed",
    "budget": "harness.policies.budget",
    "random": "harness.policies.random",
    "oracle": "harness.policies.oracle",
})


def register(name: str, aliases: Iterable[str] = ()):
    """Class decorator: ``@register("mine")`` names the policy and adds it to the registry."""

    def deco(cls):
        cls.name = name
        REGISTRY.add(name, cls, aliases=aliases)
        return cls

    return deco


def parse_policy_args(pairs: Sequence[str] | None) -> dict[str, str]:
    """``["seed=3", "knobs=14,6"]`` (repeated ``--policy-arg``) -> ``{"seed": "3", ...}``."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise HarnessError(f"--policy-arg '{pair}' is not key=value; e.g. --policy-arg seed=3")
        k, v = pair.split("=", 1)
        k = k.strip()
        if not k:
            raise HarnessError(f"--policy-arg '{pair}' has an empty key; e.g. --policy-arg seed=3")
        if k in out:
            raise HarnessError(f"--policy-arg {k} is given twice; give each key once")
        out[k] = v.strip()
    return out


class FunctionPolicy(Policy):
    """Wraps a plain function ``f(inputs)`` (or ``f(inputs, context=...)``) given as ``module:attr``."""

    def __init__(self, fn: Callable, context: PolicyContext, name: str, extra: dict[str, Any]):
        self.fn, self.context, self.extra = fn, context, extra
        self.name = name  # type: ignore[misc]
        try:
            self._wants_context = "context" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self._wants_context = False

    def choose(self, inputs):
        kwargs = dict(self.extra)
        if self._wants_context:
            kwargs["context"] = self.context
        return self.fn(inputs, **kwargs)

    def describe(self) -> dict:
        return {"name": self.name, "args": dict(self.extra)}


def build(spec: str, args: dict[str, str] | None, context: PolicyContext) -> Policy:
    """Resolve ``spec`` (registered name, entry point, or ``package.module:Name``), convert and
    validate ``args`` and construct the policy. Raises HarnessError (one line) on bad config."""
    if not spec or not str(spec).strip():
        raise HarnessError(f"--policy is empty; use one of {', '.join(REGISTRY.names())} or package.module:Name")
    spec = str(spec).strip()
    spec, checkpoint = split_checkpoint(spec)
    args = dict(args or {})
    obj = REGISTRY.get(spec)
    label = getattr(obj, "name", None) if isinstance(obj, type) and issubclass(obj, Policy) else spec
    try:
        if isinstance(obj, type) and issubclass(obj, Policy):
            policy = obj(context, **convert_args(obj.name if obj.name != "policy" else spec, obj.params, args))
            if policy.name == "policy":
                policy.name = spec  # type: ignore[misc]
        elif isinstance(obj, type):
            policy = _build_plain_class(obj, spec, args, context)
        elif hasattr(obj, "choose"):
            if args:
                raise HarnessError(f"policy '{spec}' is an instance and takes no --policy-arg (got {', '.join(args)})")
            policy = obj
        elif callable(obj):
            policy = FunctionPolicy(obj, context, spec, args)
        else:
            raise HarnessError(f"'{spec}' is a {type(obj).__name__}, not a policy; point --policy at a Policy "
                               f"subclass, a class with choose(inputs), or a function")
    except HarnessError:
        raise
    except Exception as exc:  # a user's policy failing in __init__: one line
        raise HarnessError(f"policy '{label}' failed to start: {type(exc).__name__}: {exc}")
    if not callable(getattr(policy, "choose", None)):
        raise HarnessError(f"policy '{spec}' has no choose(inputs) method")
    if checkpoint is not None:
        load_checkpoint(policy, spec, checkpoint)
    if not getattr(policy, "name", None):
        try:
            policy.name = spec
        except AttributeError:
            pass
    return policy


def _build_plain_class(cls, spec: str, args: dict, context: PolicyContext):
    """A class that is not a Policy subclass: pass what its constructor asks for
    (``context``, ``args`` as a dict, or the args as string keywords)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs: dict[str, Any] = {}
    if "context" in params:
        kwargs["context"] = context
    if "args" in params:
        kwargs["args"] = args
    else:
        accepts_var = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in args if k not in params and not accepts_var]
        if unknown:
            known = [k for k in params if k not in ("context", "args", "self")]
            raise HarnessError(f"policy '{spec}' has no argument(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
        kwargs.update(args)
    if not hasattr(cls, "choose"):
        raise HarnessError(f"policy class '{spec}' has no choose(inputs) method")
    return cls(**kwargs)


def as_knobs(value: Any) -> Knobs:
    """A policy's answer for one sample -> Knobs (accepts Knobs, ``"14,6,low"``, a dict or a
    ``(14, 6[, "low"])`` tuple); HarnessError otherwise."""
    if isinstance(value, Knobs):
        value.check_generic()
        return value
    if isinstance(value, str):
        return Knobs.parse(value)
    if isinstance(value, dict):
        try:
            k = Knobs.from_dict(value)
        except (KeyError, TypeError, ValueError):
            raise HarnessError(f"{value!r} is not a configuration (needs num_blocks and top_k)")
        k.check_generic()
        return k
    if isinstance(value, (tuple, list)) and 2 <= len(value) <= 3:
        return Knobs.parse(",".join(str(v) for v in value if v is not None))
    raise HarnessError(f"{value!r} ({type(value).__name__}) is not a configuration; return Knobs objects")


def choose_safely(policy, inputs: list[PolicyInput], model_info) -> list[Knobs | PolicyFailure]:
    """Call ``policy.choose(inputs)`` and check the answer; never raises for policy faults.

    Returns one entry per input: a :class:`Knobs` validated against ``model_info`` with the tier
    filled in (model default when the policy left it out), or a :class:`PolicyFailure` whose
    message names the policy and the problem (it raised -> every sample fails; wrong type or
    number of answers -> every sample fails; one invalid configuration -> that sample fails)."""
    name = getattr(policy, "name", None) or type(policy).__name__
    n = len(inputs)
    if n == 0:
        return []
    try:
        answer = policy.choose(list(inputs))
    except Exception as exc:  # noqa: BLE001 - any fault of a user's policy is recorded, not raised
        msg = " ".join(str(exc).split())
        return [PolicyFailure(f"policy '{name}' raised {type(exc).__name__}: {msg}")] * n
    if isinstance(answer, (str, bytes, dict, Knobs)) or not hasattr(answer, "__len__"):
        return [PolicyFailure(f"policy '{name}' returned {type(answer).__name__}, not a list of {n} configurations")] * n
    answer = list(answer)
    if len(answer) != n:
        return [PolicyFailure(f"policy '{name}' returned {len(answer)} configurations for {n} samples")] * n
    out: list[Knobs | PolicyFailure] = []
    default_tier = getattr(model_info, "default_tier", None)
    for inp, value in zip(inputs, answer):
        if isinstance(value, PolicyFailure):
            out.append(value)
            continue
        try:
            k = as_knobs(value)
            k.validate(model_info.n_blocks, model_info.max_top_k, getattr(model_info, "min_blocks", None),
                       getattr(model_info, "tiers", None) or None, model=getattr(model_info, "name", "the model"))
            if k.tier is None and default_tier is not None:
                k = k.with_tier(default_tier)
            out.append(k)
        except HarnessError as exc:
            out.append(PolicyFailure(f"policy '{name}' returned an invalid configuration for sample '{inp.sample_id}': {exc}"))
        except Exception as exc:  # noqa: BLE001
            out.append(PolicyFailure(f"policy '{name}' returned an invalid configuration for sample "
                                     f"'{inp.sample_id}': {type(exc).__name__}: {exc}"))
    return out


def split_checkpoint(spec: str) -> tuple[str, str | None]:
    """``package.module:Name@weights.json`` -> (``package.module:Name``, ``weights.json``); a spec
    without ``@`` after its ``module:`` part has no checkpoint."""
    head, sep, tail = spec.rpartition("@")
    if sep and ":" in head and tail.strip():
        return head.strip(), tail.strip()
    return spec, None


def load_checkpoint(policy, spec: str, path: str) -> None:
    """Hand ``path`` to the policy's ``load_checkpoint(path)`` (a learned controller's weights) and
    record it (path and sha256) in the policy's description; one-line errors for a missing file, a
    policy that takes no checkpoint, or a load that fails."""
    import hashlib

    loader = getattr(policy, "load_checkpoint", None)
    if not callable(loader):
        raise HarnessError(f"policy '{spec}' was given the checkpoint '{path}' but has no load_checkpoint(path) method; "
                           "drop '@...' or add the method")
    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"policy '{spec}': checkpoint '{path}' does not exist; pass an existing file after '@'")
    try:
        loader(str(p))
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"policy '{spec}': cannot load checkpoint '{path}': {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    try:
        policy._harness_checkpoint = {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}
    except AttributeError:  # a policy object that takes no attributes: nothing to record it on
        pass


def describe_policy(policy) -> dict:
    """JSON-able ``{"name", "args", ...}`` for ``summary.json`` (with ``checkpoint`` when one was loaded)."""
    out = {"name": getattr(policy, "name", type(policy).__name__)}
    fn = getattr(policy, "describe", None)
    if callable(fn):
        try:
            d = fn()
            if isinstance(d, dict):
                out = d
        except Exception:  # noqa: BLE001
            pass
    ckpt = getattr(policy, "_harness_checkpoint", None)
    return {**out, "checkpoint": ckpt} if ckpt else out
