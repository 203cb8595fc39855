"""``budget``: the most accurate configuration that fits a latency budget, per sample.

For each sample, every candidate configuration (the knob space entries that a previous sweep
scored for the sample's task, ``--accuracy-table``) is priced with the latency estimator on the
sample's own prompt: its text tokens, the vision tokens of the configuration's tier, and the
expected output tokens (the mean the sweep measured for that task and configuration, else
``max_new_tokens``; ``--policy-arg output_tokens=max`` always uses ``max_new_tokens``). Among the
configurations whose estimate is within the budget (a per-sample ``PolicyInput.latency_budget_ms``,
else ``--latency-budget-ms`` or ``--policy-arg budget_ms=...``; ``margin=0.1`` keeps 10% headroom) it takes the best sweep
accuracy, ties broken by lower estimated latency. When nothing fits, the cheapest configuration.

A missing estimator, accuracy table or budget is a one-line error at build time, before the model loads.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from harness.errors import HarnessError
from harness.policies import register
from harness.policies.base import Param, Policy, PolicyFailure
from harness.policies.costs import estimate_matrix, first_missing_task, rows_by_task
from harness.policies.table import TableRow, load_accuracy_table


def _margin(text: str) -> float:
    v = float(text)
    if not 0.0 <= v < 1.0:
        raise ValueError(text)
    return v


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise ValueError(text)
    return v


@register("budget")
class BudgetPolicy(Policy):
    """Best sweep accuracy whose estimated latency fits the budget; else the cheapest."""

    summary = ("best sweep accuracy within --latency-budget-ms by the latency estimator, else the cheapest "
               "(needs --accuracy-table and an estimator)")
    params = {
        "budget_ms": Param(_positive, None, "budget in ms when --latency-budget-ms is not given"),
        "margin": Param(_margin, 0.0, "headroom: fit within budget*(1-margin), 0<=margin<1"),
        "output_tokens": Param(str, "table", "expected output tokens: table (sweep mean) or max (max_new_tokens)",
                               choices=("table", "max")),
    }

    def setup(self) -> None:
        ctx = self.context
        if ctx.estimator is None:
            raise HarnessError("policy 'budget' needs a latency estimator; pass --estimator (or fit one with "
                               "harness profile) so configurations can be priced")
        if not ctx.accuracy_table:
            raise HarnessError("policy 'budget' needs --accuracy-table: the output folder of a sweep over the "
                               "knob space (run directories) or the JSON written by harness pareto")
        table = load_accuracy_table(ctx.accuracy_table).select_model(ctx.model_info).resolve_tiers(ctx.default_tier)
        self.candidates: dict[str, list[TableRow]] = rows_by_task(table.rows, ctx)
        if not self.candidates:
            raise HarnessError(f"policy 'budget': no configuration of accuracy table {table.source} is in the knob space; "
                               f"sweep the knob space first or pass the matching --knob-space")
        task = first_missing_task(self.candidates, ctx.tasks)
        if task is not None:
            raise HarnessError(f"policy 'budget': accuracy table {table.source} has no results for task '{task}' "
                               f"(it has: {', '.join(sorted(self.candidates))}); sweep that task first")
        if self.budget_ms is None:
            self.budget_ms = ctx.latency_budget_ms
        if self.budget_ms is None:
            raise HarnessError("policy 'budget' needs a latency budget; pass --latency-budget-ms MS "
                               "(or --policy-arg budget_ms=MS)")
        self.table_source = table.source
        self.n_chosen = 0
        self.n_fallback = 0

    def _budget(self, inp) -> float:
        return inp.latency_budget_ms if inp.latency_budget_ms is not None else self.budget_ms

    def choose(self, inputs):
        out: list = [None] * len(inputs)
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, inp in enumerate(inputs):
            if inp.task.lower() not in self.candidates:
                out[i] = PolicyFailure(f"policy 'budget': the accuracy table has no results for task '{inp.task}'; "
                                       f"sweep that task first")
            else:
                by_task[inp.task.lower()].append(i)
        max_new = int(self.context.max_new_tokens)
        for task, idx in by_task.items():
            rows = self.candidates[task]
            configs = [r.knobs for r in rows]

            def expected_out(_inp, j, rows=rows):
                m = rows[j].mean_output_tokens
                return max_new if self.output_tokens == "max" or m is None else max(1, min(max_new, round(m)))

            sub = [inputs[i] for i in idx]
            cost = estimate_matrix(self.context.estimator, sub, configs, expected_out)
            acc = np.asarray([r.score for r in rows])
            for row_i, i in enumerate(idx):
                limit = self._budget(inputs[i]) * (1.0 - self.margin)
                fits = cost[row_i] <= limit
                if fits.any():
                    cand = np.flatnonzero(fits)
                    # best accuracy, then lowest estimated latency, then fewest blocks x top_k (rows are sorted)
                    best = min(cand, key=lambda j: (-acc[j], cost[row_i, j], j))
                    self.n_chosen += 1
                else:
                    best = int(np.argmin(cost[row_i]))
                    self.n_fallback += 1
                out[i] = configs[best]
        return out

    def describe(self) -> dict:
        return {"name": self.name,
                "args": {"budget_ms": self.budget_ms, "margin": self.margin, "output_tokens": self.output_tokens},
                "accuracy_table": self.table_source,
                "candidates": {t: [str(r.knobs) for r in rows] for t, rows in sorted(self.candidates.items())},
                "within_budget": self.n_chosen, "fallback_cheapest": self.n_fallback}
