"""Whether runs may share a table: one model, one item set, one device per Pareto table or report,
one run per configuration, and a one-line error naming the difference when not."""

from __future__ import annotations

from typing import Sequence

from harness.errors import HarnessError
from harness.reports.rundirs import RunInfo

_FIELDS = {
    "task": ("tasks", lambda r: r.task),
    "model": ("models",
              lambda r: f"{r.model}@{r.summary.get('model_fingerprint')}" if r.summary.get("model_fingerprint") else r.model),
    "fingerprint": ("item sets (data fingerprints)", lambda r: f"{r.fingerprint[:12]} ({r.data_source})" if r.data_source else r.fingerprint[:12]),
    "environment": ("devices (measured latency differs by device, dtype and batch size)", lambda r: r.environment_label),
}


def describe_difference(runs: Sequence[RunInfo], field_name: str) -> str | None:
    """None when all runs agree on ``field_name``; else a short text naming values and runs."""
    title, get = _FIELDS[field_name]
    groups: dict[str, list[str]] = {}
    for r in runs:
        groups.setdefault(get(r), []).append(str(r.path))
    if len(groups) <= 1:
        return None
    parts = []
    for value in sorted(groups):
        dirs = groups[value]
        more = f" +{len(dirs) - 2} more" if len(dirs) > 2 else ""
        parts.append(f"'{value}' ({', '.join(dirs[:2])}{more})")
    return f"{title} differ: " + " vs ".join(parts)


def check_comparable(runs: Sequence[RunInfo], fields: Sequence[str], what: str) -> None:
    """Raise a one-line HarnessError when ``runs`` differ in any of ``fields``
    (``task``, ``model``, ``fingerprint``, ``environment``)."""
    for f in fields:
        diff = describe_difference(runs, f)
        if diff:
            raise HarnessError(f"{what} mixes runs that cannot be compared: {diff}; pass runs of one {f if f != 'fingerprint' else 'item set'}")


def check_unique_configs(runs: Sequence[RunInfo], what: str) -> None:
    """Two runs of the same configuration in one table is ambiguous: name them."""
    seen: dict[tuple, RunInfo] = {}
    for r in runs:
        key = (r.task, r.model, r.config)
        if key in seen:
            raise HarnessError(f"{what}: configuration {r.label} of task {r.task} appears twice "
                               f"('{seen[key].path}' and '{r.path}'); pass one run per configuration")
        seen[key] = r


def group_by_task(runs: Sequence[RunInfo]) -> dict[str, list[RunInfo]]:
    out: dict[str, list[RunInfo]] = {}
    for r in runs:
        out.setdefault(r.task, []).append(r)
    return {t: sorted(out[t], key=lambda r: (r.model, r.config.sort_key(), str(r.path))) for t in sorted(out)}
