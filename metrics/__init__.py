"""Metrics: pure functions over strings, registered by name.

``get_metric(name)`` resolves a name through :data:`registry` (built-ins imported lazily, then
the ``harness.metrics`` entry point group, then ``package.module:attr``) and returns a
:class:`~metrics.base.Metric` instance. A plugin registers with ``@metrics.registry.register("name")``
on a :class:`Metric` subclass (or instance).
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.registry import Registry
from harness.metrics.base import Metric, MetricResult

registry: Registry = Registry(
    "metric",
    "harness.metrics",
    builtins={
        "vqa_score": "harness.metrics.vqa",
        "vqa_score_molmo": "harness.metrics.vqa",
        "mc": "harness.metrics.mc",
        "em": "harness.metrics.em",
        "ansl_em": "harness.metrics.anls",
        "cider_score": "harness.metrics.cider",
    },
)

_instances: dict[int, Metric] = {}


def get_metric(name: str) -> Metric:
    """The metric registered as ``name`` (instantiated once if a class was registered)."""
    obj = registry.get(name)
    if isinstance(obj, type):
        key = id(obj)
        if key not in _instances:
            _instances[key] = obj()
        obj = _instances[key]
    if not callable(getattr(obj, "score", None)) or not getattr(obj, "subscores", None):
        raise HarnessError(
            f"metric '{name}' resolved to {obj!r}, which is not a Metric (needs .score(items) and .subscores)"
        )
    return obj


def list_metrics() -> list[Metric]:
    """Every registered metric, sorted by name."""
    return [get_metric(name) for name, _ in registry.items()]


__all__ = ["Metric", "MetricResult", "get_metric", "list_metrics", "registry"]
