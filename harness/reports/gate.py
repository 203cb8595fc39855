"""The regression gate (``harness gate``): candidate runs against a committed baseline.

Baseline file (``harness gate --write-baseline FILE RUN_DIRS...``), JSON, deterministic::

    {"format": "harness-gate-baseline/1",
     "runs": [{"task", "metric", "score_name", "model", "config", "knobs", "policy",
               "fingerprint", "data_source", "device", "dtype", "batch_size", "environment",
               "device_key" (CPU model and cores, or GPU model), "model_fingerprint" (weights),
               "n", "score", "latency_p50_ms": {"measured", "estimated"},
               "failed": [ids], "scores": {id: main score},
               "predictions": {id: short sha256 of the prediction text}}]}

Candidate runs are matched to baseline entries by (task, configuration or policy). A baseline
configuration with no candidate run fails (``allow_missing_configs`` reports it instead). For each
pair:

- **Samples**: baseline sample ids missing from the candidate fail the pair (a candidate that
  silently dropped samples must not pass); with ``allow_missing_samples`` they are reported and
  the rest is gated. Ids only in the candidate are reported.
- **Accuracy**: paired bootstrap (:func:`harness.stats.paired_bootstrap_diff`) of candidate minus
  baseline main scores over the sample ids both have; a *regression* when the mean drop exceeds
  ``tolerance`` (absolute) AND the 95% CI of the difference lies below zero. Failed samples count
  as 0 (a failure is a wrong answer). A significant rise is reported as ``improved``; with
  ``two_sided`` it fails as ``changed`` (for the harness's own CI, where any significant change of
  a fixed model's score means the harness changed).
- **Predictions**: the share of common samples whose prediction text differs from the baseline's
  (hashes stored in the baseline); with ``max_changed`` set, a larger share fails. On a
  deterministic device (CPU, float32) a break such as an ignored knob changes predictions even
  when the score happens not to move.
- **Latency**: ratio of the candidate's p50 total latency to the baseline's; a *regression* when
  it exceeds ``latency_tolerance``. Measured latency is only comparable on the baseline's device,
  dtype and batch size. Anywhere else the row says ``not comparable (device)`` (or dtype, batch
  size): a slowdown cannot be seen there. Estimated latency is still compared, and a larger
  estimate (more tokens for the same configuration) still fails.

A different model (name or weights fingerprint) is bad input (exit 2) unless
``allow_model_change``: then the new model is gated against the old baseline with the same paired
test on the sample ids both runs have. A different item set (data fingerprint) is always bad input.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from harness.errors import HarnessError
from harness.jsonio import atomic_write_text, read_json
from harness.reports.comparable import check_unique_configs
from harness.reports.rundirs import RunInfo
from harness.stats import paired_bootstrap_diff

FORMAT = "harness-gate-baseline/1"
DEFAULT_TOLERANCE = 0.02
DEFAULT_LATENCY_TOLERANCE = 1.5


# -- baseline file ------------------------------------------------------------------------------
def prediction_hash(prediction) -> str | None:
    if prediction is None:
        return None
    return hashlib.sha256(str(prediction).encode("utf-8")).hexdigest()[:12]


def prediction_hashes(run: RunInfo) -> dict[str, str | None]:
    return {str(r["id"]): prediction_hash(r.get("prediction")) for r in run.sample_records()}


def _score_name(run: RunInfo) -> str | None:
    try:
        return run.main_score_name()
    except HarnessError:
        return None


def baseline_entry(run: RunInfo) -> dict:
    scores, failed = run.sample_scores()
    preds = prediction_hashes(run)
    if not scores:
        raise HarnessError(f"run dir '{run.path}' has no scored samples (unlabelled data or all failed); "
                           "a baseline needs per-sample scores, run a labelled split")
    return {
        "task": run.task, "metric": run.metric, "score_name": _score_name(run), "model": run.model,
        "config": run.label, "knobs": run.config.knobs.to_dict() if run.config.knobs else None,
        "policy": run.config.policy, "fingerprint": run.fingerprint, "data_source": run.data_source,
        "device": run.device, "dtype": run.dtype, "batch_size": run.batch_size,
        "environment": run.environment_label, "device_key": run.device_key,
        "model_fingerprint": run.summary.get("model_fingerprint"), "n": run.n, "score": run.score,
        "latency_p50_ms": {"measured": run.lat("measured"), "estimated": run.lat("estimated")},
        "failed": failed, "scores": {k: scores[k] for k in sorted(scores)},
        "predictions": {k: preds[k] for k in sorted(preds)},
    }


def write_baseline(path: str | Path, runs: Sequence[RunInfo]) -> dict:
    check_unique_configs(runs, "the baseline")
    entries = sorted((baseline_entry(r) for r in runs), key=lambda e: (e["task"], e["config"]))
    doc = {"format": FORMAT, "runs": entries}
    try:
        atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        raise HarnessError(f"cannot write baseline '{path}': {exc.strerror or exc}; pass a writable path")
    return doc


def read_baseline(path: str | Path) -> list[dict]:
    doc = read_json(path, what="baseline")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("runs"), list):
        raise HarnessError(f"'{path}' is not a gate baseline ({FORMAT}); write one with `harness gate --write-baseline {path} RUN_DIRS...`")
    need = ("task", "config", "model", "fingerprint", "scores", "environment", "latency_p50_ms")
    for i, e in enumerate(doc["runs"]):
        missing = [k for k in need if not isinstance(e, dict) or k not in e]
        if missing:
            raise HarnessError(f"baseline '{path}': entry {i} lacks {', '.join(missing)}; rewrite it with --write-baseline")
        if not isinstance(e["scores"], dict):
            raise HarnessError(f"baseline '{path}': entry {i} ({e['task']} {e['config']}) has malformed scores; rewrite it")
    return doc["runs"]


# -- comparison ---------------------------------------------------------------------------------
@dataclass
class GateResult:
    task: str
    config: str
    model: str
    run_dir: str | None = None
    n_common: int = 0
    missing_in_candidate: list[str] = field(default_factory=list)
    new_in_candidate: list[str] = field(default_factory=list)
    samples: str = "ok"  # ok | missing (fails) | missing (allowed)
    failed_candidate: int = 0
    base_model: str | None = None  # set when the model changed (--allow-model-change)
    base_score: float | None = None
    cand_score: float | None = None
    diff: float | None = None
    ci: tuple[float, float] | None = None
    accuracy: str = "ok"  # ok | improved | regression | changed (two-sided) | not run
    n_changed_predictions: int | None = None  # common samples whose prediction text differs
    predictions: str = "ok"  # ok | changed (above max_changed) | skipped
    latency_kind: str | None = None  # measured | estimated
    latency_comparable: bool | None = None  # False: measured latency cannot be compared (other device)
    base_environment: str | None = None
    cand_environment: str | None = None
    base_latency: float | None = None
    cand_latency: float | None = None
    ratio: float | None = None
    latency: str = "ok"  # ok | regression | skipped | not comparable (device|dtype|batch size)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return (self.accuracy in ("regression", "changed", "not run") or self.latency == "regression"
                or self.predictions == "changed" or self.samples == "missing")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["ci"] = list(self.ci) if self.ci else None
        d["n_missing"] = len(self.missing_in_candidate)
        d["failed"] = self.failed
        return d


def _model_id(name: str, fingerprint: str | None) -> str:
    return f"{name}@{fingerprint}" if fingerprint else name


def _check_model(run: RunInfo, base: dict, res: GateResult, where: str, allow_model_change: bool) -> None:
    """Same model name, and same weights where both sides recorded a fingerprint."""
    cand_fp, base_fp = run.summary.get("model_fingerprint"), base.get("model_fingerprint")
    same = run.model == base["model"] and (not cand_fp or not base_fp or cand_fp == base_fp)
    if same:
        return
    cand, old = _model_id(run.model, cand_fp if base_fp else None), _model_id(base["model"], base_fp if cand_fp else None)
    if not allow_model_change:
        raise HarnessError(f"gate {where}: the model differs from the baseline's ('{cand}' in '{run.path}' vs '{old}'); "
                           "gate runs of the baseline's model, rewrite the baseline, or pass --allow-model-change "
                           "to compare the new model with the old baseline on their common samples")
    res.base_model = old
    res.notes.append(f"model changed ({old} -> {cand}): paired comparison on the common samples")


def _environment_difference(run: RunInfo, base: dict) -> str | None:
    """None when measured latency is comparable with the baseline's; else what differs. Devices are
    compared on their identity (CPU model and cores, GPU model: :func:`harness.environment.identity_key`);
    a baseline from before identities were recorded is compared on its environment label."""
    if base.get("dtype") is not None and run.dtype != base.get("dtype"):
        return "dtype"
    if base.get("batch_size") is not None and run.batch_size != base.get("batch_size"):
        return "batch size"
    same_device = (run.device_key == base["device_key"]) if base.get("device_key") else \
        (run.environment_label == base["environment"])
    return None if same_device else "device"


def _compare_latency(run: RunInfo, base: dict, res: GateResult, latency_tolerance: float | None) -> None:
    if latency_tolerance is None:
        res.latency = "skipped"
        res.notes.append("latency not gated (--no-latency)")
        return
    differs = _environment_difference(run, base)
    res.base_environment, res.cand_environment = base["environment"], run.environment_label
    res.latency_comparable = differs is None
    res.latency_kind = "measured" if differs is None else "estimated"
    res.cand_latency = run.lat(res.latency_kind)
    res.base_latency = (base.get("latency_p50_ms") or {}).get(res.latency_kind)
    if differs is not None:
        res.latency = f"not comparable ({differs})"
        res.notes.append(f"{differs} differs from the baseline's ({run.environment_label} vs {base['environment']}): "
                         "measured latency not comparable; only the estimate is checked")
    if res.cand_latency is None or res.base_latency is None or not res.base_latency > 0:
        if differs is None:
            res.latency = "skipped"
        side = "candidate" if res.cand_latency is None else "baseline"
        res.notes.append(f"no {res.latency_kind} latency in the {side}: latency not compared")
        return
    res.ratio = res.cand_latency / res.base_latency
    if res.ratio > latency_tolerance:
        res.latency = "regression"


def compare(run: RunInfo, base: dict, *, tolerance: float, latency_tolerance: float | None,
            seed: int = 0, two_sided: bool = False, max_changed: float | None = None,
            allow_missing_samples: bool = False, allow_model_change: bool = False) -> GateResult:
    """One candidate run against its baseline entry."""
    where = f"{run.task} {run.label}"
    res = GateResult(task=run.task, config=run.label, model=run.model, run_dir=str(run.path))
    _check_model(run, base, res, where, allow_model_change)
    if run.fingerprint != base["fingerprint"]:
        raise HarnessError(f"gate {where}: the item set differs from the baseline's (fingerprint {run.fingerprint[:12]} "
                           f"in '{run.path}' vs {base['fingerprint'][:12]}); run the same data, --limit and --subset-seed as the baseline")
    cand, failed = run.sample_scores()
    res.failed_candidate = len(failed)
    bscores = {str(k): float(v) for k, v in base["scores"].items()}
    common = sorted(set(cand) & set(bscores))
    res.missing_in_candidate = sorted(set(bscores) - set(cand))
    res.new_in_candidate = sorted(set(cand) - set(bscores))
    res.n_common = len(common)
    if not common:
        raise HarnessError(f"gate {where}: no sample id in '{run.path}' is in the baseline; "
                           "run the same data as the baseline or rewrite it")
    c = [cand[i] for i in common]
    b = [bscores[i] for i in common]
    res.cand_score = sum(c) / len(c)
    res.base_score = sum(b) / len(b)
    mean, lo, hi = paired_bootstrap_diff(c, b, seed=seed)
    res.diff, res.ci = mean, (lo, hi)
    if -mean > tolerance and hi < 0:
        res.accuracy = "regression"
    elif mean > tolerance and lo > 0:
        res.accuracy = "changed" if two_sided else "improved"
    base_preds = base.get("predictions")
    if isinstance(base_preds, dict):
        cand_preds = prediction_hashes(run)
        both = [i for i in common if i in cand_preds and str(i) in base_preds]
        res.n_changed_predictions = sum(1 for i in both if cand_preds[i] != base_preds[str(i)])
        if res.n_changed_predictions:
            res.notes.append(f"{res.n_changed_predictions} of {len(both)} prediction(s) differ from the baseline's")
        if max_changed is not None and both and res.n_changed_predictions / len(both) > max_changed:
            res.predictions = "changed"
    else:
        res.predictions = "skipped"
    if res.missing_in_candidate:
        n_miss = len(res.missing_in_candidate)
        res.samples = "missing (allowed)" if allow_missing_samples else "missing"
        res.notes.append(f"{n_miss} of {len(bscores)} baseline sample(s) missing in the candidate"
                         + (" (allowed: gated on the rest)" if allow_missing_samples else
                            " (fails; --allow-missing-samples gates the rest)"))
    if res.new_in_candidate:
        res.notes.append(f"{len(res.new_in_candidate)} candidate sample(s) not in the baseline")
    if failed:
        res.notes.append(f"{len(failed)} failed sample(s) in the candidate, scored 0")
    _compare_latency(run, base, res, latency_tolerance)
    return res


def run_gate(runs: Sequence[RunInfo], baseline: list[dict], *, tolerance: float = DEFAULT_TOLERANCE,
             latency_tolerance: float | None = DEFAULT_LATENCY_TOLERANCE, allow_missing_configs: bool = False,
             allow_missing_samples: bool = False, allow_model_change: bool = False,
             seed: int = 0, two_sided: bool = False, max_changed: float | None = None) -> list[GateResult]:
    if max_changed is not None and not 0.0 <= max_changed <= 1.0:
        raise HarnessError(f"--max-changed {max_changed} must be a share between 0 and 1 (e.g. 0.05)")
    if tolerance < 0 or (isinstance(tolerance, float) and math.isnan(tolerance)):
        raise HarnessError(f"--tolerance {tolerance} must be >= 0 (an absolute score drop, e.g. 0.02)")
    if latency_tolerance is not None and not latency_tolerance >= 1.0:
        raise HarnessError(f"--latency-tolerance {latency_tolerance} must be a ratio >= 1 (e.g. 1.5 = 50% slower)")
    check_unique_configs(runs, "the gate")
    index: dict[tuple[str, str], dict] = {}
    for e in baseline:
        index[(e["task"], e["config"])] = e
    results = []
    matched = set()
    for r in runs:
        key = (r.task, r.label)
        base = index.get(key)
        if base is None:
            known = ", ".join(f"{t} {c}" for t, c in sorted(index)) or "none"
            raise HarnessError(f"gate: run '{r.path}' ({r.task} {r.label}) has no baseline entry (baseline has: {known}); "
                               "add it with `harness gate --write-baseline`")
        matched.add(key)
        results.append(compare(r, base, tolerance=tolerance, latency_tolerance=latency_tolerance, seed=seed,
                               two_sided=two_sided, max_changed=max_changed,
                               allow_missing_samples=allow_missing_samples, allow_model_change=allow_model_change))
    for key in sorted(set(index) - matched):
        e = index[key]
        res = GateResult(task=e["task"], config=e["config"], model=e["model"], base_score=e.get("score"),
                         accuracy="ok" if allow_missing_configs else "not run", latency="skipped", predictions="skipped")
        res.notes.append("in the baseline but not among the runs"
                         + (" (allowed by --allow-missing-configs)" if allow_missing_configs
                            else " (fails; --allow-missing-configs reports it instead)"))
        results.append(res)
    results.sort(key=lambda x: (x.task, x.config))
    return results


def verdict(results: Sequence[GateResult]) -> bool:
    """True when the gate passes."""
    return not any(r.failed for r in results)
