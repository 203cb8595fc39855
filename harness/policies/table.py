"""Accuracy tables from a previous sweep (``--accuracy-table``), read by ``budget`` and ``oracle``.

Accepted inputs:

- a run directory (``summary.json`` + ``samples.jsonl``, docs/contracts.md), or a folder holding
  run directories at any depth (e.g. a ``harness sweep`` output folder);
- the JSON written by ``harness pareto`` (``{"tasks": [{"task": ..., "rows": [{"knobs": ...,
  "score": ..., "run_dir": ...}]}]}``), or any JSON whose objects carry ``knobs`` and ``score`` and
  a ``task`` (their own or an enclosing object's). A row whose ``run_dir`` still exists is read
  from that run directory (per-sample results, output tokens); others have aggregate scores only.

Runs of a policy (no fixed ``knobs``) are skipped: they do not describe one configuration.
One row per (task, model, configuration); when a sweep folder holds the same configuration more
than once, the run with more samples wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.errors import HarnessError
from harness.jsonio import read_json
from harness.knobs import Knobs


@dataclass
class SampleResult:
    """One sample of one configuration in a sweep."""

    score: float | None
    output_tokens: int | None = None
    text_tokens: int | None = None
    vision_tokens: int | None = None
    measured_ms: float | None = None  # total (prefill + decode) as recorded
    estimated_ms: float | None = None
    failed: bool = False


@dataclass
class TableRow:
    task: str
    model: str | None
    knobs: Knobs
    score: float
    metric: str | None = None
    n: int | None = None
    fingerprint: str | None = None
    source: str = ""
    mean_output_tokens: float | None = None
    samples: dict[str, SampleResult] = field(default_factory=dict)


@dataclass
class AccuracyTable:
    rows: list[TableRow]
    source: str

    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.rows})

    def models(self) -> list[str]:
        return sorted({r.model for r in self.rows if r.model})

    def has_samples(self) -> bool:
        return any(r.samples for r in self.rows)

    def select_model(self, model_info) -> "AccuracyTable":
        """Keep the rows of the model being evaluated. Rows of other models are dropped when any
        row names this model; a table of a single other model is used as is (names of the same
        weights differ between specs); a table of several models, none this one, is an error."""
        name = getattr(model_info, "name", None)
        models = self.models()
        if not models or name is None:
            return self
        same = [r for r in self.rows if r.model is None or _norm(r.model) == _norm(name)]
        if any(r.model is not None and _norm(r.model) == _norm(name) for r in self.rows):
            return AccuracyTable(same, self.source)
        if len(models) == 1:
            return self
        raise HarnessError(f"accuracy table {self.source} holds models {', '.join(models)}, not '{name}'; "
                           f"pass the sweep of the model you evaluate")

    def resolve_tiers(self, default_tier: str | None) -> "AccuracyTable":
        """Fill rows recorded without a tier with the model's default tier, then de-duplicate."""
        if default_tier is None:
            return self
        for r in self.rows:
            if r.knobs.tier is None:
                r.knobs = r.knobs.with_tier(default_tier)
        return AccuracyTable(_dedupe(self.rows), self.source)


def _norm(s: str | None) -> str:
    return (s or "").strip().lower()


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _dig(d: dict, *paths: str):
    """First present numeric value among dotted ``paths``."""
    for path in paths:
        cur: Any = d
        for part in path.split("."):
            if not isinstance(cur, dict) or part not in cur:
                cur = None
                break
            cur = cur[part]
        v = _num(cur)
        if v is not None:
            return v
    return None


def parse_knobs_field(value, tier: str | None = None, where: str = "") -> Knobs:
    if isinstance(value, dict):
        try:
            k = Knobs.from_dict(value)
        except (KeyError, TypeError, ValueError):
            raise HarnessError(f"{where}: knobs {value!r} need num_blocks and top_k")
        return k if k.tier is not None or tier is None else k.with_tier(tier)
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value if v is not None)
    try:
        k = Knobs.parse(str(value))
    except HarnessError as exc:
        raise HarnessError(f"{where}: {exc}")
    return k if k.tier is not None or tier is None else k.with_tier(tier)


def read_run_dir(run_dir: Path) -> TableRow | None:
    """One run directory -> a row (None for a policy run, which has no fixed knobs)."""
    from harness.reports.rundirs import load_run

    run = load_run(run_dir)
    if run.config.knobs is None or run.score is None:
        return None
    row = TableRow(task=run.task, model=run.model, knobs=run.config.knobs, score=float(run.score), metric=run.metric,
                   n=run.n, fingerprint=run.fingerprint, source=str(run.path))
    if not (run.path / "samples.jsonl").is_file():
        return row
    scores, _failed = run.sample_scores()  # main sub-score per id; failed samples score 0
    outs = []
    for line in run.sample_records():
        sid = str(line["id"])
        failed = bool(line.get("error"))
        res = SampleResult(
            score=scores.get(sid),
            output_tokens=_int(_dig(line, "output_tokens", "tokens.output")),
            text_tokens=_int(_dig(line, "text_tokens", "tokens.text")),
            vision_tokens=_int(_dig(line, "vision_tokens", "tokens.vision")),
            measured_ms=_dig(line, "measured.total_ms", "latency.measured.total_ms", "latency_ms.measured.total_ms",
                             "measured_total_ms"),
            estimated_ms=_dig(line, "estimated.total_ms", "latency.estimated.total_ms", "latency_ms.estimated.total_ms",
                              "estimated_total_ms"),
            failed=failed,
        )
        row.samples[sid] = res
        if res.output_tokens is not None and not failed:
            outs.append(res.output_tokens)
    if outs:
        row.mean_output_tokens = sum(outs) / len(outs)
    return row


def _int(v):
    return None if v is None else int(v)


def _rows_from_json(obj, source: str, task: str | None = None) -> Iterable[TableRow]:
    if isinstance(obj, list):
        for item in obj:
            yield from _rows_from_json(item, source, task)
    elif isinstance(obj, dict):
        if "knobs" in obj and ("score" in obj or "accuracy" in obj):
            run_dir = obj.get("run_dir")
            if obj.get("knobs") and isinstance(run_dir, str) and (Path(run_dir) / "summary.json").is_file():
                row = read_run_dir(Path(run_dir))  # per-sample results and output tokens
                if row is not None:
                    yield row
                return
            t = obj.get("task", task)
            score = _num(obj.get("score", obj.get("accuracy")))
            if isinstance(t, str) and score is not None and obj.get("knobs") not in (None, ""):
                model = obj.get("model")
                yield TableRow(task=t, model=model if isinstance(model, str) else None,
                               knobs=parse_knobs_field(obj["knobs"], obj.get("tier") if isinstance(obj.get("tier"), str) else None, source),
                               score=score, metric=obj.get("metric") if isinstance(obj.get("metric"), str) else None,
                               n=obj.get("n") if isinstance(obj.get("n"), int) else None,
                               fingerprint=obj.get("fingerprint"), source=source,
                               mean_output_tokens=_dig(obj, "mean_output_tokens", "output_tokens.mean", "tokens.output_mean"))
            return
        sub_task = obj.get("task") if isinstance(obj.get("task"), str) else task
        for value in obj.values():
            if isinstance(value, (list, dict)):
                yield from _rows_from_json(value, source, sub_task)


def _dedupe(rows: list[TableRow]) -> list[TableRow]:
    best: dict[tuple, TableRow] = {}
    for r in rows:
        key = (_norm(r.task), _norm(r.model), r.knobs)
        old = best.get(key)
        if old is None or (r.n or len(r.samples)) > (old.n or len(old.samples)):
            best[key] = r
    return list(best.values())


def load_accuracy_table(path: str | Path) -> AccuracyTable:
    """``--accuracy-table`` -> rows. Errors are one line naming the path and the fix."""
    p = Path(path)
    if not p.exists():
        raise HarnessError(f"accuracy table '{path}' does not exist; pass the output folder of a sweep "
                           f"(run directories) or the JSON written by harness pareto")
    rows: list[TableRow] = []
    if p.is_dir():
        from harness.reports.rundirs import find_run_dirs

        for run_dir in find_run_dirs([p], what="accuracy table run directories"):
            row = read_run_dir(run_dir)
            if row is not None:
                rows.append(row)
    else:
        rows = list(_rows_from_json(read_json(p, what="accuracy table"), str(p)))
    if not rows:
        raise HarnessError(f"accuracy table '{path}' has no fixed-configuration results (rows with task, knobs "
                           f"and score); pass a sweep over knobs")
    return AccuracyTable(_dedupe(rows), str(p))
