"""``oracle``: for each sample, the cheapest configuration that answered it correctly in a sweep
-- the upper bound a controller can reach at the lowest cost.

Needs ``--accuracy-table`` pointing at run directories of a sweep (per-sample results in
``samples.jsonl``; the aggregate JSON of ``harness pareto`` is not enough). A sample counts as
answered correctly by a configuration when its main sub-score is ``>= threshold``
(``--policy-arg threshold=0.8``); the default is exact for binary metrics (``em``, ``mc``:
score >= 1.0) and a majority for graded ones (every other metric: score > 0.5).

"Cheapest" (``--policy-arg cost=...``):
- ``estimated``: the latency estimator priced on the sample's own tokens and the output tokens
  that configuration produced for it in the sweep (deterministic; needs an estimator);
- ``measured``: the total latency recorded for the sample in the sweep (batch-1 runs: its own
  latency; batched runs: its batch's latency);
- ``auto`` (default): ``estimated`` when an estimator is available, else ``measured``.
Ties and missing latencies fall back to fewer blocks x top_k. Samples no configuration answers,
and samples the sweep did not contain, get the cheapest configuration.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from harness.errors import HarnessError
from harness.policies import register
from harness.policies.base import Param, Policy, PolicyFailure
from harness.policies.costs import estimate_matrix, first_missing_task, rows_by_task
from harness.policies.table import TableRow, load_accuracy_table

BINARY_METRICS = ("em", "mc")


def is_correct(score: float | None, metric: str | None, threshold: float | None) -> bool:
    """Default rule: binary metrics (em, mc) need 1.0; graded metrics need more than 0.5."""
    if score is None:
        return False
    if threshold is not None:
        return score >= threshold
    if (metric or "").lower() in BINARY_METRICS:
        return score >= 1.0
    return score > 0.5


def cheapest_correct(scores, costs, metric, threshold: float | None) -> tuple[int, bool]:
    """The oracle's rule for one sample: of configurations with per-sample ``scores`` (None: not
    run), ``costs`` and ``metric`` (a name, or one name per configuration), the index of the
    cheapest that answered correctly (:func:`is_correct`); when none did, the cheapest of all. Ties go to the lower index (callers order configurations
    by :func:`~harness.policies.costs.static_cost`, so ties go to less work). -> (index, answered).
    Shared by ``--policy oracle`` and ``harness compare``'s oracle."""
    metrics = [metric] * len(scores) if metric is None or isinstance(metric, str) else list(metric)
    ok = [j for j, s in enumerate(scores) if is_correct(s, metrics[j], threshold)]
    pool = ok if ok else range(len(scores))
    return min(pool, key=lambda j: (costs[j], j)), bool(ok)


@register("oracle")
class OraclePolicy(Policy):
    """Cheapest configuration that answered the sample correctly in a sweep."""

    summary = "cheapest configuration that answered each sample correctly in a sweep (needs --accuracy-table run dirs)"
    params = {
        "threshold": Param(float, None, "correct if score >= threshold (default: 1.0 for em/mc, >0.5 otherwise)"),
        "cost": Param(str, "auto", "estimated, measured or auto", choices=("auto", "estimated", "measured")),
    }

    def setup(self) -> None:
        ctx = self.context
        if not ctx.accuracy_table:
            raise HarnessError("policy 'oracle' needs --accuracy-table: the output folder of a sweep (run directories "
                               "with samples.jsonl)")
        table = load_accuracy_table(ctx.accuracy_table).select_model(ctx.model_info).resolve_tiers(ctx.default_tier)
        if not table.has_samples():
            raise HarnessError(f"policy 'oracle' needs per-sample results; {table.source} has none (pass the sweep's "
                               f"run directories, not a pareto JSON)")
        if self.cost == "auto":
            self.cost = "estimated" if ctx.estimator is not None else "measured"
        if self.cost == "estimated" and ctx.estimator is None:
            raise HarnessError("policy 'oracle' with cost=estimated needs a latency estimator; pass --estimator "
                               "or --policy-arg cost=measured")
        self.rows: dict[str, list[TableRow]] = rows_by_task(table.rows, ctx, need_samples=True)
        if not self.rows:
            raise HarnessError(f"policy 'oracle': no configuration of {table.source} with per-sample results is in "
                               f"the knob space; pass the matching --knob-space")
        task = first_missing_task(self.rows, ctx.tasks)
        if task is not None:
            raise HarnessError(f"policy 'oracle': {table.source} has no per-sample results for task '{task}' "
                               f"(it has: {', '.join(sorted(self.rows))})")
        self.table_source = table.source
        self.counts = {"answered": 0, "unanswerable": 0, "unseen": 0}

    def _cost_matrix(self, rows: list[TableRow], sub) -> np.ndarray:
        max_new = int(self.context.max_new_tokens)
        if self.cost == "estimated":
            def out_tokens(inp, j):
                s = rows[j].samples.get(inp.sample_id)
                if s is not None and s.output_tokens is not None:
                    return s.output_tokens
                m = rows[j].mean_output_tokens
                return max_new if m is None else max(1, round(m))

            return estimate_matrix(self.context.estimator, sub, [r.knobs for r in rows], out_tokens)
        cost = np.full((len(sub), len(rows)), np.inf)
        for j, r in enumerate(rows):
            measured = [s.measured_ms for s in r.samples.values() if s.measured_ms is not None]
            mean = float(np.mean(measured)) if measured else np.inf
            for i, inp in enumerate(sub):
                s = r.samples.get(inp.sample_id)
                cost[i, j] = s.measured_ms if s is not None and s.measured_ms is not None else mean
        return cost

    def choose(self, inputs):
        out: list = [None] * len(inputs)
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, inp in enumerate(inputs):
            task = inp.task.lower()
            if task not in self.rows:
                out[i] = PolicyFailure(f"policy 'oracle': the sweep has no per-sample results for task '{inp.task}'")
            else:
                by_task[task].append(i)
        for task, idx in by_task.items():
            rows = self.rows[task]
            sub = [inputs[i] for i in idx]
            cost = self._cost_matrix(rows, sub)
            for row_i, i in enumerate(idx):
                sid = inputs[i].sample_id
                seen = any(sid in r.samples for r in rows)
                scores = [r.samples[sid].score if sid in r.samples else None for r in rows]
                # rows sorted by static cost: ties -> less work
                best, ok = cheapest_correct(scores, cost[row_i], [r.metric for r in rows], self.threshold)
                out[i] = rows[best].knobs
                self.counts["answered" if ok else ("unanswerable" if seen else "unseen")] += 1
        return out

    def describe(self) -> dict:
        return {"name": self.name, "args": {"threshold": self.threshold, "cost": self.cost},
                "accuracy_table": self.table_source, **self.counts}
