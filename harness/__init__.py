"""harness: evaluation of adaptive MoE vision-language inference (accuracy next to latency).

``harness.evaluate(task=..., knobs=..., model=..., data=...)`` is the Python entry point (see
:mod:`harness.api`); the ``harness`` command wraps the same function."""

__version__ = "0.1.0"


def _map_checkout_folders() -> None:
    """In a source checkout, ``metrics/``, ``tasks/`` and ``configs/`` sit beside this package and
    install as ``harness.metrics``, ``harness.tasks`` and ``harness.configs`` (setup.cfg
    ``package_dir``). Adding the checkout to this package's search path maps them the same way, so
    ``python -m harness`` and the benchmarks run from a clone that was never installed. An installed
    copy (no ``setup.cfg`` beside the package) is left as it is."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (root / "setup.cfg").is_file() and all((root / d / "__init__.py").is_file() for d in ("metrics", "tasks", "configs")):
        if str(root) not in __path__:
            __path__.append(str(root))


_map_checkout_folders()


def evaluate(*args, **kwargs):
    """See :func:`harness.api.evaluate` (imported lazily: ``import harness`` stays light)."""
    from harness.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
