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
from dataclasses import dataclass
from typing import Any, Sequence

from harness.errors import HarnessError
from harness.host_overlap import HostWorker
from harness.knobs import TIER_INDEX, Knobs
from harness.latency.measure import WARMUP_MAX_CALLS, HostClock, Warmup, batch_bucket
from harness.hostload import load_1m
from harness.limits import context_error, untokenizable_error
from harness.types import GenOutput, GenRequest, Reporter, Sample

from harness.policies.base import PolicyInput


@dataclass
class RunOptions:
    batch_size: int = 1
    style: str | None = None
    max_new_tokens: int | None = None  # None: the task's
    latency_budget_ms: float | None = None
    seed: int = 0
    policy_chunk: int = 256  # samples per policy.choose call
    warmup: int = WARMUP_MAX_CALLS  # most untimed calls per engine warm-up key; 0 = none
    rank: int = 0  # the torchrun rank running this (recorded with each measurement)
    overlap: bool = False  # host work on a worker thread beside the device's (harness.host_overlap)


@dataclass
class _Item:
    index: int  # position in the loaded data
    sample: Sample
    request: GenRequest | None = None
    pinput: Any = None
    knobs: Knobs | None = None
    error: str | None = None
    policy_ms: float | None = None  # this sample's share of the policy.choose call that decided it
    host_ms: float | None = None  # its share of the host preparation of its batch (tokens, image, copy)


def _knobs_of(value, info, default_tier: str) -> Knobs:
    """A policy's answer -> validated knobs with the tier resolved (raises HarnessError)."""
    from harness.policies import as_knobs

    value = as_knobs(value)
    value.validate(info.n_blocks, info.max_top_k, getattr(info, "min_blocks", None), getattr(info, "tiers", None),
                   model=getattr(info, "name", "the model"))
    return value if value.tier else value.with_tier(default_tier)


class Runner:
    """Runs one task on a loaded backend into one :class:`~harness.records.RunRecord`."""

    def __init__(self, backend, task, metric, policy, estimator, options: RunOptions, reporter: Reporter | None = None,
                 estimator_note: str | None = None, placement=None, batch1_estimator=None):
        from harness.sharding import WholeRun

        self.backend = backend
        self.placement = placement or WholeRun()  # where the samples run: here, or dealt over torchrun ranks
        self.task = task
        self.metric = metric
        self.policy = policy
        self.estimator = estimator
        # each sample's latency alone (batch 1), at any batch size: the mode's batch-1 fit; an estimator
        # that estimates samples, not batches (a plugin), gives batch-1 figures itself
        if batch1_estimator is None and (int(options.batch_size) == 1 or not getattr(estimator, "batch_aware", False)):
            batch1_estimator = estimator
        self.batch1_estimator = batch1_estimator
        self.options = options
        self.reporter = reporter or Reporter()
        self.estimator_note = estimator_note
        info = backend.info
        self.info = info
        self.default_tier = getattr(info, "default_tier", None) or "medium"
        self.tiers = list(getattr(info, "tiers", None) or [self.default_tier])
        self.timing = {"generate_s": 0.0, "model_ms": 0.0, "loop_s": 0.0, "batches": 0, "samples": 0}
        self._current_knobs: Knobs | None = None
        warm = getattr(backend, "needs_warmup", True) and int(options.warmup) > 0
        self.warmup = Warmup(max_calls=int(options.warmup) if warm else 0)
        self._policy_sees_images = bool(getattr(policy, "needs_image", False))
        self._clock = HostClock(getattr(backend, "device", "cpu"))

    # -- preparation ------------------------------------------------------------------------------
    def prepare(self, items: list[_Item]) -> None:
        style = self.options.style
        for it in items:
            s = it.sample
            if s.error:
                it.error = s.error
                continue
            try:
                prompt = self.task.prompt(s, style) if style is not None else self.task.prompt(s)
                it.error = untokenizable_error(prompt, self.info)  # harness.limits: not worth tokenizing
                if it.error is not None:
                    continue
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
                                        latency_budget_ms=self.options.latency_budget_ms, meta=meta, prompt=prompt,
                                        image=s.image if self._policy_sees_images else None)
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
        """``choose_safely`` on ``part``, timed: each sample carries its share of the call (wall
        clock; on CUDA synchronised before and after, so work a policy queues on the GPU counts)."""
        from harness.policies import choose_safely

        with self._clock as clock:
            results = choose_safely(self.policy, [it.pinput for it in part], self.info)
        for it in part:
            it.policy_ms = clock.ms / len(part)
        return results

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
        t_loop, self.timing["load_1m"] = time.perf_counter(), [load_1m(), None]  # harness.hostload: a busy CPU
        items = [_Item(i, s) for i, s in enumerate(samples) if str(s.id) not in record.finished]
        try:  # the progress bar ends on its own line whatever ends the loop (Ctrl-C, a full disk)
            self._loop(record, items, len(samples))
        finally:
            self.reporter.stop()
        self.timing["loop_s"] = time.perf_counter() - t_loop - self.timing["warmup_s"]
        self.timing["load_1m"][1] = load_1m()
        return self.timing

    def _loop(self, record, items: list, n_total: int) -> None:
        max_new = self.options.max_new_tokens or int(getattr(self.task, "max_new_tokens", 16) or 16)
        batch_id = 1 + max([int(x.get("batch_id") or 0) for x in record.finished.values()] or [0])
        early, plan = self.placement.split(self, items, batch_id, max_new)  # the whole plan, or this rank's share
        self.reporter.start(*self.placement.progress(self.task.name, n_total, items, early, plan))
        # failures known before generation are recorded first, in data order
        for it in early:
            record.append(self._line(it, None, None, None, None))
            self.reporter.advance(1, "failed")
        self._reserve(plan, max_new)
        with HostWorker(self.options.overlap) as worker:
            inputs = worker.submit(self.host_inputs, *plan[0][:2], not worker.on) if plan else None
            for j, (knobs, batch, bid) in enumerate(plan):
                ready = inputs.result()
                worker.raise_failed()
                # the next batch's inputs are made while this one runs (at once when the worker is off)
                inputs = worker.submit(self.host_inputs, *plan[j + 1][:2], False) if j + 1 < len(plan) and worker.on else None
                outs, err = self._generate_batch(knobs, batch, max_new, ready)
                worker.submit(self._record_batch, record, knobs, batch, bid, outs, err)
                if inputs is None and j + 1 < len(plan):
                    inputs = worker.submit(self.host_inputs, *plan[j + 1][:2], True)
        self.timing["overlap"] = bool(worker.on)
        self.timing["warmup_s"] = self.warmup.seconds
        self.timing["warmup"] = self.warmup.summary()

    def _reserve(self, plan: list, max_new: int) -> None:
        """Let the backend take the device memory of the plan's largest batch (rows x columns) before the first one
        (:meth:`harness.backends.base.Backend.reserve`); a reservation that fails is left to the
        batches, which record their own failures."""
        fn = getattr(self.backend, "reserve", None)
        if not callable(fn) or not plan:
            return
        sizes = [(len(batch), max(self._length(it, knobs) for it in batch)) for knobs, batch, _ in plan if batch]
        if not sizes:
            return
        n, tokens = max(sizes, key=lambda x: x[0] * (x[1] + max_new))  # the batch whose cache is largest
        try:
            fn(n, tokens, max_new)
        except Exception as exc:  # noqa: BLE001 - out of memory: the batches that do not fit fail as before
            self.reporter.warn(f"could not reserve device memory for the largest batch ({type(exc).__name__}: {exc}); "
                               "the run goes on")

    def select(self, items: list, max_new: int) -> None:
        """Prepare the samples, let the policy choose, fail those that would not fit the context."""
        self.prepare(items)
        self._choose(items)
        for it in (x for x in items if x.error is None and x.knobs is not None):  # the context limit
            it.error = context_error(it.pinput, it.knobs, max_new, self.info)

    def warm(self, knobs: Knobs, batch: list[_Item], max_new: int):
        """Untimed calls on this very batch before the first measured call of what the engine compiles
        or captures for it (the backend's ``warmup_key``: configurations that share a graph, such as
        every ``top_k`` on the fast engine, share a warm-up), until two agree within 5%
        (:class:`harness.latency.measure.Warmup`): compilation, capture, autotuning and clock ramp-up
        stay out of every sample's latency.
        A failing call ends the warm-up; the timed call reports the failure. Returns the
        :class:`harness.latency.measure.WarmupResult`, or None when the key was warm already."""
        def call() -> float:
            t = self.backend.generate([it.request for it in batch], max_new, knobs.tier)[0].timings
            return float(t.prefill_ms + t.decode_ms) if t is not None else 0.0

        requests = [it.request for it in batch]
        key_of = getattr(self.backend, "warmup_key", None)  # what the engine compiles or captures
        key = key_of(requests, max_new, knobs.tier) if callable(key_of) else (str(knobs), batch_bucket(len(batch)))
        return self.warmup.ensure(key, call)

    def host_inputs(self, knobs: Knobs, batch: list[_Item], sync: bool = True):
        """The host work a batch needs before its first model kernel (tokenising, image preprocessing
        at the chosen tier) into host memory, timed; each sample carries its share as ``host_ms``
        (:meth:`_adopt` adds the copy to the device). Returns ``(tier, prepared inputs)`` to hand to
        :meth:`Backend.adopt`, None for a backend without :meth:`prepare_detached`, or the exception
        that preparing raised (the batch then fails where it is generated). Runs on
        :mod:`harness.host_overlap`'s worker while the batch before runs (``sync=False``: no CUDA call)."""
        detached = getattr(self.backend, "prepare_detached", None)
        if not callable(detached):
            return None
        try:
            tier = self.backend.resolve_tier(knobs.tier)
            with HostClock(self._clock.device, sync=sync) as clock:
                out = detached([it.request for it in batch], tier)
        except Exception as exc:  # noqa: BLE001 - reported by the batch that needed these inputs
            return exc
        for it in batch:
            it.host_ms = clock.ms / len(batch)
        return tier, out

    def prepare_inputs(self, knobs: Knobs, batch: list[_Item]) -> None:
        """:meth:`host_inputs` now, on this thread, handed over to the backend (raises what preparing raised)."""
        self._adopt(batch, self.host_inputs(knobs, batch))

    def _adopt(self, batch: list[_Item], ready) -> None:
        if isinstance(ready, BaseException):
            raise ready
        if ready is not None:
            with self._clock as clock:  # the copy to the device, on this thread
                self.backend.adopt([it.request for it in batch], *ready)
            for it in batch:
                it.host_ms = (it.host_ms or 0.0) + clock.ms / len(batch)

    def apply(self, knobs: Knobs) -> None:
        if knobs != self._current_knobs:
            self.backend.apply_knobs(knobs)
            self._current_knobs = knobs

    def _generate_batch(self, knobs: Knobs, batch: list[_Item], max_new: int, ready) -> tuple[list | None, str | None]:
        """What drives the device, on the main thread: the knobs, the inputs ``ready`` from
        :meth:`host_inputs`, the warm-up and the timed call. -> (outputs, error)."""
        outs: list[GenOutput] | None = None
        err = None
        t0, warm0 = time.perf_counter(), self.warmup.seconds
        try:
            self.apply(knobs)
            self._adopt(batch, ready)
            self.warm(knobs, batch, max_new)
            outs = list(self.backend.generate([it.request for it in batch], max_new, knobs.tier))
            if len(outs) != len(batch):
                err = f"backend returned {len(outs)} outputs for a batch of {len(batch)}"
        except HarnessError as exc:
            err = str(exc)
        except Exception as exc:
            err = f"backend failed on this batch: {type(exc).__name__}: {exc}"
            self._current_knobs = None  # the model state is unknown: re-apply next time
        self.timing["generate_s"] += time.perf_counter() - t0 - (self.warmup.seconds - warm0)
        self.timing["batches"] += 1
        if err is None and outs and outs[0].timings is not None:
            t = outs[0].timings
            self.timing["model_ms"] += float(t.prefill_ms) + float(t.decode_ms)
        return outs, err

    def _record_batch(self, record, knobs: Knobs, batch: list[_Item], batch_id: int, outs, err) -> None:
        """Postprocessing, scores, estimates and the sample lines of one generated batch (on the
        host worker while the next batch runs)."""
        if err is not None or outs is None:
            for it in batch:
                it.error = err
                record.append(self._line(it, None, None, batch_id, len(batch)))
            self.reporter.advance(len(batch), str(knobs))
            return
        predictions = []
        for it, out in zip(batch, outs):
            try:
                predictions.append(self.task.postprocess(out.text))
            except Exception as exc:
                it.error = f"postprocessing failed: {type(exc).__name__}: {exc}"
                predictions.append(None)
        scores = self._score_batch(batch, predictions)
        same = self.batch1_estimator is self.estimator and len(batch) == 1  # the run's estimate is the batch-1 one
        alone = None if same else self._estimate_batch1(knobs, outs)
        estimates = self._estimate(knobs, outs, alone)
        alone = estimates if same else alone
        for j, (it, out) in enumerate(zip(batch, outs)):
            record.append(self._line(it, out, predictions[j], batch_id, len(batch), scores[j], estimates[j], alone[j]))
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

    def _estimate(self, knobs: Knobs, outs: list[GenOutput], alone: list[dict | None] | None = None) -> list[dict | None]:
        """The batch's estimated latency. A batch of one runs as a batch-1 call (nothing padded, the
        engine's batch-1 graphs), so where the run has a separate batch-1 fit, its estimate ``alone``
        (a batched run's ``estimated_batch1``, :meth:`_estimate_batch1`) is the batch's; a larger
        batch takes the run's fit. A random policy's batched run is mostly such batches: one sample
        per configuration and group."""
        if len(outs) == 1 and alone and alone[0] is not None:
            return [{**alone[0], "per": "sample"}]
        if self.estimator is None:
            return [None] * len(outs)
        from harness.latency.estimator import rows_for_batch

        rows = rows_for_batch(knobs, outs, TIER_INDEX.get(knobs.tier, 1), bool(getattr(self.estimator, "batch_aware", False)))
        try:
            est = self.estimator.predict(rows)
            if len(est) != len(rows):
                raise ValueError(f"returned {len(est)} estimates for {len(rows)} inputs")
            est = [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in est]
            return est * len(outs) if len(rows) == 1 else est  # one batch estimate: every line of the batch
        except Exception as exc:
            msg = str(exc) if type(exc).__name__ == "PluginError" else f"estimator '{getattr(self.estimator, 'name', '?')}' failed: {type(exc).__name__}: {exc}"
            self.estimator_note = f"{msg}; the run continues without estimates"
            self.reporter.warn(self.estimator_note)
            self.estimator = None
            return [None] * len(outs)

    def _estimate_batch1(self, knobs: Knobs, outs: list[GenOutput]) -> list[dict | None]:
        """Each sample's estimated latency alone at batch 1 (its own prompt and its own decode
        steps, :func:`harness.latency.estimator.batch1_rows`) from the mode's batch-1 fit."""
        est = self.batch1_estimator
        if est is None:
            return [None] * len(outs)
        from harness.latency.estimator import batch1_rows

        try:
            res = est.predict(batch1_rows(knobs, outs, TIER_INDEX.get(knobs.tier, 1)))
            return [{"prefill_ms": float(e.prefill_ms), "decode_ms": float(e.decode_ms), "total_ms": float(e.total_ms)}
                    for e in res]
        except Exception as exc:
            note = f"batch-1 estimates failed ({type(exc).__name__}: {exc}); the run continues without estimated_batch1"
            self.reporter.warn(note)
            self.estimator_note = f"{self.estimator_note}; {note}" if self.estimator_note else note
            self.batch1_estimator = None
            return [None] * len(outs)

    def _line(self, it: _Item, out: GenOutput | None, prediction, batch_id, batch_size, scores=None, estimate=None,
              alone=None) -> dict:
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
                "engine": getattr(self.backend, "engine", None),
                "rank": self.options.rank,  # the torchrun rank and device that measured it
                "device": str(getattr(self.backend, "device", "")),
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
            **_audit(it, out),
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
            "estimated_batch1": alone,
            "policy_ms": _round(it.policy_ms),
            "host_ms": _round(it.host_ms),
            "error": it.error,
            "batch_id": batch_id,
            "batch_size": batch_size,
            "group": s.group,
            "policy_input": pinput,
        }


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(float(ms), 4)


def _audit(it: _Item, out: GenOutput | None) -> dict:
    """What a reviewer needs to check a sample: the input and the targets. ``prompt`` is the token
    sequence the model saw as text (template, special tokens and image placeholders as
    ``<token>×N``; ``prompt_source: "model_input"``), or, for a sample that never reached the model,
    the task's rendered prompt (``"task"``); ``references``, and for multiple choice ``choices`` and
    the ``answer`` index. No image bytes."""
    s = it.sample
    seen = getattr(out, "model_input", None) if out is not None else None
    task_prompt = it.request.prompt if it.request is not None else None
    line = {"prompt": seen if seen is not None else task_prompt,
            "prompt_source": "model_input" if seen is not None else ("task" if task_prompt is not None else None),
            "references": s.references}
    if s.choices is not None:
        line["choices"] = list(s.choices)
        line["answer"] = s.answer
    return line


def _is_failure(result) -> bool:
    return type(result).__name__ == "PolicyFailure"


def _policy_name(policy) -> str:
    return str(getattr(policy, "name", type(policy).__name__))


def execute(*, backend, task, metric, data, record, policy, fixed_knobs: Knobs | None, estimator=None,
            estimator_note: str | None = None, batch_size: int = 1, style: str | None = None,
            max_new_tokens: int | None = None, latency_budget_ms: float | None = None, seed: int = 0,
            reporter: Reporter | None = None, extra_timing: dict | None = None, placement=None,
            rank: int = 0, batch1_estimator=None, check_batch1: int = 0, refit_command: str | None = None,
            subset_seed: int | None = None, overlap: bool = False) -> tuple[dict, list[dict]]:
    """Run the unfinished samples of ``data`` into ``record`` and write ``summary.json``. ``placement``
    (:mod:`harness.sharding`) says where the samples run: all here (the default), or this rank's share
    of a torchrun job, whose summary rank 0 writes. ``batch1_estimator`` gives each line its
    ``estimated_batch1``; ``check_batch1`` samples are then measured alone (:mod:`harness.batch1_check`).
    ``overlap``: host work on a worker thread beside the device's (:mod:`harness.host_overlap`)."""
    from harness.batch1_check import miss_note, run_check
    from harness.policies import describe_policy
    from harness.run_setup import task_max_new_tokens
    from harness.summary import build_summary, finalize

    opts = RunOptions(batch_size=batch_size, style=style, max_new_tokens=max_new_tokens or task_max_new_tokens(task, style),
                      latency_budget_ms=latency_budget_ms, seed=seed, rank=rank, overlap=overlap)
    runner = Runner(backend, task, metric, policy, estimator, opts, reporter, estimator_note=estimator_note,
                    placement=placement, batch1_estimator=batch1_estimator)
    placement = runner.placement
    check = None
    try:
        timing = runner.run(placement.attach(record), data.samples)
        if (timing := placement.merge(record, timing)) is None:  # a rank other than 0: rank 0 writes the summary
            return placement.share_summary(None), []
        if int(check_batch1 or 0) > 0 and int(batch_size) > 1:
            t0 = time.perf_counter()
            seed_for_pick = int(subset_seed if subset_seed is not None else (data.subset or {}).get("seed") or seed)
            check = run_check(runner, record, list(record.finished.values()), data.samples, int(check_batch1),
                              seed_for_pick, opts.max_new_tokens)
            timing = {**timing, "batch1_check_s": round(time.perf_counter() - t0, 3),
                      "warmup_s": runner.warmup.seconds, "warmup": runner.warmup.summary()}
        lines, block = finalize(record, task, metric, data.samples, bool(data.labeled))
        if placement.rewrites_samples or (metric is not None and getattr(metric, "corpus_level", False) and block.get("scores")):
            record.rewrite_samples(lines)  # corpus-level scores filled in; merged ranks in data order
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
                            timing={**(timing or {}), **(extra_timing or {})}, n_total=len(data.samples),
                            batch1_check=check, batch1_note=miss_note(check, refit_command))
    record.write_summary(summary)
    placement.share_summary(summary)
    return summary, lines
