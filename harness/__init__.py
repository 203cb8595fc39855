"""harness: evaluation of adaptive MoE vision-language inference (accuracy next to latency).

``harness.evaluate(task=..., knobs=..., model=..., data=...)`` is the Python entry point (see
:mod:`harness.api`); the ``harness`` command wraps the same function."""

__version__ = "0.1.0"


def evaluate(*args, **kwargs):
    """See :func:`harness.api.evaluate` (imported lazily: ``import harness`` stays light)."""
    from harness.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
