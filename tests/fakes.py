"""Deterministic, fast stand-ins for the model side of the pipeline (no weights, no torch work).

- :class:`FakeBackend` implements the Backend protocol (``info``, ``device``, ``dtype``,
  ``apply_knobs``, ``active_blocks``, ``generate``, ``count_tokens``). Its output text is a pure
  function of (prompt, knobs) -- identical whatever the batch size or grouping -- and its timings
  follow :func:`true_prefill_ms` / :func:`true_decode_step_ms`, formulas that lie in the built-in
  estimator's feature space, so a fit recovers them exactly.
  A prompt containing ``RAISE`` makes the whole batch raise (a backend failure).
- :class:`FakeTask`, :class:`FakeMetric`, :class:`FakeCorpusMetric`, :func:`fake_data`: a tiny
  task whose correct answer the backend gives at the full configuration.

Other test files may import these (``from tests.fakes import FakeBackend`` or ``from fakes import``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from harness.knobs import Knobs, TIER_INDEX
from harness.types import GenOutput, GenRequest, Sample, StepTimings

VISION_BY_TIER = {"low": 16, "medium": 36, "high": 64}
LETTERS = "ABCD"


@dataclass
class FakeInfo:
    """Field-compatible with ``harness.backends.base.ModelInfo``."""

    name: str = "fake"
    family: str = "fake"
    n_blocks: int = 8
    default_top_k: int = 4
    max_top_k: int = 4
    min_blocks: int = 4
    tiers: tuple = ("low", "medium", "high")
    default_tier: str = "medium"
    vision_tokens: dict = field(default_factory=lambda: dict(VISION_BY_TIER))
    n_params: int = 1000
    notes: str = ""

    def validate(self, knobs: Knobs) -> Knobs:
        return knobs.validate(self.n_blocks, self.max_top_k, self.min_blocks, self.tiers, model=self.name)


def true_prefill_ms(vision: int, text: int, blocks: int, top_k: int) -> float:
    L = vision + text
    return 2.0 + 0.05 * vision + 0.3 * blocks + 0.002 * blocks * L + 0.001 * (blocks - 1) * top_k * L


def true_decode_step_ms(vision: int, text: int, blocks: int, top_k: int, position: int) -> float:
    return 0.5 + 0.1 * blocks + 0.04 * (blocks - 1) * top_k + 0.0005 * blocks * (vision + text + position)


class FakeBackend:
    needs_warmup = False  # no one-time costs: the runner skips its untimed warm-up call

    def __init__(self, info: FakeInfo | None = None, fail_on: str = "RAISE", device: str = "cpu", dtype: str = "float32"):
        self.info = info or FakeInfo()
        self.device = device
        self.dtype = dtype
        self.fail_on = fail_on
        self.knobs = Knobs(self.info.n_blocks, self.info.default_top_k, self.info.default_tier)
        self.applied: list[Knobs] = []  # every apply_knobs call, for grouping tests
        self.batches: list[tuple[Knobs, int]] = []  # (knobs, batch size) per generate call
        self.eos_token_ids = [0]

    @property
    def active_blocks(self):
        return tuple(range(self.knobs.num_blocks))

    def apply_knobs(self, knobs):
        knobs = Knobs.parse(knobs) if not isinstance(knobs, Knobs) else knobs
        self.info.validate(knobs)
        self.knobs = knobs
        self.applied.append(knobs)
        return knobs

    def count_tokens(self, request: GenRequest, tier=None):
        tier = tier or self.knobs.tier or self.info.default_tier
        text = len(request.prompt.split())
        vision = VISION_BY_TIER[tier] if request.image is not None else 0
        return text, vision

    def answer(self, prompt: str, knobs: Knobs) -> str:
        """The correct answer (given after ``ANSWER=``) at the full configuration; else a
        deterministic function of (prompt, knobs)."""
        full = knobs.num_blocks == self.info.n_blocks and knobs.top_k == self.info.max_top_k
        if "ANSWER=" in prompt and full:
            return prompt.split("ANSWER=")[1].split()[0]
        h = zlib.crc32(f"{prompt}|{knobs.num_blocks},{knobs.top_k},{knobs.tier}".encode())
        return LETTERS[h % len(LETTERS)]

    def n_out(self, prompt: str, max_new_tokens: int) -> int:
        return min(max_new_tokens, 1 + zlib.crc32(prompt.encode()) % 3)

    def generate(self, requests, max_new_tokens, tier=None):
        tier = tier or self.knobs.tier or self.info.default_tier
        if any(self.fail_on and self.fail_on in r.prompt for r in requests):
            raise RuntimeError("simulated backend failure")
        k = self.knobs.with_tier(tier)
        self.batches.append((k, len(requests)))
        counts = [self.count_tokens(r, tier) for r in requests]
        eos = bool(self.eos_token_ids)
        n_outs = [self.n_out(r.prompt, max_new_tokens) if eos else max_new_tokens for r in requests]
        # batch timings: the longest prompt, the longest output, times the batch (left padded)
        t_max = max(t for t, _ in counts)
        v_max = max(v for _, v in counts)
        steps = max(n_outs)
        scale = len(requests) ** 0.5
        pre = true_prefill_ms(v_max, t_max, k.num_blocks, k.top_k) * scale
        step_ms = [true_decode_step_ms(v_max, t_max, k.num_blocks, k.top_k, p) * scale for p in range(1, steps + 1)]
        timings = StepTimings(prefill_ms=pre, decode_ms=sum(step_ms), decode_step_ms=step_ms, batch_size=len(requests),
                              vision_ms=0.05 * v_max * scale, projector_ms=None, lm_prefill_ms=None)
        outs = []
        for r, (t, v), n in zip(requests, counts, n_outs):
            text = self.answer(r.prompt, k)
            outs.append(GenOutput(text=text, input_tokens=t + v, vision_tokens=v, text_tokens=t, output_tokens=n,
                                  timings=timings, finish_reason="eos" if n < max_new_tokens else "length"))
        return outs


@dataclass
class FakeResult:
    per_item: list
    aggregate: dict


class FakeMetric:
    name = "fake_acc"
    subscores = ("acc",)
    corpus_level = False
    summary = "exact match of the first reference"

    def score(self, items):
        per = [{"id": it["id"], "acc": float(it["prediction"].strip() == it["references"][0])} for it in items]
        agg = {"acc": (sum(p["acc"] for p in per) / len(per)) if per else 0.0}
        return FakeResult(per, agg)


class FakeCorpusMetric(FakeMetric):
    """Corpus-level: each item's score depends on the whole corpus (share of items correct)."""

    name = "fake_corpus"
    subscores = ("corpus",)
    corpus_level = True

    def score(self, items):
        hits = [float(it["prediction"].strip() == it["references"][0]) for it in items]
        share = sum(hits) / len(hits) if hits else 0.0
        per = [{"id": it["id"], "corpus": h * share} for it, h in zip(items, hits)]
        return FakeResult(per, {"corpus": share * share})


class FakeTask:
    name = "fake"
    metric = "fake_acc"
    max_new_tokens = 3
    styles = ("default", "short")

    def prompt(self, sample: Sample, style=None) -> str:
        extra = " briefly" if style == "short" else ""
        return f"{sample.question}{extra} ANSWER={sample.references[0] if sample.references else 'A'}"

    def postprocess(self, text: str) -> str:
        return text.strip()

    def metric_item(self, sample: Sample, prediction: str) -> dict:
        return {"id": sample.id, "prediction": prediction, "references": list(sample.references or [])}


@dataclass
class FakeData:
    samples: list
    source: str = "fake"
    synthetic: bool = True
    fingerprint: str = "f" * 16
    subset: dict = field(default_factory=lambda: {"limit": None, "seed": 0, "n_total": 0})
    labeled: bool = True


def fake_samples(n: int = 12, bad_image: int | None = None, raise_at: int | None = None, groups: bool = False,
                 labeled: bool = True) -> list[Sample]:
    from PIL import Image

    img = Image.new("RGB", (8, 8), (10, 20, 30))
    out = []
    for i in range(n):
        words = " ".join(["word"] * (3 + (i * 7) % 11))
        q = f"question {i} {words}" + (" RAISE" if raise_at == i else "")
        s = Sample(id=f"s{i:03d}", task="fake", question=q, image=img if i % 4 else None,
                   references=[LETTERS[i % 4]] if labeled else None,
                   group=("simple" if i % 2 else "complex") if groups else None,
                   error="image could not be decoded" if bad_image == i else None)
        out.append(s)
    return out


def fake_data(n: int = 12, **kw) -> FakeData:
    samples = fake_samples(n, **kw)
    return FakeData(samples, subset={"limit": None, "seed": 0, "n_total": n}, labeled=kw.get("labeled", True))
