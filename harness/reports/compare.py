"""Judging a controller (``harness compare POLICY_RUN... --sweep SWEEP_DIR``): a policy run against
the fixed-configuration frontier of a sweep and against the oracle, per task, on the sample ids
they share, with intervals, its latency budget and its own cost.

Everything is read through :mod:`harness.reports.rundirs`; the frontier arithmetic lives in
:mod:`harness.reports.frontier`, the statistics in :mod:`harness.stats`, a sample's own latency in
:func:`harness.latency.aggregate.per_sample_ms` and the oracle's choice in
:func:`harness.policies.oracle.cheapest_correct`. The figures and their definitions are in
:data:`DEFINITIONS` (printed in ``compare.md``) and ``docs/compare.md``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.errors import HarnessError
from harness.reports.comparable import check_comparable, check_unique_configs
from harness.reports.frontier import Point, curve_area, gap_closed, hull_at, hull_curve, step_at, upper_curve, upper_hull
from harness.reports.rundirs import RunInfo
from harness.stats import N_BOOT, bootstrap_ci, budget_adherence, describe, paired_bootstrap_diff, paired_win_share

FORMAT = "harness-compare/1"
LATENCY_KINDS = ("measured", "estimated_batch1", "estimated", "measured_per_batch")
LATENCY_LABELS = {
    "measured": "measured at batch 1",
    "estimated_batch1": "estimated at batch 1 (estimated_batch1)",
    "estimated": "the runs' own per-sample estimate (`estimated`; runs without estimated_batch1)",
    "measured_per_batch": "measured per batch (the latency of each sample's whole batch, not its own)",
}
CHOICES = ("auto",) + LATENCY_KINDS[:3]

DEFINITIONS = [
    ("compared samples", "the sample ids that every policy run of the task and every fixed configuration of the sweep "
                         "scored; a failed sample counts as a wrong answer (score 0) and has no latency."),
    ("latency", "a sample's own latency, as a controller deciding for one request sees it: measured at batch 1 when "
                "every run is a batch-1 run, else each line's estimated_batch1 (the execution mode's batch-1 estimate "
                "of that sample alone); the label on each table says which. Means, p50 and p90 are over the compared "
                "samples that have a latency."),
    ("score [95% CI]", "the mean main score over the compared samples, with a bootstrap 95% interval over samples."),
    ("frontier_step", "the best single fixed configuration whose mean latency is at most the policy's (ties: the "
                      "faster one). None when the policy is faster than every fixed configuration."),
    ("frontier_hull", "the upper convex hull of the fixed configurations (score against mean latency, kept "
                      "non-decreasing), read at the policy's mean latency. A point on it is what a trivial controller "
                      "gets by sending each sample to one of two configurations by a weighted coin; the table names "
                      "the two and the weight of the slower one. Left of the cheapest configuration and right of the "
                      "slowest the hull is clamped to its end point, and the table says so."),
    ("policy - X [95% CI]", "the mean over compared samples of the policy's score minus X's (for the hull: the "
                            "weighted mix of its two configurations' scores on that sample), with a paired bootstrap "
                            "95% interval (pairs resampled together)."),
    ("P(beats)", "the share of bootstrap resamples of the sample pairs in which the policy's mean is above X's "
                 "(a tie counts half)."),
    ("oracle", "per sample, the cheapest fixed configuration of the sweep (on the table's latency) that answered it "
               "correctly, the rule of `--policy oracle` (binary metrics: score 1; graded: above 0.5, or --threshold); "
               "a sample no configuration answers gets the cheapest. Its score and mean latency."),
    ("gap_closed", "(policy - frontier_hull) / (oracle - frontier_hull): the share of the oracle's headroom over a "
                   "trivial controller that the policy captures (1 = as good as the oracle, 0 = no better than "
                   "mixing two fixed configurations, below 0 = worse). Undefined when the oracle is no better than "
                   "the hull."),
    ("area vs hull", "with several runs of one policy (e.g. at several budgets): the area under the policy's "
                     "accuracy-latency curve (straight lines between its runs) and under the hull, over the latency "
                     "range both cover, each divided by the range's width (a mean score over the range)."),
    ("budget", "--budget-ms, else the run's own latency budget: the share of compared samples within it with a "
               "Wilson 95% interval, and the mean and p90 overshoot (ms) of the samples above it; counted on "
               "measured batch-1 latency (batch-1 runs) and on estimated_batch1, each labelled."),
    ("controller cost", "policy_ms (each sample's share of the policy.choose call that decided it) and host_ms "
                        "(its share of the host preparation at the chosen tier: tokenising, image preprocessing, copy "
                        "to the device): mean and p90, and each mean as a share of the mean model latency. Never folded "
                        "into the model's latency; runs from before they were measured say 'not measured'."),
]


# -- reading ------------------------------------------------------------------------------------
@dataclass
class RunData:
    """One run's per-sample view: main scores, failures, lines and latency of each kind, by id."""

    run: RunInfo
    scores: dict[str, float]
    failed: set[str]
    lines: dict[str, dict]
    latency: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def per_batch(self) -> bool:
        return int(self.run.batch_size or 1) > 1


def read_run(run: RunInfo) -> RunData:
    from harness.latency.aggregate import per_sample_ms

    scores, failed = run.sample_scores()
    lines = {str(ln["id"]): ln for ln in run.sample_records()}
    data = RunData(run=run, scores=scores, failed=set(failed), lines=lines)
    ok = [ln for ln in lines.values() if not ln.get("error")]
    per_batch = data.per_batch or any((ln.get("measured") or {}).get("scope") == "batch" for ln in ok)
    data.latency["measured"] = {} if per_batch else per_sample_ms(ok, False)[0]
    data.latency["estimated_batch1"] = per_sample_ms(ok, True)[0]
    est = {}
    for ln in ok:
        e = ln.get("estimated") or {}
        if e.get("total_ms") is not None and (e.get("per") or ("batch" if per_batch else "sample")) == "sample":
            est[str(ln["id"])] = float(e["total_ms"])
    data.latency["estimated"] = est
    data.latency["measured_per_batch"] = {str(ln["id"]): float(ln["measured"]["total_ms"]) for ln in ok
                                          if (ln.get("measured") or {}).get("total_ms") is not None}
    return data


def _budget_of(run: RunInfo) -> float | None:
    s = run.summary
    for value in ((s.get("latency_budget") or {}).get("budget_ms"), s.get("latency_budget_ms"),
                  (s.get("run_config") or {}).get("latency_budget_ms")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _policy_name(run: RunInfo) -> str:
    p = run.summary.get("policy")
    if run.config.knobs is not None:
        return f"fixed {run.label}"
    if isinstance(p, dict) and (p.get("name") or p.get("spec")):
        return str(p.get("name") or p.get("spec"))
    return str(run.config.policy)


def _device_label(run: RunInfo) -> str:
    return re.sub(r" batch \d+$", "", run.environment_label)


def _check_device(runs: Sequence[RunInfo], what: str) -> None:
    """One device and dtype (batch size may differ: batched runs are compared on estimated_batch1)."""
    groups: dict[tuple, list[RunInfo]] = {}
    for r in runs:
        groups.setdefault((r.device_key, r.dtype), []).append(r)
    if len(groups) <= 1:
        return
    parts = []
    for key in sorted(groups, key=str):
        rs = groups[key]
        more = f" +{len(rs) - 2} more" if len(rs) > 2 else ""
        parts.append(f"'{_device_label(rs[0])}' ({', '.join(str(r.path) for r in rs[:2])}{more})")
    raise HarnessError(f"{what} mixes runs that cannot be compared: devices differ (latency differs by device and "
                       f"dtype): {' vs '.join(parts)}; pass a policy run and a sweep made on one device")


# -- the latency a task is compared on ----------------------------------------------------------
def choose_latency(datas: Sequence[RunData], common: Sequence[str], wanted: str, task: str) -> tuple[str, str]:
    """-> (kind, reason): the first kind every run has for all its non-failed compared samples."""

    def covers(d: RunData, kind: str) -> bool:
        need = [i for i in common if i not in d.failed]
        return all(i in d.latency[kind] for i in need)

    if wanted != "auto":
        for d in datas:
            if not covers(d, wanted):
                hint = (" (a batched run has no per-sample measurement: use estimated_batch1)" if wanted == "measured"
                        and d.per_batch else "")
                raise HarnessError(f"--latency {wanted}: run '{d.run.path}' of task '{task}' has no {wanted} latency for "
                                   f"some compared samples{hint}; use --latency auto")
        return wanted, "chosen with --latency"
    batched = [d for d in datas if d.per_batch]
    for kind in LATENCY_KINDS:
        if all(covers(d, kind) for d in datas):
            if kind == "measured":
                return kind, "every run is a batch-1 run"
            if kind == "estimated_batch1":
                why = (f"{len(batched)} of the runs are batched" if batched else
                       "some runs lack a per-sample measurement")
                return kind, f"{why}: each sample's batch-1 estimate, the same for every run"
            if kind == "estimated":
                return kind, "the runs predate estimated_batch1; the runs' estimator stands in, per sample"
            return kind, ("no per-sample latency is common to all runs (batched runs from before estimated_batch1): "
                          "the figures are per batch and say little about a controller")
    raise HarnessError(f"task '{task}': the policy and sweep runs share no latency (measured or estimated) on the "
                       f"compared samples; re-run them with an estimator or at --batch-size 1")


def _lat_stats(values: Sequence[float], n_boot: int, seed: int, ci: bool = True) -> dict:
    """Mean, p50, p90, n; with ``ci`` the mean's bootstrap 95% interval (the policy's plot cross)."""
    d = describe(values)
    ci = bootstrap_ci(values, n_boot=n_boot, seed=seed) if d["n"] and ci else None
    return {"mean": d["mean"], "p50": d["p50"], "p90": d["p90"], "n": d["n"],
            "mean_ci95": list(ci) if ci and all(math.isfinite(v) for v in ci) else None}


def _ci(values: Sequence[float], n_boot: int, seed: int):
    lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None


def _paired(policy: Sequence[float], other: Sequence[float], n_boot: int, seed: int) -> dict:
    mean, lo, hi = paired_bootstrap_diff(policy, other, n_boot=n_boot, seed=seed)
    return {"diff": mean, "diff_ci95": [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None,
            "p_beats": paired_win_share(policy, other, n_boot=n_boot, seed=seed)}


def _histogram(labels: Sequence[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for lab in labels:
        counts[str(lab)] = counts.get(str(lab), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# -- one task -----------------------------------------------------------------------------------
@dataclass
class TaskComparison:
    doc: dict
    points: list[Point]  # fixed configurations (mean latency, score) for the plot

    @property
    def task(self) -> str:
        return self.doc["task"]


def compare_task(task: str, policies: Sequence[RunInfo], sweep: Sequence[RunInfo], *, budget_ms: float | None = None,
                 latency: str = "auto", seed: int = 0, n_boot: int = N_BOOT, threshold: float | None = None) -> TaskComparison:
    from harness.policies.costs import static_cost
    from harness.policies.oracle import cheapest_correct

    what = f"harness compare of task '{task}'"
    check_comparable(list(policies) + list(sweep), ("model", "fingerprint"), what)
    _check_device(list(policies) + list(sweep), what)
    check_unique_configs(sweep, f"the sweep of {what}")
    sweep = sorted(sweep, key=lambda r: (static_cost(r.config.knobs), r.config.sort_key()))
    pdatas = [read_run(r) for r in policies]
    sdatas = [read_run(r) for r in sweep]
    common_set = set.intersection(*(set(d.scores) for d in pdatas + sdatas))
    if not common_set:
        raise HarnessError(f"{what}: the policy runs and the sweep share no scored sample id; run the policy on the "
                           f"sweep's data (same --data, --limit and --subset-seed)")
    common = sorted(common_set)
    left_out = {str(d.run.path): len(d.scores) - len(common) for d in pdatas + sdatas if len(d.scores) > len(common)}
    kind, reason = choose_latency(pdatas + sdatas, common, latency, task)
    metric = sweep[0].metric
    notes: list[str] = []
    busy = [d.run for d in pdatas + sdatas if (d.run.summary.get("host_load") or {}).get("busy")]
    if busy and kind in ("measured", "measured_per_batch"):
        notes.append(f"{len(busy)} of {len(pdatas) + len(sdatas)} runs were measured on a busy CPU (host_load.busy): "
                     "their measured latency is inflated and varies from run to run; --latency estimated_batch1 "
                     "compares on the execution mode's estimate instead")
    if left_out:
        notes.append(f"{sum(left_out.values())} sample score(s) outside the {len(common)} compared samples left out "
                     f"({len(left_out)} run(s))")

    # fixed configurations
    configs, points = [], []
    cfg_scores: list[np.ndarray] = []
    cfg_lat: list[dict[str, float]] = []
    for d in sdatas:
        s = np.asarray([d.scores[i] for i in common], dtype=float)
        lat = {i: d.latency[kind][i] for i in common if i in d.latency[kind]}
        lstats = _lat_stats(list(lat.values()), n_boot, seed, ci=False)
        if lstats["mean"] is None:
            raise HarnessError(f"{what}: sweep run '{d.run.path}' has no {kind} latency on the compared samples "
                               "(all failed?); re-run it")
        cfg_scores.append(s)
        cfg_lat.append(lat)
        points.append(Point(d.run.label, float(lstats["mean"]), float(s.mean())))
        configs.append({"config": d.run.label, "run_dir": str(d.run.path), "score": float(s.mean()),
                        "score_ci95": _ci(s, n_boot, seed), "latency_ms": lstats,
                        "n_failed": sum(1 for i in common if i in d.failed)})
    hull = upper_hull(points)
    from harness.reports.pareto import frontier as pareto_flags

    flags = pareto_flags([(p.score, p.latency) for p in points])
    for c, p, (opt, _) in zip(configs, points, flags):
        c["on_step_frontier"] = bool(opt)
        c["on_hull"] = p in hull

    # the oracle
    costs_mean = [p.latency for p in points]
    o_scores, o_lat, o_pick, answered = [], [], [], 0
    for k, i in enumerate(common):
        sc = [float(cfg_scores[j][k]) for j in range(len(sdatas))]
        cost = [cfg_lat[j].get(i, costs_mean[j]) for j in range(len(sdatas))]
        j, ok = cheapest_correct(sc, cost, metric, threshold)
        answered += int(ok)
        o_scores.append(sc[j])
        o_lat.append(cost[j])
        o_pick.append(points[j].label)
    oracle = {"score": float(np.mean(o_scores)), "score_ci95": _ci(o_scores, n_boot, seed),
              "latency_ms": _lat_stats(o_lat, n_boot, seed, ci=False), "answered": answered,
              "unanswerable": len(common) - answered, "configs_used": _histogram(o_pick), "threshold": threshold}

    # each policy run
    prows = []
    for d in pdatas:
        prows.append(_policy_entry(d, common, kind, points, cfg_scores, oracle, budget_ms, n_boot, seed))

    curves = _curves(prows, points)
    doc = {"task": task, "metric": metric, "model": sweep[0].model, "fingerprint": sweep[0].fingerprint,
           "data_source": sweep[0].data_source, "environment": _device_label(sweep[0]),
           "latency": {"kind": kind, "label": LATENCY_LABELS[kind], "reason": reason},
           "n_compared": len(common), "left_out": left_out, "configs": configs,
           "hull": [{"config": p.label, "latency_ms": p.latency, "score": p.score} for p in hull],
           "oracle": oracle, "policies": prows, "curves": curves, "notes": notes}
    return TaskComparison(doc=doc, points=points)


def _policy_entry(d: RunData, common: list[str], kind: str, points: list[Point], cfg_scores: list[np.ndarray],
                  oracle: dict, budget_ms: float | None, n_boot: int, seed: int) -> dict:
    from harness.latency.aggregate import controller_block

    run = d.run
    s = np.asarray([d.scores[i] for i in common], dtype=float)
    lat = [d.latency[kind][i] for i in common if i in d.latency[kind]]
    lstats = _lat_stats(lat, n_boot, seed)
    entry: dict = {"run_dir": str(run.path), "label": run.label, "policy": _policy_name(run),
                   "batch_size": run.batch_size, "n": len(common), "n_failed": sum(1 for i in common if i in d.failed),
                   "score": float(s.mean()), "score_ci95": _ci(s, n_boot, seed), "latency_ms": lstats,
                   "configs_used": _histogram((d.lines.get(i) or {}).get("config") for i in common), "notes": []}
    x = lstats["mean"]
    if x is None:
        raise HarnessError(f"policy run '{run.path}' has no {kind} latency on the compared samples (all failed?); "
                           "nothing to place on the frontier")
    # step
    step = step_at(points, x)
    if step is None:
        entry["frontier_step"] = {"config": None, "score": None, "latency_ms": None, "diff": None, "diff_ci95": None,
                                  "p_beats": None,
                                  "note": "faster than every fixed configuration: no single configuration fits within "
                                          "the policy's mean latency"}
    else:
        j = points.index(step)
        entry["frontier_step"] = {"config": step.label, "score": step.score, "latency_ms": step.latency,
                                  **_paired(s, cfg_scores[j], n_boot, seed), "note": None}
    # hull
    hv = hull_at(points, x)
    lo, hi = points.index(hv.lo), points.index(hv.hi)
    mix = (1.0 - hv.weight_hi) * cfg_scores[lo] + hv.weight_hi * cfg_scores[hi]
    entry["frontier_hull"] = {**hv.to_dict(), **_paired(s, mix, n_boot, seed)}
    gc, why = gap_closed(float(s.mean()), hv.score, oracle["score"])
    entry["gap_closed"], entry["gap_closed_reason"] = gc, why
    if hv.clamped:
        entry["notes"].append(f"gap_closed is against the clamped hull ({hv.note})")
    # budget
    budget, source = (budget_ms, "--budget-ms") if budget_ms is not None else (_budget_of(run), "the run's budget")
    if budget is None:
        entry["budget"] = None
    else:
        block = {"budget_ms": budget, "source": source}
        for k in ("measured", "estimated_batch1"):
            vals = [d.latency[k][i] for i in common if i in d.latency[k]]
            if vals:
                block[k] = {**budget_adherence(vals, budget), "label": LATENCY_LABELS[k]}
            else:
                block[k] = {"n": 0, "label": LATENCY_LABELS[k],
                            "note": ("the run is batched: no per-sample measurement" if k == "measured" else
                                     "the run has no estimated_batch1 (no estimator, or an older run)")}
        entry["budget"] = block
    # controller cost
    cb = controller_block([d.lines[i] for i in common if i in d.lines], d.per_batch)
    entry["controller_ms"] = cb if cb is not None else {"note": "not measured (policy_ms and host_ms are missing: a run "
                                                                "from before they were recorded)"}
    return entry


def _curves(prows: list[dict], points: list[Point]) -> list[dict]:
    """Area under each multi-run policy's curve against the hull's, over the shared latency range."""
    groups: dict[str, list[dict]] = {}
    for p in prows:
        groups.setdefault(p["policy"], []).append(p)
    out = []
    hx, hy = hull_curve(points)
    for name, rows in sorted(groups.items()):
        if len(rows) < 2:
            continue
        px, py = upper_curve([(r["latency_ms"]["mean"], r["score"]) for r in rows])
        entry = {"policy": name, "runs": [r["run_dir"] for r in rows], "range_ms": None, "policy_area": None,
                 "hull_area": None, "policy_mean_score": None, "hull_mean_score": None, "difference": None, "note": None}
        lo, hi = max(px[0], hx[0]), min(px[-1], hx[-1])
        if len(px) < 2:
            entry["note"] = "its runs share one mean latency: no curve"
        elif not hi > lo:
            entry["note"] = "its latency range does not overlap the fixed configurations'"
        else:
            pa, ha = curve_area(px, py, lo, hi), curve_area(hx, hy, lo, hi)
            entry.update(range_ms=[lo, hi], policy_area=pa, hull_area=ha, policy_mean_score=pa / (hi - lo),
                         hull_mean_score=ha / (hi - lo), difference=(pa - ha) / (hi - lo))
        out.append(entry)
    return out


# -- all tasks ----------------------------------------------------------------------------------
def build(policy_runs: Sequence[RunInfo], sweep_runs: Sequence[RunInfo], *, budget_ms: float | None = None,
          latency: str = "auto", seed: int = 0, n_boot: int = N_BOOT, threshold: float | None = None,
          sweep_label: str = "the sweep") -> list[TaskComparison]:
    if latency not in CHOICES:
        raise HarnessError(f"--latency {latency!r} is not one of {', '.join(CHOICES)}")
    if n_boot < 100:
        raise HarnessError(f"--n-boot {n_boot} is too few resamples for a 95% interval; use at least 100 (default {N_BOOT})")
    policy_paths = {r.path.resolve() for r in policy_runs}
    fixed = [r for r in sweep_runs if r.config.knobs is not None and r.path.resolve() not in policy_paths]
    also_policy = [r for r in sweep_runs if r.config.knobs is not None and r.path.resolve() in policy_paths]
    if not fixed:
        raise HarnessError(f"{sweep_label} holds no fixed-configuration run; pass the output folder of `harness sweep`")
    by_task: dict[str, list[RunInfo]] = {}
    for r in fixed:
        by_task.setdefault(r.task, []).append(r)
    pol_by_task: dict[str, list[RunInfo]] = {}
    for r in policy_runs:
        pol_by_task.setdefault(r.task, []).append(r)
    out = []
    for task in sorted(pol_by_task):
        if task not in by_task:
            raise HarnessError(f"{sweep_label} has no fixed configuration of task '{task}' (policy run "
                               f"'{pol_by_task[task][0].path}'); it has: {', '.join(sorted(by_task))}")
        pols = sorted(pol_by_task[task], key=lambda r: (r.config.sort_key(), str(r.path)))
        t = compare_task(task, pols, by_task[task], budget_ms=budget_ms, latency=latency, seed=seed,
                         n_boot=n_boot, threshold=threshold)
        mine = [r for r in also_policy if r.task == task]
        if mine:
            t.doc["notes"].append(f"{len(mine)} fixed run(s) given as policy runs ({', '.join(r.label for r in mine)}) "
                                  "are left out of the sweep's configurations (a run is not compared with itself)")
        out.append(t)
    return out


def to_json(tables: Sequence[TaskComparison], *, seed: int, n_boot: int) -> str:
    doc = {"format": FORMAT, "seed": seed, "n_boot": n_boot, "definitions": dict(DEFINITIONS),
           "tasks": [t.doc for t in tables]}
    return json.dumps(doc, indent=2, default=_plain) + "\n"


def _plain(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o).__name__)


# -- text ---------------------------------------------------------------------------------------
def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _ms(v) -> str:
    return "n/a" if v is None else (f"{v:.1f}" if abs(v) >= 1 else f"{v:.3f}")


def _ci_text(ci, digits: int = 3, signed: bool = False) -> str:
    if not ci:
        return ""
    fmt = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _diff_text(block: dict) -> str:
    if block.get("diff") is None:
        return "n/a"
    return f"{block['diff']:+.3f}{_ci_text(block.get('diff_ci95'), signed=True)}, P(beats) {block['p_beats']:.2f}"


def _configs_used(hist: dict, top: int = 4) -> str:
    items = list(hist.items())
    text = ", ".join(f"{k} x{v}" for k, v in items[:top])
    return text + (f", +{len(items) - top} more" if len(items) > top else "")


def _budget_text(block: dict | None, kind: str) -> str:
    if block is None:
        return "no budget (pass --budget-ms)"
    b = block.get(kind) or {}
    if not b.get("n"):
        return f"not counted: {b.get('note', 'no latency')}"
    ci = b.get("share_within_ci95")
    ci_text = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
    text = (f"{_pct(b['share_within'])} within {b['budget_ms']:g} ms{ci_text} "
            f"({b['within']}/{b['n']})")
    if b.get("over"):
        text += f"; overshoot mean {_ms(b['overshoot_mean_ms'])} ms, p90 {_ms(b['overshoot_p90_ms'])} ms"
    return text


def _cost_text(cb: dict, part: str) -> str:
    blk = cb.get(part) if isinstance(cb, dict) else None
    if not blk or not blk.get("n"):
        return "not measured"
    share = cb.get(f"{part}_share_of_model")
    src = cb.get("model_source") or "model"
    return (f"mean {_ms(blk['mean'])} ms, p90 {_ms(blk['p90'])} ms"
            + (f" ({_pct(share)} of the mean model latency, {src})" if share is not None else ""))


def policy_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """The per-task table: one row per figure, one column per policy run."""
    pols = doc["policies"]
    labels = [p["label"].removeprefix("policy:") for p in pols]
    header = ["figure"] + [f"{lab} ({Path(p['run_dir']).name})" if labels.count(lab) > 1 else lab
                           for lab, p in zip(labels, pols)]
    lat_label = doc["latency"]["kind"]

    def row(name, fn):
        return [name] + [fn(p) for p in pols]

    def step(p):
        st = p["frontier_step"]
        if st["config"] is None:
            return "none (" + st["note"] + ")"
        return f"{st['config']}: {_f(st['score'])} at {_ms(st['latency_ms'])} ms"

    def hull(p):
        h = p["frontier_hull"]
        if h["lo"] == h["hi"] or h["weight_hi"] in (0.0, 1.0):
            cfg = h["hi"] if h["weight_hi"] == 1.0 else h["lo"]
            text = f"{_f(h['score'])} = {cfg}"
        else:
            text = (f"{_f(h['score'])} = {1 - h['weight_hi']:.2f} x {h['lo']} + {h['weight_hi']:.2f} x {h['hi']}")
        return text + (f" ({h['note']})" if h.get("note") else "")

    def gap(p):
        return _f(p["gap_closed"], 2) if p["gap_closed"] is not None else f"undefined: {p['gap_closed_reason']}"

    rows = [
        row("run", lambda p: Path(p["run_dir"]).name),
        row("score [95% CI]", lambda p: _f(p["score"]) + _ci_text(p["score_ci95"])),
        row(f"latency ms ({lat_label}) mean [95% CI] / p50 / p90",
            lambda p: f"{_ms(p['latency_ms']['mean'])}{_ci_text(p['latency_ms']['mean_ci95'], 1)} / "
                      f"{_ms(p['latency_ms']['p50'])} / {_ms(p['latency_ms']['p90'])}"),
        row("configurations chosen", lambda p: _configs_used(p["configs_used"])),
        row("frontier_step", step),
        row("policy - step [95% CI]", lambda p: _diff_text(p["frontier_step"])),
        row("frontier_hull", hull),
        row("policy - hull [95% CI]", lambda p: _diff_text(p["frontier_hull"])),
        row("gap_closed", gap),
        row("budget (measured at batch 1)", lambda p: _budget_text(p["budget"], "measured")),
        row("budget (estimated_batch1)", lambda p: _budget_text(p["budget"], "estimated_batch1")),
        row("controller policy_ms", lambda p: _cost_text(p["controller_ms"], "policy")),
        row("controller host_ms", lambda p: _cost_text(p["controller_ms"], "host")),
        row("failed samples", lambda p: f"{p['n_failed']} of {p['n']}"),
    ]
    if any(p["notes"] for p in pols):
        rows.append(row("notes", lambda p: "; ".join(p["notes"]) or "-"))
    return header, rows


def config_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    header = ["config", "score [95% CI]", "mean ms", "p50 ms", "p90 ms", "step frontier", "hull vertex"]
    rows = [[c["config"], _f(c["score"]) + _ci_text(c["score_ci95"]), _ms(c["latency_ms"]["mean"]),
             _ms(c["latency_ms"]["p50"]), _ms(c["latency_ms"]["p90"]), "yes" if c["on_step_frontier"] else "",
             "yes" if c["on_hull"] else ""] for c in doc["configs"]]
    return header, rows


def oracle_line(doc: dict) -> str:
    o = doc["oracle"]
    return (f"Oracle: {_f(o['score'])}{_ci_text(o['score_ci95'])} at mean {_ms(o['latency_ms']['mean'])} ms "
            f"({o['answered']} of {doc['n_compared']} samples answered by some configuration; "
            f"{_configs_used(o['configs_used'], 3)}).")


def curve_lines(doc: dict) -> list[str]:
    out = []
    for c in doc["curves"]:
        if c["range_ms"] is None:
            out.append(f"Area vs hull, {c['policy']} ({len(c['runs'])} runs): undefined, {c['note']}.")
        else:
            lo, hi = c["range_ms"]
            out.append(f"Area vs hull, {c['policy']} ({len(c['runs'])} runs) over {_ms(lo)}-{_ms(hi)} ms: mean score "
                       f"{_f(c['policy_mean_score'])} against the hull's {_f(c['hull_mean_score'])} "
                       f"({c['difference']:+.3f}; areas {c['policy_area']:.2f} and {c['hull_area']:.2f} score x ms).")
    return out


def heading(doc: dict) -> str:
    lat = doc["latency"]
    return (f"Model `{doc['model']}`, items {doc['data_source'] or 'data'} `{doc['fingerprint'][:12]}`, "
            f"{doc['environment']}; {doc['n_compared']} samples compared; {len(doc['configs'])} fixed configurations. "
            f"Latency: **{lat['label']}** ({lat['reason']}).")


def to_markdown(tables: Sequence[TaskComparison], *, seed: int, n_boot: int) -> str:
    from harness.reports.pareto import md_table

    out = ["# Controller comparison", "",
           f"Paired bootstrap: {n_boot} resamples, seed {seed}. Definitions at the end.", ""]
    for t in tables:
        d = t.doc
        out += [f"## {d['task']} ({d['metric']})", "", heading(d), "", md_table(*policy_rows(d)), "",
                oracle_line(d), ""]
        out += [line + "" for line in curve_lines(d)] + ([""] if d["curves"] else [])
        out += ["Fixed configurations (latency on the same basis):", "", md_table(*config_rows(d)), ""]
        out += [f"Note: {n}" for n in d["notes"]] + ([""] if d["notes"] else [])
    out += ["## Definitions", ""]
    out += [f"- **{name}**: {text}" for name, text in DEFINITIONS]
    return "\n".join(out) + "\n"


# -- plot ---------------------------------------------------------------------------------------
def figure(t: TaskComparison):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = t.doc
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    pts = t.points
    xs = [p.latency for p in pts]
    ax.scatter(xs, [p.score for p in pts], s=22, color="0.55", zorder=2, label="fixed configurations")
    x_lo, x_hi = min(xs), max(xs)
    for p in pts:
        right = x_hi > x_lo and p.latency > x_lo + 0.6 * (x_hi - x_lo)
        ax.annotate(p.label, (p.latency, p.score), textcoords="offset points", xytext=(-4 if right else 4, -9),
                    ha="right" if right else "left", fontsize=6, color="0.4")
    front = sorted((c["latency_ms"]["mean"], c["score"]) for c in d["configs"] if c["on_step_frontier"])
    if front:
        fx, fy = zip(*front)
        ax.step(list(fx) + [x_hi], list(fy) + [fy[-1]], where="post", color="tab:red", lw=1.1, label="step frontier")
    hx, hy = hull_curve(pts)
    ax.plot(hx, hy, color="tab:green", lw=1.3, ls="--", label="hull (coin between two configurations)")
    o = d["oracle"]
    ax.scatter([o["latency_ms"]["mean"]], [o["score"]], marker="*", s=160, color="gold", edgecolor="black",
               zorder=5, label="oracle")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, p in enumerate(d["policies"]):
        lat, sc = p["latency_ms"], p["score"]
        yerr = [[sc - p["score_ci95"][0]], [p["score_ci95"][1] - sc]] if p["score_ci95"] else None
        xerr = [[lat["mean"] - lat["mean_ci95"][0]], [lat["mean_ci95"][1] - lat["mean"]]] if lat["mean_ci95"] else None
        ax.errorbar([lat["mean"]], [sc], xerr=xerr, yerr=yerr, fmt="o", ms=7, capsize=3, lw=1.2,
                    color=colors[k % len(colors)], zorder=6, label=("policy " + p["label"].removeprefix("policy:"))[:60])
    budgets = sorted({p["budget"]["budget_ms"] for p in d["policies"] if p.get("budget")})
    for b in budgets:
        ax.axvline(b, color="tab:purple", lw=1.0, ls=":", label=f"budget {b:g} ms")
    ax.set_xlabel(f"mean latency per sample (ms): {d['latency']['label']}")
    ax.set_ylabel(f"score ({d['metric']})")
    ax.set_title(f"{d['task']}: {d['model']} ({d['environment']}), {d['n_compared']} samples", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.08, y=0.08)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def plot(t: TaskComparison, path: str | Path) -> Path:
    from harness.reports.pareto import save_figure

    return save_figure(figure(t), path)


def write_outputs(tables: Sequence[TaskComparison], out_dir: str | Path, *, seed: int, n_boot: int,
                  png: bool = True) -> list[Path]:
    """``compare.md``, ``compare.json`` and ``compare-<task>.png`` in ``out_dir``."""
    from harness.jsonio import atomic_write_text

    out = Path(out_dir)
    written = []
    for name, text in (("compare.md", to_markdown(tables, seed=seed, n_boot=n_boot)),
                       ("compare.json", to_json(tables, seed=seed, n_boot=n_boot))):
        atomic_write_text(out / name, text)
        written.append(out / name)
    if png:
        for t in tables:
            written.append(plot(t, out / f"compare-{t.task}.png"))
    return written
