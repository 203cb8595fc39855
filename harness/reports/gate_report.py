"""Gate results as text: the table cells, the caveats a PASS does not cover, and markdown
(for CI step summaries). The comparison itself lives in :mod:`harness.reports.gate`."""

from __future__ import annotations

from typing import Sequence

from harness.reports.gate import GateResult, verdict
from harness.reports.pareto import md_table

# -- reporting ----------------------------------------------------------------------------------
COLUMNS = ("task", "config", "baseline", "candidate", "diff [95% CI]", "samples", "accuracy", "predictions changed",
           "latency p50 ms", "ratio", "latency", "notes")


def _f(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def cells(r: GateResult) -> list[str]:
    diff = "-" if r.diff is None else f"{r.diff:+.3f} [{r.ci[0]:+.3f}, {r.ci[1]:+.3f}]"
    samples = "-" if r.accuracy == "not run" else f"{r.n_common} paired"
    if r.missing_in_candidate:
        samples += f", {len(r.missing_in_candidate)} " + ("MISSING" if r.samples == "missing" else "missing (allowed)")
    if r.new_in_candidate:
        samples += f", {len(r.new_in_candidate)} new"
    lat = "-"
    if r.latency_kind and r.base_latency is not None and r.cand_latency is not None:
        lat = f"{r.base_latency:.1f} -> {r.cand_latency:.1f} ({r.latency_kind})"
    acc = r.accuracy.upper() if r.accuracy in ("regression", "changed", "not run") else r.accuracy
    pred = "-" if r.n_changed_predictions is None else f"{r.n_changed_predictions}/{r.n_common}"
    if r.predictions == "changed":
        pred += " CHANGED"
    return [r.task, r.config, _f(r.base_score), _f(r.cand_score), diff, samples, acc, pred,
            lat, "-" if r.ratio is None else f"{r.ratio:.2f}x", r.latency.upper() if r.latency == "regression" else r.latency,
            "; ".join(r.notes)]


def caveat_lines(results: Sequence[GateResult]) -> list[str]:
    """What a PASS does not cover: latency measured elsewhere, samples or configurations let go."""
    out = []
    incomparable = [r for r in results if r.latency_comparable is False]
    if incomparable:
        envs = sorted({r.cand_environment for r in incomparable if r.cand_environment})
        out.append(f"measured latency not comparable for {len(incomparable)} configuration(s): run on "
                   f"{', '.join(envs)}, baseline on {incomparable[0].base_environment}; a slowdown cannot be seen")
    allowed = [r for r in results if r.samples == "missing (allowed)"]
    if allowed:
        out.append(f"{sum(len(r.missing_in_candidate) for r in allowed)} baseline sample(s) missing in "
                   f"{len(allowed)} configuration(s), allowed by --allow-missing-samples")
    not_run = [r for r in results if r.run_dir is None and not r.failed]
    if not_run:
        out.append(f"{len(not_run)} baseline configuration(s) not run, allowed by --allow-missing-configs")
    changed = [r for r in results if r.base_model]
    if changed:
        out.append(f"model changed in {len(changed)} configuration(s) (--allow-model-change)")
    return out


def to_markdown(results: Sequence[GateResult], *, tolerance: float, latency_tolerance: float | None, baseline: str,
                two_sided: bool = False, max_changed: float | None = None) -> str:
    ok = verdict(results)
    n_bad = sum(r.failed for r in results)
    lat = "not gated" if latency_tolerance is None else f"fails on a p50 ratio above {latency_tolerance:g}x"
    acc = (f"a paired bootstrap change (either way) above {tolerance:g} with a 95% CI excluding zero" if two_sided
           else f"a paired bootstrap drop above {tolerance:g} with a 95% CI below zero")
    pred = "not gated" if max_changed is None else f"more than {max_changed:.0%} of predictions differ"
    lines = [f"## harness gate: {'PASS' if ok else 'FAIL'}", "",
             f"{len(results)} configuration(s) against `{baseline}`; {n_bad} failing. Accuracy fails on {acc}; "
             f"predictions: {pred}; latency: {lat}.", ""]
    caveats = caveat_lines(results)
    if caveats:
        lines += [f"- {c}" for c in caveats] + [""]
    lines += [md_table(COLUMNS, [cells(r) for r in results]), ""]
    return "\n".join(lines)
