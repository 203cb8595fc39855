"""Estimated latency of (sample, configuration) pairs, one estimator call for a whole batch."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.knobs import TIER_INDEX, Knobs
from harness.policies.base import PolicyInput


def static_cost(k: Knobs) -> tuple:
    """Order of configurations by work when no latency is known: blocks x top_k, then tier."""
    return (k.num_blocks * k.top_k, k.num_blocks, TIER_INDEX.get(k.tier or "", 0))


def rows_by_task(rows: Iterable, context, *, need_samples: bool = False) -> dict[str, list]:
    """Accuracy-table rows inside the context's knob space (every row when it has none), grouped by
    lower-cased task, cheapest first by :func:`static_cost`; ``need_samples`` keeps only rows with
    per-sample results. An empty result means no row is usable."""
    space = {context.resolve(k) for k in context.knob_space} if context.knob_space else None
    by_task: dict[str, list] = defaultdict(list)
    for row in rows:
        if (row.samples or not need_samples) and (space is None or row.knobs in space):
            by_task[row.task.lower()].append(row)
    for task_rows in by_task.values():
        task_rows.sort(key=lambda r: static_cost(r.knobs))
    return by_task


def first_missing_task(by_task: dict[str, list], tasks: Iterable[str]) -> str | None:
    """The first of ``tasks`` with no rows in ``by_task`` (None when all have some)."""
    return next((t for t in tasks if t.lower() not in by_task), None)


def vision_tokens(inp: PolicyInput, tier: str | None) -> int:
    """Vision tokens of a sample at a tier; a model without tiers has at most one count."""
    if tier is not None or not inp.vision_tokens_by_tier:
        return inp.vision_tokens(tier) if tier is not None else 0
    if len(inp.vision_tokens_by_tier) == 1:
        return int(next(iter(inp.vision_tokens_by_tier.values())))
    raise HarnessError(f"configuration without a tier for sample '{inp.sample_id}', which has counts for tiers "
                       f"{', '.join(sorted(inp.vision_tokens_by_tier))}; give the tier")


def estimate_matrix(estimator, inputs: Sequence[PolicyInput], configs: Sequence[Knobs],
                    output_tokens: Callable[[PolicyInput, int], int]) -> np.ndarray:
    """``[len(inputs), len(configs)]`` estimated total ms. ``output_tokens(input, j)`` gives the
    expected output tokens of input under ``configs[j]``. Estimator faults become HarnessError."""
    from harness.latency.estimator import EstimatorInput

    rows = []
    for inp in inputs:
        for j, k in enumerate(configs):
            tier = k.tier
            rows.append(EstimatorInput(
                top_k=k.top_k,
                num_active_blocks=k.num_blocks,
                tier_idx=TIER_INDEX.get(tier, 0) if tier else 0,
                vision_tokens=vision_tokens(inp, tier),
                text_tokens=int(inp.text_tokens),
                output_tokens=int(output_tokens(inp, j)),
            ))
    if not rows:
        return np.zeros((len(inputs), len(configs)))
    name = getattr(estimator, "name", type(estimator).__name__)
    try:
        est = estimator.predict(rows)
    except HarnessError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise HarnessError(f"latency estimator '{name}' failed: {type(exc).__name__}: {exc}")
    if len(est) != len(rows):
        raise HarnessError(f"latency estimator '{name}' returned {len(est)} estimates for {len(rows)} rows")
    vals = np.asarray([float(e.total_ms) for e in est], dtype=float)
    if not np.all(np.isfinite(vals)):
        raise HarnessError(f"latency estimator '{name}' returned non-finite latency estimates")
    return vals.reshape(len(inputs), len(configs))
