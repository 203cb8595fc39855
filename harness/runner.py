"""The runner: samples -> policy -> groups by configuration -> batches -> backend -> metric ->
records.

Execution is grouped: every sample gets its knobs from the policy (``fixed`` gives all the same),
samples that chose the same configuration form a group, each group is ordered by prompt length
and run in batches of ``batch_size`` (left padding is the backend's job), and the loaded model is
switched between groups with ``backend.apply_knobs`` (no reload). Each finished sample is written
to ``samples.jsonl`` at once; the summary is computed from the file, so a resumed run ends with
the same summary as an uninterrupted one.

Failures are per sample: an unreadable image, a policy that raises or returns bad knobs, or a
backend exception for a batch marks the affected samples ``error`` and the run continues.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from harness.errors import HarnessError
from harness.knobs import TIER_INDEX, Knobs
from harness.types import GenOutput, GenRequest, Sample

from harness.policies.base import PolicyInput


@dataclass
class RunOptions:
    batch_size: int = 1
    style: str | None = None
    max_new_tokens: int | None = None  # None: the task's
    latency_budget_ms: float | None = None
    seed: int = 0
    policy_chunk: int = 256  # samples per policy.choose call
    warmup: int = 1  # untimed generate calls before the first timed batch (one-time costs out of sample 1)


class Reporter:
    """Progress and warnings; the CLI passes a rich implementation, tests a silent one."""

    def start(self, task: str, total: int, done: int) -> None:
        pass

    def advance(self, n: int, config: str) -> None:
        pass

    def stop(self) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass
class _Item:
    index: int  # position in the loaded data
    sample: Sample
    request: GenRequest | None = None
    pinput: Any = None
    knobs: Knobs | None = None
    error: str | None = None


def _knobs_of(value, info, default_tier: str) -> Knobs:
    """A policy's answer -> validated knobs with the tier resolved (raises HarnessError)."""
    if isinstance(value, str):
        value = Knobs.parse(value)
    if isinstance(value, dict):
        value = Knobs.from_dict(value)
    if not isinstance(value, Knobs):
        raise HarnessError(f"policy returned {type(value).__name__}, not Knobs")
    value.check_generic()
    value.validate(info.n_blocks, info.max_top_k, getattr(info, "min_blocks", None), getattr(info, "tiers", None),
                   model=getattr(info, "name", "the model"))
    return value if value.tier else value.with_tier(default_tier)


class Runner:
    """Runs one task on a loaded backend into one :class:`~harness.records.RunRecord`."""

    def __init__(self, backend, task, metric, policy, estimator, options: RunOptions, reporter: Reporter | None = None,
                 estimator_note: str | None = None):
        self.backend = backend
        self.task = task
        self.metric = metric
        self.policy = policy
        self.estimator = estimator
        self.options = options
        self.reporter = reporter or Reporter()
        self.estimator_note = estimator_note
        info = backend.info
        self.info = info
        self.default_tier = getattr(info, "default_tier", None) or "medium"
        self.tiers = list(getattr(info, "tiers", None) or [self.default_tier])
        self.timing = {"generate_s": 0.0, "model_ms": 0.0, "loop_s": 0.0, "batches": 0, "samples": 0}
        self._current_knobs: Knobs | None = None

    # -- preparation ------------------------------------------------------------------------------
    def _prepare(self, items: list[_Item]) -> None:
        style = self.options.style
        for it in items:
            s = it.sample
            if s.error:
                it.error = s.error
                continue
            try:
                prompt = self.task.prompt(s, style) if style is not None else self.task.prompt(s)
                it.request = GenRequest(prompt=prompt, image=s.image, sample_id=str(s.id))
                vt: dict[str, int] = {}
                text_tokens = 0
                for tier in self.tiers:
                    t_tok, v_tok = self.backend.count_tokens(it.request, tier)
                    vt[tier] = int(v_tok)
                    text_tokens = int(t_tok)
                meta = dict(s.meta or {})
                meta.setdefault("group", s.group)
                if s.choices is not None:
                    meta.setdefault("n_choices", len(s.choices))
                it.pinput = PolicyInput(sample_id=str(s.id), task=s.task, question=s.question, image_size=s.image_size,
                                        text_tokens=text_tokens, vision_tokens_by_tier=vt,
                                        latency_budget_ms=self.options.latency_budget_ms, meta=meta)
            except HarnessError as exc:
                it.error = str(exc)
            except Exception as exc:  # a bad image or a prompt the tokenizer cannot take
                it.error = f"preparing the sample failed: {type(exc).__name__}: {exc}"

    def _choose(self, items: list[_Item]) -> None:
        """``policy.choose`` in chunks through ``harness.policies.choose_safely``; when a chunk
        fails as a whole because the policy raised, each sample is retried alone so only the
        samples the policy cannot handle are recorded as failed."""
        ready = [it for it in items if it.error is None]
        chunk = max(1, self.options.policy_chunk)
        for start in range(0, len(ready), chunk):
            part = ready[start:start + chunk]
            results = self._choose_part(part)
            if len(part) > 1 and all(_is_failure(r) for r in results) and len({str(r) for r in results}) == 1 \
                    and " raised " in str(results[0]):
                for it in part:
                    self._assign(it, self._choose_part([it])[0])
                continue
            for it, r in zip(part, results):
                self._assign(it, r)

    def _choose_part(self, part: list[_Item]) -> list:
        from harness.policies import choose_safely

        return choose_safely(self.policy, [it.pinput for it in part], self.info)

    def _assign(self, it: _Item, result) -> None:
        if _is_failure(result):
            it.error = str(result)
            return
        try:
            it.knobs = _knobs_of(result, self.info, self.default_tier)
        except HarnessError as exc:
            it.error = f"policy '{_policy_name(self.policy)}' returned invalid knobs ({result}): {exc}"

    # -- execution --------------------------------------------------------------------------------
    def plan(self, items: list[_Item]) -> list[tuple[Knobs, list[_Item]]]:
        """Batches: groups by knobs (sorted), each ordered by prompt length, cut at batch_size."""
        groups: dict[Knobs, list[_Item]] = {}
        for it in items:
            if it.error is None and it.knobs is not None:
                groups.setdefault(it.knobs, []).append(it)
        bs = max(1, int(self.options.batch_size))
        batches = []
        for knobs in sorted(groups, key=lambda k: (k.num_blocks, k.top_k, TIER_INDEX.get(k.tier or "", 9), k.tier or "")):
            members = sorted(groups[knobs], key=lambda it: (self._length(it, knobs), it.index))
            for i in range(0, len(members), bs):
                batches.append((knobs, members[i:i + bs]))
        return batches

    @staticmethod
    def _length(it: _Item, knobs: Knobs) -> int:
        p = it.pinput
        return int(p.text_tokens) + int(p.vision_tokens_by_tier.get(knobs.tier, 0))

    def run(self, record, samples: Sequence[Sample]) -> dict:
        """Run every sample not yet in ``record`` and return the timing of this invocation."""
        t_loop = time.perf_counter()
        items = [_Item(i, s) for i, s in enumerate(samples) if str(s.id) not in record.finished]
        self.reporter.start(self.task.name, len(samples), len(samples) - len(items))
        self._prepare(items)
        self._choose(items)
        batch_id = 1 + max([int(x.get("batch_id") or 0) for x in record.finished.values()] or [0])
        # failures known before generation are recorded first, in data order
        for it in items:
            if it.error is not None:
                record.append(self._line(it, None, None, None, None))
                self.reporter.advance(1, "failed")
        max_new = self.options.max_new_tokens or int(getattr(self.task, "max_new_tokens", 16) or 16)
        plan = self.plan(items)
        t_warm = time.perf_counter()
        if plan and getattr(self.backend, "needs_warmup", True):
            self._warmup(plan[0][0], plan[0][1][0], max_new)
        self.timing["warmup_s"] = time.perf_counter() - t_warm
        for knobs, batch in plan:
            self._run_batch(record, knobs, batch, batch_id, max_new)
            batch_id += 1
        self.timing["loop_s"] = time.perf_counter() - t_loop - self.timing["warmup_s"]
        self.reporter.stop()
        return self.timing

    def _warmup(self, knobs: Knobs, item: _Item, max_new: int) -> None:
        """Untimed calls so one-time costs (kernel selection, allocator growth, lazy init) do not
        land on the first sample's latency. Failures here are ignored: the timed call reports them.
        Skipped for backends with ``needs_warmup = False`` (nothing to warm up)."""
        for _ in range(max(0, int(self.options.warmup))):
            try:
                self._apply(knobs)
                self.backend.generate([item.request], min(2, max_new), knobs.tier)
            except Exception:
                self._current_knobs = None
                return

    def _apply(self, knobs: Knobs) -> None:
        if knobs != self._current_knobs:
            self.backend.apply_knobs(knobs)
            self._current_knobs = knobs

    def _run_batch(self, record, knobs: Knobs, batch: list[_Item], batch_id: int, max_new: int) -> None:
        outs: list[GenOutput] | None = None
        err = None
        t0 = time.perf_counter()
        try:
            self._apply(knobs)
            outs = list(self.backend.generate([it.request for it in batch], max_new, knobs.tier))
            if len(outs) != len(batch):
                err = f"backend returned {len(outs)} outputs for a batch of {len(batch)}"
        except HarnessError as exc:
            err = str(exc)
        except Exception as exc:
            err = f"backend failed on this batch: {type(exc).__name__}: {exc}"
            self._current_knobs = None  # the model state is unknown: re-apply next time
        self.timing["generate_s"] += time.perf_counter() - t0
        self.timing["batches"] += 1
        if err is not None or outs is None:
            for it in batch:
                it.error = err
                record.append(self._line(it, None, None, batch_id, len(batch)))
            self.reporter.advance(len(batch), str(knobs))
            return
        t = outs[0].timings
        if t is not None:
            self.timing["model_ms"] += float(t.prefill_ms) + float(t.decode_ms)
        predictions = []
        for it, out in zip(batch, outs):
            try:
                predictions.append(self.task.postprocess(out.text))
            except Exception as exc:
                it.error = f"postprocessing failed: {type(exc).__name__}: {exc}"
                predictions.append(None)
        scores = self._score_batch(batch, predictions)
        estimates = self._estimate(knobs, outs)
        for j, (it, out) in enumerate(zip(batch, outs)):
            record.append(self._line(it, out, predictions[j], batch_id, len(batch), scores[j], estimates[j]))
        self.timing["samples"] += len(batch)
        self.reporter.advance(len(batch), str(knobs))

    def _score_batch(self, batch: list[_Item], predictions: list) -> list[dict | None]:
        if self.metric is None or getattr(self.metric, "corpus_level", False):
            return [None] * len(batch)
        idx = [j for j, (it, p) in enumerate(zip(batch, predictions)) if p is not None and it.sample.labeled]
        result: list[dict | None] = [None] * len(batch)
        if not idx:
            return result
        try:
            items = [self.task.metric_item(batch[j].sample, predictions[j]) for j in idx]
            per = self.metric.score(items).per_item
            for j, d in zip(idx, per):
                result[j] = {k: v for k, v in dict(d).items() if k != "id"}
        except Exception as exc:  # a metric failure must not lose the predictions
            for j in idx:
                batch[j].error = f"scoring failed: {type(exc).__name__}: {exc}"
        return result

    def _estimate(self, knobs: Knobs, outs: list[GenOutput]) -> list[dict | None]:
        if self.estimator is None:
            return [None] * len(outs)
        from harness.latency.estimator import EstimatorInput

        rows = []
        for out in outs:
            steps = len(out.timings.decode_step_ms) if (out.timings and self.options.batch_size == 1 and out.timings.decode_step_ms) else None
            n_out = steps if steps is not None else int(out.output_tokens)
            rows.append(EstimatorInput(top_k=knobs.top_k, num_active_blocks=knobs.num_blocks,
                                       tier_idx=TIER_INDEX.get(knobs.tier, 1), vision_tokens=int(out.vision_tokens),
                                       text_tokens=int(out.text_tokens), output_tokens=n_out))
        try:
            est = self.estimator.predict(rows)
            if len(est) != len(rows):
                raise ValueError(f"returned {len(est)} estimates for {len(rows)} inputs")
            return [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in est]
        except Exception as exc:
            msg = str(exc) if type(exc).__name__ == "PluginError" else f"estimator '{getattr(self.estimator, 'name', '?')}' failed: {type(exc).__name__}: {exc}"
            self.estimator_note = f"{msg}; the run continues without estimates"
            self.reporter.warn(self.estimator_note)
            self.estimator = None
            return [None] * len(outs)

    def _line(self, it: _Item, out: GenOutput | None, prediction, batch_id, batch_size, scores=None, estimate=None) -> dict:
        s = it.sample
        knobs = it.knobs
        measured = None
        if out is not None and out.timings is not None:
            t = out.timings
            steps = [float(x) for x in (t.decode_step_ms or [])]
            measured = {
                "prefill_ms": float(t.prefill_ms),
                "decode_ms": float(t.decode_ms),
                "total_ms": float(t.prefill_ms) + float(t.decode_ms),
                "vision_ms": t.vision_ms,
                "projector_ms": t.projector_ms,
                "lm_prefill_ms": t.lm_prefill_ms,
                "decode_per_token_ms": (sum(steps) / len(steps)) if steps else None,
                "decode_step_ms": [round(x, 4) for x in steps],
                "scope": "sample" if int(batch_size or 1) == 1 else "batch",
                "clock": t.clock,
            }
        main = None
        if scores and self.metric is not None:
            subs = tuple(getattr(self.metric, "subscores", ()) or ())
            if subs and subs[0] in scores:
                main = scores[subs[0]]
        pinput = None
        if it.pinput is not None:
            p = it.pinput
            pinput = {"text_tokens": p.text_tokens, "vision_tokens_by_tier": p.vision_tokens_by_tier,
                      "image_size": list(p.image_size) if p.image_size else None}
        return {
            "id": str(s.id),
            "task": s.task,
            "knobs": knobs.to_dict() if knobs else None,
            "config": str(knobs) if knobs else None,
            "prediction": prediction,
            "raw_output": out.text if out is not None else None,
            "score": main,
            "scores": scores,
            "input_tokens": out.input_tokens if out is not None else None,
            "vision_tokens": out.vision_tokens if out is not None else None,
            "text_tokens": out.text_tokens if out is not None else None,
            "output_tokens": out.output_tokens if out is not None else None,
            "finish_reason": out.finish_reason if out is not None else None,
            "measured": measured,
            "estimated": estimate,
            "error": it.error,
            "batch_id": batch_id,
            "batch_size": batch_size,
            "group": s.group,
            "policy_input": pinput,
        }


def _is_failure(result) -> bool:
    return type(result).__name__ == "PolicyFailure"


def _policy_name(policy) -> str:
    return str(getattr(policy, "name", type(policy).__name__))


# -- summary ----------------------------------------------------------------------------------------
def finalize(record, task, metric, samples: Sequence[Sample], labeled: bool) -> tuple[list[dict], dict]:
    """Score over all finished lines (corpus metrics included) in data order.

    Returns ``(lines in data order, score block)``; the score block holds ``score``, ``scores``,
    ``score_ci95``, ``groups`` and notes. Failed samples are scored as empty predictions (wrong).
    For corpus-level metrics the per-sample scores are filled into the lines.
    """
    from harness.stats import bootstrap_ci

    by_id = record.finished
    lines = [by_id[str(s.id)] for s in samples if str(s.id) in by_id]
    block: dict[str, Any] = {"score": None, "scores": {}, "score_ci95": None, "groups": {}, "notes": []}
    if metric is None:
        return lines, block
    if not labeled:
        block["notes"].append("this split has no public labels: predictions were written, scoring was refused")
        return lines, block
    sample_of = {str(s.id): s for s in samples}
    scored = [(ln, sample_of[ln["id"]]) for ln in lines if sample_of[ln["id"]].labeled]
    if not scored:
        block["notes"].append("no labeled samples to score")
        return lines, block
    items = [task.metric_item(s, ln["prediction"] if ln.get("prediction") is not None else "") for ln, s in scored]
    result = metric.score(items)
    subs = tuple(getattr(metric, "subscores", ()) or tuple(result.aggregate))
    main = subs[0] if subs else None
    block["scores"] = {k: float(v) for k, v in result.aggregate.items()}
    block["score"] = block["scores"].get(main) if main else None
    per_main = [float(d.get(main, 0.0) or 0.0) for d in result.per_item]
    lo, hi = bootstrap_ci(per_main, seed=0)
    block["score_ci95"] = [lo, hi]
    if getattr(metric, "corpus_level", False):
        for (ln, _), d in zip(scored, result.per_item):
            ln["scores"] = {k: v for k, v in dict(d).items() if k != "id"}
            ln["score"] = d.get(main)
        block["notes"].append("corpus-level metric: the score is over all samples; the CI resamples per-sample scores")
    if any(ln.get("error") for ln, _ in scored):
        block["notes"].append("failed samples are scored as wrong (empty prediction)")
    # sub-scores per sample group (e.g. TallyQA simple / complex)
    groups: dict[str, list[int]] = {}
    for i, (_, s) in enumerate(scored):
        if s.group:
            groups.setdefault(str(s.group), []).append(i)
    for g, idx in sorted(groups.items()):
        sub = metric.score([items[i] for i in idx]) if getattr(metric, "corpus_level", False) else None
        if sub is not None:
            agg = {k: float(v) for k, v in sub.aggregate.items()}
        else:
            agg = {k: float(sum(float(result.per_item[i].get(k, 0.0) or 0.0) for i in idx) / len(idx)) for k in subs}
        g_lo, g_hi = bootstrap_ci([per_main[i] for i in idx], seed=0)
        block["groups"][g] = {"n": len(idx), "score": agg.get(main), "scores": agg, "score_ci95": [g_lo, g_hi]}
        if main in agg:
            block["scores"][g] = agg[main]
    return lines, block


def latency_block(lines: list[dict], per_batch: bool) -> dict:
    """``{measured: {...}, estimated: {...}}`` with ``{mean, p50, p90, p99, n}`` per key; per batch
    (each batch counted once) when ``per_batch``."""
    from harness.stats import describe

    ok = [ln for ln in lines if not ln.get("error") and ln.get("measured")]
    if per_batch:
        seen, rows = set(), []
        for ln in ok:
            if ln.get("batch_id") not in seen:
                seen.add(ln.get("batch_id"))
                rows.append(ln)
    else:
        rows = ok
    measured = {k: describe([r["measured"].get(f"{k}_ms") for r in rows]) for k in ("prefill", "decode", "total")}
    for k in ("vision", "projector", "lm_prefill", "decode_per_token"):
        vals = [r["measured"].get(f"{k}_ms") for r in rows if r["measured"].get(f"{k}_ms") is not None]
        if vals:
            measured[k] = describe(vals)
    est_rows = [ln for ln in ok if ln.get("estimated")]
    estimated = ({k: describe([r["estimated"].get(f"{k}_ms") for r in est_rows]) for k in ("prefill", "decode", "total")}
                 if est_rows else None)
    return {"measured": measured, "estimated": estimated}


def estimator_error(lines: list[dict], per_batch: bool) -> dict:
    from harness.latency.estimator import error_stats

    if per_batch:
        return {"mape_total": None, "within_10pct": None, "n": 0,
                "note": "estimates are per sample but measured latency is per batch (batch size > 1); run with --batch-size 1 to compare"}
    rows = [ln for ln in lines if not ln.get("error") and ln.get("measured") and ln.get("estimated")]
    if not rows:
        return {"mape_total": None, "within_10pct": None, "n": 0}
    tot = error_stats([r["estimated"]["total_ms"] for r in rows], [r["measured"]["total_ms"] for r in rows])
    pre = error_stats([r["estimated"]["prefill_ms"] for r in rows], [r["measured"]["prefill_ms"] for r in rows])
    dec = error_stats([r["estimated"]["decode_ms"] for r in rows], [r["measured"]["decode_ms"] if r["measured"]["decode_ms"] else None for r in rows])
    return {"mape_total": tot["mape"], "within_10pct": tot["within_10pct"], "n": tot["n"],
            "mape_prefill": pre["mape"], "within_10pct_prefill": pre["within_10pct"],
            "mape_decode": dec["mape"], "within_10pct_decode": dec["within_10pct"]}


def build_summary(*, task, metric, lines: list[dict], score_block: dict, run_config: dict, info, data, backend,
                  batch_size: int, policy_desc: dict, fixed_knobs: Knobs | None, estimator_desc: dict | None,
                  estimator_note: str | None, latency_budget_ms: float | None, timing: dict | None,
                  n_total: int) -> dict:
    from harness import __version__

    per_batch = int(batch_size) > 1
    n_failed = sum(1 for ln in lines if ln.get("error"))
    hist = Counter(ln["config"] for ln in lines if ln.get("config"))
    lat = latency_block(lines, per_batch)
    budget = None
    if latency_budget_ms is not None:
        if per_batch:
            budget = {"budget_ms": latency_budget_ms, "count": None, "rate": None,
                      "note": "measured latency is per batch; budget violations are counted at --batch-size 1"}
        else:
            ok = [ln for ln in lines if not ln.get("error") and ln.get("measured")]
            cnt = sum(1 for ln in ok if ln["measured"]["total_ms"] > latency_budget_ms)
            budget = {"budget_ms": latency_budget_ms, "count": cnt, "rate": (cnt / len(ok)) if ok else None}
    est_means = None
    if lat["estimated"]:
        est_means = lat["estimated"]["total"]["mean"]
    timing_out = None
    if timing:
        loop = timing.get("loop_s") or 0.0
        model_s = (timing.get("model_ms") or 0.0) / 1000.0
        timing_out = {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in timing.items()},
                      "overhead_share": (max(loop - model_s, 0.0) / loop) if loop > 0 else None}
    notes = list(score_block.get("notes", []))
    if per_batch:
        notes.append(f"latency figures are per batch of up to {batch_size} samples, not per sample")
    if estimator_note:
        notes.append(estimator_note)
    return {
        "task": task.name,
        "metric": getattr(metric, "name", None),
        "model": getattr(info, "name", None),
        "model_fingerprint": (run_config or {}).get("model_fingerprint"),
        "model_info": _plain(info),
        "data": {"source": data.source, "synthetic": bool(data.synthetic), "fingerprint": data.fingerprint,
                 "subset": data.subset, "labeled": bool(data.labeled)},
        "knobs": fixed_knobs.to_dict() if fixed_knobs else None,
        "config": str(fixed_knobs) if fixed_knobs else None,
        "policy": policy_desc,
        "n": len(lines),
        "n_expected": n_total,
        "complete": len(lines) == n_total,
        "n_failed": n_failed,
        "score": score_block.get("score"),
        "score_name": (tuple(getattr(metric, "subscores", ()) or ()) or (None,))[0],
        "scores": score_block.get("scores"),
        "score_ci95": score_block.get("score_ci95"),
        "groups": score_block.get("groups") or {},
        "latency_ms": lat,
        "latency_mode": "per-batch" if per_batch else "per-sample",
        "batch_size": int(batch_size),
        "estimator": (estimator_desc or {}).get("name") if estimator_desc else None,
        "estimator_info": estimator_desc,
        "estimator_error": estimator_error(lines, per_batch),
        "estimated_vs_measured_total_ms": {"estimated_mean": est_means, "measured_mean": lat["measured"]["total"]["mean"]},
        "knobs_histogram": dict(sorted(hist.items())),
        "latency_budget": budget,
        "device": str(getattr(backend, "device", "")),
        "device_name": _device_name(getattr(backend, "device", "cpu")),
        "dtype": str(getattr(backend, "dtype", "")).replace("torch.", ""),
        "clock": next((ln["measured"].get("clock") for ln in lines if ln.get("measured")), None),
        "harness_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timing": timing_out,
        "notes": notes,
        "run_config": run_config,
    }


def _plain(obj) -> dict | None:
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj):
        return asdict(obj)
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")} if hasattr(obj, "__dict__") else None


def _device_name(device) -> str:
    from harness.latency.profile import device_name

    return device_name(str(device))


# -- one task, end to end (used by `harness run`, `harness sweep` and tests) ------------------------
def make_run_config(*, task, model: str, data, policy: dict, batch_size: int, style: str | None,
                    max_new_tokens: int | None, device: str, dtype: str, seed: int, estimator: str | None,
                    latency_budget_ms: float | None = None, extra: dict | None = None) -> dict:
    """Everything that must match for a directory to be resumed (``run.json`` / ``run_config``)."""
    from harness.backends import model_fingerprint

    cfg = {
        "task": task.name,
        "model": model,
        "model_fingerprint": model_fingerprint(model),
        "data": {"source": data.source, "fingerprint": data.fingerprint, "subset": data.subset},
        "policy": policy,
        "batch_size": int(batch_size),
        "style": style,
        "max_new_tokens": max_new_tokens,
        "device": str(device),
        "dtype": str(dtype),
        "seed": int(seed),
        "estimator": estimator,
        "latency_budget_ms": latency_budget_ms,
    }
    cfg.update(extra or {})
    import json

    return json.loads(json.dumps(cfg, default=str))


def policy_config(knobs: Knobs | None, policy_spec: str | None, policy_args: dict | None, info) -> dict:
    """The policy part of a run config: ``{"name": "fixed", "knobs": "14,6,medium"}`` or
    ``{"name": SPEC, "args": {...}}``."""
    if policy_spec in (None, "fixed") and knobs is not None:
        k = knobs if knobs.tier else knobs.with_tier(getattr(info, "default_tier", None) or "medium")
        return {"name": "fixed", "knobs": str(k)}
    return {"name": policy_spec, "args": dict(policy_args or {})}


def build_policy(spec: str, args: dict | None, *, info, estimator, knob_space=None, accuracy_table=None, seed=0,
                 max_new_tokens=16, tasks=(), latency_budget_ms=None):
    from harness.policies import build, default_knob_space
    from harness.policies.base import PolicyContext

    ctx = PolicyContext(model_info=info, knob_space=list(knob_space) if knob_space else default_knob_space(info),
                        estimator=estimator, accuracy_table=accuracy_table, seed=seed, max_new_tokens=max_new_tokens,
                        tasks=tuple(tasks), latency_budget_ms=latency_budget_ms)
    return build(spec, args or {}, ctx)


def task_max_new_tokens(task, style: str | None) -> int:
    fn = getattr(task, "max_new_tokens_for", None)
    if callable(fn):
        try:
            return int(fn(style))
        except Exception:
            pass
    return int(getattr(task, "max_new_tokens", 16) or 16)


def execute(*, backend, task, metric, data, record, policy, fixed_knobs: Knobs | None, estimator=None,
            estimator_note: str | None = None, batch_size: int = 1, style: str | None = None,
            max_new_tokens: int | None = None, latency_budget_ms: float | None = None, seed: int = 0,
            reporter: Reporter | None = None) -> tuple[dict, list[dict]]:
    """Run the unfinished samples of ``data`` into ``record`` and write ``summary.json``."""
    from harness.policies import describe_policy

    opts = RunOptions(batch_size=batch_size, style=style, max_new_tokens=max_new_tokens or task_max_new_tokens(task, style),
                      latency_budget_ms=latency_budget_ms, seed=seed)
    runner = Runner(backend, task, metric, policy, estimator, opts, reporter, estimator_note=estimator_note)
    try:
        timing = runner.run(record, data.samples)
        lines, block = finalize(record, task, metric, data.samples, bool(data.labeled))
        if metric is not None and getattr(metric, "corpus_level", False) and block.get("scores"):
            record.rewrite_samples(lines)
    finally:
        record.close()
    est_desc = None
    if runner.estimator is not None:
        est_desc = runner.estimator.describe() if hasattr(runner.estimator, "describe") else {"name": runner.estimator.name}
    elif estimator is not None:
        est_desc = {"name": getattr(estimator, "name", None), "disabled": True}
    summary = build_summary(task=task, metric=metric, lines=lines, score_block=block, run_config=record.run_config,
                            info=backend.info, data=data, backend=backend, batch_size=batch_size,
                            policy_desc=describe_policy(policy), fixed_knobs=fixed_knobs, estimator_desc=est_desc,
                            estimator_note=runner.estimator_note, latency_budget_ms=latency_budget_ms,
                            timing=timing, n_total=len(data.samples))
    record.write_summary(summary)
    return summary, lines


def run_loaded_task(*, backend, task, metric, data, out_dir, knobs=None, policy=None, policy_args=None,
                    estimator=None, estimator_note=None, batch_size: int = 1, style=None, max_new_tokens=None,
                    latency_budget_ms=None, seed: int = 0, run_config_extra=None, reporter=None,
                    knob_space=None, accuracy_table=None, estimator_spec=None) -> tuple[dict, list[dict]]:
    """Convenience for tests and ``harness sweep``: config, record, policy, execute."""
    from harness.records import RunRecord

    info = backend.info
    fixed = None
    if knobs is not None:
        fixed = Knobs.parse(knobs) if not isinstance(knobs, Knobs) else knobs
        fixed = _knobs_of(fixed, info, getattr(info, "default_tier", None) or "medium")
    spec = policy if isinstance(policy, str) else (None if policy is None else getattr(policy, "name", "custom"))
    pcfg = policy_config(fixed, spec, policy_args, info)
    mnt = max_new_tokens or task_max_new_tokens(task, style)
    cfg = make_run_config(task=task, model=getattr(info, "name", "model"), data=data, policy=pcfg, batch_size=batch_size,
                          style=style, max_new_tokens=mnt, device=str(getattr(backend, "device", "cpu")),
                          dtype=str(getattr(backend, "dtype", "")), seed=seed,
                          estimator=estimator_spec or (getattr(estimator, "name", None) if estimator else None),
                          latency_budget_ms=latency_budget_ms, extra=run_config_extra)
    record = RunRecord.open(out_dir, cfg)
    if policy is None or isinstance(policy, str):
        pol_spec = policy or "fixed"
        args = dict(policy_args or {})
        if pol_spec == "fixed" and fixed is not None:
            args.setdefault("knobs", str(fixed))
        policy = build_policy(pol_spec, args, info=info, estimator=estimator, knob_space=knob_space,
                              accuracy_table=accuracy_table, seed=seed, max_new_tokens=mnt, tasks=(task.name,),
                              latency_budget_ms=latency_budget_ms)
    return execute(backend=backend, task=task, metric=metric, data=data, record=record, policy=policy,
                   fixed_knobs=fixed if pcfg.get("name") == "fixed" else None, estimator=estimator,
                   estimator_note=estimator_note, batch_size=batch_size, style=style, max_new_tokens=mnt,
                   latency_budget_ms=latency_budget_ms, seed=seed, reporter=reporter)


# -- run set-up helpers (shared by `harness run`, `harness sweep`, `harness profile`, benchmarks) -----
# transformers' grouped_mm experts kernel is the fastest on GPU and on CPU too (the eager per-expert
# loop is 2-10x slower on CPU for 64 experts, with multi-second first calls); backends fall back to
# eager where it is unavailable.
DEFAULT_EXPERTS_IMPL = "grouped_mm"


def warn(message: str, quiet: bool = False) -> None:
    """Warnings always reach stderr (even with --quiet): they explain missing numbers."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


def resolve_device(device: str) -> str:
    dev = (device or "auto").strip().lower()
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise HarnessError(f"--device {device} requested but CUDA is not available here; use --device cpu or auto")
    elif dev not in ("cpu", "mps"):
        raise HarnessError(f"unknown --device '{device}'; use auto, cpu or cuda[:N]")
    return dev


def resolve_dtype(dtype: str, device: str) -> str:
    d = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
    if d == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return d


def prepare_estimator(spec: str | None, info, device: str, quiet: bool):
    """-> (estimator or None or PendingFit, note). Bad specs raise; a plugin that fails on a probe
    call is dropped with a note (the run continues without estimates)."""
    from harness.latency.estimator import load_estimator, probe

    if spec is not None and spec.strip().lower() in ("none", "off", "no"):
        return None, "estimator disabled (--estimator none)"
    est = load_estimator(spec, info, device)
    if type(est).__name__ == "PendingFit":
        return est, None
    why = probe(est)
    if why:
        note = f"{why}; the run continues without estimates"
        warn(note, quiet)
        return None, note
    return est, None


def ensure_fitted(est, backend, info, device: str, seed: int, quiet: bool):
    """A PendingFit becomes a quick fit on the loaded model, saved for the next runs."""
    from harness.latency.estimator import writable_fit_path
    from harness.latency.profile import quick_fit

    if est is None or type(est).__name__ != "PendingFit":
        return est, None
    path = writable_fit_path(info, device)
    warn(f"no latency estimator fit for {info.name} on this device; fitting a quick one now "
         f"(run `harness profile --model {info.name}` for a full one)", quiet)
    t0 = time.perf_counter()
    try:
        fitted = quick_fit(backend, info, device, seed=seed)
    except HarnessError:
        raise
    except Exception as exc:
        note = f"the quick estimator fit failed ({type(exc).__name__}: {exc}); the run continues without estimates"
        warn(note, quiet)
        return None, note
    try:
        fitted.save(path)
        saved = f"saved to {path}"
    except OSError as exc:
        saved = f"not saved ({exc.strerror or exc})"
    note = f"estimator: quick fit for {info.name} on {device} made on first use in {time.perf_counter() - t0:.1f}s, {saved}"
    warn(note, quiet)
    est.fitted = fitted
    return fitted, note


