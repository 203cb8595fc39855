"""Dealing work to the ranks of a torchrun job, balanced by estimated cost.

- ``harness run`` (:class:`SampleShard`): per run directory, rank 0 prepares every unfinished sample,
  lets the policy choose its knobs once, and plans the batches exactly as a one-process run would
  (groups by configuration, ordered by prompt length, cut at ``--batch-size``). Whole batches are
  dealt to the ranks, longest first to the least-loaded rank. A rank's share keeps the plan's order,
  so it switches configurations as rarely as the one-process run, and every batch holds the same
  samples as there: predictions do not depend on the number of ranks. Each rank writes its lines
  to its part file; rank 0 folds the parts into ``samples.jsonl`` in data order and writes the one
  ``summary.json`` (timing gathered from every rank).
- ``harness sweep`` (:func:`deal_units`): whole (task, configuration) run directories are dealt to
  the ranks the same way; each rank writes its own run directories as a one-process sweep would.

Cost: the latency estimator's predicted total per sample when one is fitted; otherwise a proxy,
(prompt tokens + 4 per output token allowed) x active blocks x (1 + top_k). A batch costs its longest member times its
size (padding). Only relative costs matter.
"""

from __future__ import annotations

import heapq
from typing import Any, Sequence

from harness.knobs import TIER_INDEX, Knobs

PROXY_TEXT_TOKENS = 64  # a typical prompt, for sweep units whose samples are not tokenized yet


def deal(costs: Sequence[float], n_ranks: int) -> list[int]:
    """The owner rank of each item: longest first to the least-loaded rank (greedy LPT; ties go to
    the lower rank and the earlier item, so every process computes the same deal)."""
    owners = [0] * len(costs)
    heap = [(0.0, r) for r in range(n_ranks)]
    for i in sorted(range(len(costs)), key=lambda j: (-float(costs[j]), j)):
        load, r = heapq.heappop(heap)
        owners[i] = r
        heapq.heappush(heap, (load + float(costs[i]), r))
    return owners


def sample_costs(rows: list[tuple[Knobs, int, int, int]], estimator=None) -> list[float]:
    """Cost per ``(knobs, text tokens, vision tokens, output tokens)``: the estimator's total_ms, or
    the token proxy for all rows when there is no estimator or it fails."""
    if estimator is not None and rows:
        from harness.latency.estimator import EstimatorInput

        try:
            est = estimator.predict([EstimatorInput(top_k=k.top_k, num_active_blocks=k.num_blocks,
                                                    tier_idx=TIER_INDEX.get(k.tier, 1), vision_tokens=int(v),
                                                    text_tokens=int(t), output_tokens=int(o)) for k, t, v, o in rows])
            costs = [float(e.total_ms) for e in est]
            if len(costs) == len(rows) and all(c >= 0 for c in costs):
                return costs
        except Exception:  # an estimator that cannot answer only costs balance, not correctness
            pass
    return [float(t + v + 4 * o) * k.num_blocks * (1 + k.top_k) for k, t, v, o in rows]


class WholeRun:
    """The one-process placement: every sample of the run here, in the plan's order. The runner talks
    to a placement only (this or :class:`SampleShard`), so it never asks whether it runs under torchrun."""

    rewrites_samples = False  # samples.jsonl is written line by line in place

    def split(self, runner, items: list, first_batch_id: int, max_new: int):
        """-> (items that failed before generation, [(knobs, batch, batch_id)]): the whole plan."""
        runner.select(items, max_new)
        early = [it for it in items if it.error is not None]
        return early, [(k, b, first_batch_id + j) for j, (k, b) in enumerate(runner.plan(items))]

    def progress(self, task_name: str, n_total: int, items: list, early: list, plan: list) -> tuple[str, int, int]:
        """(label, samples in all, samples already done) for the progress bar."""
        return task_name, n_total, n_total - len(items)

    def attach(self, record):
        return record

    def merge(self, record, timing: dict) -> dict:
        return timing

    def share_summary(self, summary: dict | None) -> dict | None:
        return summary


class SampleShard:
    """One run directory's samples over the ranks of ``world`` (see the module docstring)."""

    rewrites_samples = True  # rank 0 folds the part files into samples.jsonl in data order

    def __init__(self, world):
        self.world = world
        self.rank = world.rank

    def split(self, runner, items: list, first_batch_id: int, max_new: int):
        """-> (items that failed before generation, to be recorded here; [(knobs, batch, batch_id)]
        of this rank). Rank 0 plans; the others prepare only their own samples."""
        by_index = {it.index: it for it in items}

        def plan_on_main():
            runner.select(items, max_new)
            plan = runner.plan(items)
            rows = [[(k, it.pinput.text_tokens, it.pinput.vision_tokens_by_tier.get(k.tier, 0), max_new) for it in b]
                    for k, b in plan]
            flat = sample_costs([r for rs in rows for r in rs], runner.estimator)
            costs, pos = [], 0
            for b in rows:
                costs.append(max(flat[pos:pos + len(b)] or [0.0]) * len(b))
                pos += len(b)
            owners = deal(costs, self.world.size)
            return [(k, [it.index for it in b], owners[j]) for j, (k, b) in enumerate(plan)]

        plan = self.world.from_main(f"planning {runner.task.name}", plan_on_main)
        early = [it for it in items if it.error is not None] if self.world.is_main else []
        mine = [(k, [by_index[i] for i in idx], first_batch_id + j) for j, (k, idx, owner) in enumerate(plan)
                if owner == self.rank]
        if not self.world.is_main:
            own = [it for _, batch, _ in mine for it in batch]
            runner.prepare(own)
            for knobs, batch, _ in mine:
                for it in batch:
                    it.knobs = knobs
            early = [it for it in own if it.error is not None]  # a sample this rank could not prepare
            mine = [(k, [it for it in b if it.error is None], bid) for k, b, bid in mine]
            mine = [m for m in mine if m[1]]
        return early, mine

    def progress(self, task_name: str, n_total: int, items: list, early: list, plan: list) -> tuple[str, int, int]:
        return f"{task_name} [rank {self.rank}]", len(early) + sum(len(b) for _, b, _ in plan), 0

    def attach(self, record):
        """This rank appends its sample lines to its own part file of ``record``'s folder."""
        from harness.parts import part_path

        record.write_to(part_path(record.folder, self.rank))
        return record

    def merge(self, record, timing: dict) -> dict | None:
        """After this rank's share: every rank's timing goes to rank 0, which folds the part files
        into ``samples.jsonl`` (``record.finished`` then holds every line) and returns the merged
        timing; the other ranks return None and wait for :meth:`share_summary`."""
        from harness.errors import HarnessError
        from harness.parts import fold_parts, part_path
        from harness.records import RunRecord

        record.close()
        written = len(record.finished) - record.resumed_from
        stats = {"rank": self.rank, "device": self.world.device, "written": written, **(timing or {})}
        gathered = self.world.gather(f"finishing {record.folder}", stats, after_work=True)
        if not self.world.is_main:
            return None
        finished = RunRecord._read_finished(record.samples_path)
        found = fold_parts(record.folder, finished, record.samples_path)
        for st in gathered:
            path = part_path(record.folder, st["rank"])
            if found.get(path.name, 0) < st["written"]:
                raise HarnessError(f"rank {st['rank']} wrote {st['written']} sample lines to {path} but rank 0 finds "
                                   f"{found.get(path.name, 0)}: --output must be on a filesystem shared by every node")
        record.finished = finished
        return merged_timing(gathered)

    def share_summary(self, summary: dict | None) -> dict:
        """Rank 0's summary on every rank."""
        import torch.distributed as dist

        box = [summary]
        self.world._call("sharing the summary",
                         lambda: dist.broadcast_object_list(box, src=0, group=self.world.group))
        return box[0]


def merged_timing(per_rank: list[dict]) -> dict:
    """One timing block for a unit run on several ranks: sums of work, the slowest rank's wall
    time, and each rank's own figures under ``ranks``."""
    keep = ("rank", "device", "written", "samples", "batches", "loop_s", "generate_s", "model_ms", "warmup_s")
    out: dict[str, Any] = dict(per_rank[0])
    for key in ("generate_s", "model_ms", "batches", "samples"):
        out[key] = sum(st.get(key) or 0 for st in per_rank)
    for key in ("loop_s", "warmup_s"):
        out[key] = max(st.get(key) or 0 for st in per_rank)
    out["world_size"] = len(per_rank)
    out["ranks"] = [{k: st.get(k) for k in keep} for st in per_rank]
    for key in ("rank", "device", "written"):
        out.pop(key, None)
    return out


def unit_cost(unit, n_remaining: int, info, max_new: int, estimator=None) -> float:
    """A sweep unit's cost: remaining samples x the cost of a typical sample at its configuration."""
    k = unit.knobs
    vision = int((getattr(info, "vision_tokens", None) or {}).get(k.tier, 0)) if k is not None else 0
    one = sample_costs([(k, PROXY_TEXT_TOKENS, vision, max_new)], estimator)[0] if k is not None else 1.0
    return one * max(0, int(n_remaining))


def unit_execution(ctx, reporter):
    """For each unit run by ``harness.api.run_units``: (the :class:`SampleShard` of its samples, or
    None, which the runner takes as :class:`WholeRun`, when units are whole or there is no world;
    this rank; the reporter factory, rank 0's only)."""
    world = ctx.world
    if world is None:
        return None, 0, reporter
    return (None if ctx.units_dealt else SampleShard(world)), world.rank, (reporter if world.is_main else None)


def wait_for_ranks(ctx, n_done: int) -> None:
    """After a sweep's dealt units: rank 0 goes on once every rank has finished its own."""
    if ctx.world is not None:
        ctx.world.gather("finishing the sweep", n_done, after_work=True)


def deal_units(ctx, units: list, remaining: list[int]) -> list:
    """Under torchrun, this rank's share of the sweep's pending ``units`` (``remaining``: samples left
    in each; dealt on rank 0, so every rank agrees); from now on every step treats units as whole."""
    if ctx.world is None:
        return units
    ctx.units_dealt = True
    est = ctx.estimator if type(ctx.estimator).__name__ != "PendingFit" else None
    costs = [unit_cost(u, n, ctx.info, ctx.max_new(u.task), est) for u, n in zip(units, remaining)]
    owners = ctx.world.from_main("dealing the sweep's run directories", lambda: deal(costs, ctx.world.size))
    return [u for u, r in zip(units, owners) if r == ctx.world.rank]
