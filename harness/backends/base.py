"""The backend protocol shared by every model family: :class:`ModelInfo` (from configs only) and
:class:`Backend` (knobs, batched greedy generation through :mod:`harness.decode`, token counts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from harness import engine as engines
from harness.decode import Decoder, PreparedBatch
from harness.errors import HarnessError, warn
from harness.knobs import Knobs, parse_importance, select_blocks
from harness.backends.prompt import as_seen
from harness.latency.measure import Timer, batch_bucket
from harness.types import GenOutput, GenRequest, StepTimings

EXPERTS_IMPLS = ("eager", "grouped_mm", "batched_mm")


@dataclass
class ModelInfo:
    name: str
    family: str
    n_blocks: int
    default_top_k: int
    max_top_k: int
    min_blocks: int | None = None
    tiers: tuple[str, ...] = ()
    default_tier: str | None = None
    vision_tokens: dict[str, int] = field(default_factory=dict)  # per tier, when known from configs
    n_params: int | None = None
    notes: str = ""
    max_positions: int | None = None  # the language model's context: prompt (text + vision) plus new tokens
    vision: bool = True  # False: a text-only model, refused for samples with images

    def __post_init__(self):
        if self.min_blocks is None:
            self.min_blocks = max(1, self.n_blocks - 4)

    def validate(self, knobs: Knobs) -> Knobs:
        return knobs.validate(self.n_blocks, self.max_top_k, self.min_blocks,
                              self.tiers or None, model=self.name)

    @property
    def knob_range(self) -> str:
        return f"num_blocks {self.min_blocks}..{self.n_blocks}, top_k 1..{self.max_top_k} (default {self.default_top_k})"


def set_experts_impl(model, impl: str) -> str:
    """Select transformers' experts implementation; fall back to eager with a clear message."""
    if impl not in EXPERTS_IMPLS:
        raise HarnessError(f"unknown experts implementation '{impl}'; use one of {', '.join(EXPERTS_IMPLS)}")
    if not hasattr(model, "set_experts_implementation"):
        if impl != "eager":
            warn(f"this transformers version has no set_experts_implementation; using the model's own experts code instead of {impl}")
        return "eager"
    try:
        model.set_experts_implementation(impl)
        return impl
    except Exception as exc:  # unavailable kernel on this device/torch
        warn(f"experts implementation '{impl}' is unavailable here ({type(exc).__name__}: {str(exc)[:120]}); falling back to eager")
        model.set_experts_implementation("eager")
        return "eager"


class Backend:
    """Common flow; subclasses provide ``_prepare`` (requests -> PreparedBatch + vision counts),
    ``_count`` and a step model for the decoder, and set ``switch`` (a KnobSwitch)."""

    info: ModelInfo
    device: torch.device
    dtype: torch.dtype

    def __init__(self, info: ModelInfo, switch, step_model, tokenizer, device, dtype,
                 importance: Mapping[int, float] | None = None, engine: str = "auto",
                 experts_impl: str = "eager", eos_token_ids: Sequence[int] = (), pad_token_id: int = 0):
        self.info = info
        self.switch = switch
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.importance = parse_importance(importance, info.n_blocks) if importance is not None else None
        self.experts_impl = experts_impl
        self.eos_token_ids = [int(e) for e in eos_token_ids if e is not None]
        self.pad_token_id = int(pad_token_id)
        self.step_model, self.engine = engines.build(engine, self.device, step_model, switch, info.name)
        self.engine_variant = engines.variant(self.engine, self.device)  # what latency fits are keyed by
        self.decoder = Decoder(self.step_model, static_cache=self.engine == "fast")
        self.knobs = Knobs(info.n_blocks, info.default_top_k, info.default_tier)
        self._warm: set = set()
        self._last_prepared: tuple | None = None  # (tier, requests, prepared inputs) of the last batch
        self._last_seen: tuple | None = None  # (prepared batch, its rows as text) for the sample lines

    # -- knobs --------------------------------------------------------------------------------
    def apply_knobs(self, knobs: Knobs | str) -> Knobs:
        knobs = Knobs.parse(knobs) if not isinstance(knobs, Knobs) else knobs
        self.info.validate(knobs)
        active = select_blocks(knobs.num_blocks, self.info.n_blocks, self.importance)
        self.switch.apply(active, knobs.top_k)
        self.knobs = knobs
        return knobs

    @property
    def engine_settings(self) -> dict:
        """What executes the model, as recorded in ``summary.json``: the engine, its kernels (fast
        engine), and whether cuDNN attention was on (CUDA)."""
        sm = self.step_model
        out = {"engine": self.engine, "variant": self.engine_variant}
        for attr in ("moe_kernel", "prefill_kernel", "attention", "gemv", "cuda_graphs", "prefill_graphs", "vision_graphs", "prompt_bucket",
                     "compile_backend"):
            if hasattr(sm, attr):
                out[attr] = getattr(sm, attr)
        if self.device.type == "cuda":
            out["cudnn_attention"] = bool(torch.backends.cuda.cudnn_sdp_enabled())
        return out

    @property
    def active_blocks(self) -> tuple[int, ...]:
        return tuple(self.switch.active)

    def resolve_tier(self, tier: str | None) -> str | None:
        tier = tier or self.knobs.tier or self.info.default_tier
        if tier is not None and self.info.tiers and tier not in self.info.tiers:
            raise HarnessError(f"tier '{tier}' is not available for {self.info.name}: allowed {', '.join(self.info.tiers)}")
        return tier

    # -- generation ---------------------------------------------------------------------------
    def _prepare(self, requests: list[GenRequest], tier: str | None, device=None) -> tuple[PreparedBatch, list[int], list[int]]:
        """-> (batch on ``device``, default this backend's; text token counts, vision token counts)."""
        raise NotImplementedError

    def count_tokens(self, request: GenRequest, tier: str | None = None) -> tuple[int, int]:
        raise NotImplementedError

    def prepared(self, requests: list[GenRequest], tier: str | None) -> tuple[PreparedBatch, list[int], list[int]]:
        """:meth:`_prepare`, done once per batch: the same request objects at the same tier again
        (a run's untimed warm-up calls, then its timed call) reuse the inputs already on the
        device, so tokenising, image preprocessing and the copy to the device run once, not once
        per call. Inputs are only read by the decode loop, never changed."""
        last = self._last_prepared
        if (last is not None and last[0] == tier and len(last[1]) == len(requests)
                and all(a is b for a, b in zip(last[1], requests))):
            return last[2]
        return self.adopt(requests, tier, self._prepare(list(requests), tier))

    def reserve(self, batch_size: int, input_tokens: int, max_new_tokens: int) -> None:
        """Device memory for the largest call a run or a profile will make (``batch_size`` requests of
        at most ``input_tokens`` input tokens, text and vision, and ``max_new_tokens``), taken before
        the first call, so that caches of the engine share one storage instead of growing past
        graphs that hold the old (:meth:`harness.engine.step.FastStepModel.reserve`). A hint: calls
        larger than it still run."""
        decoder = getattr(self, "decoder", None)
        if decoder is not None and callable(getattr(decoder, "reserve", None)):
            decoder.reserve(batch_size, input_tokens, max_new_tokens)

    def prepare_detached(self, requests: list[GenRequest], tier: str | None) -> tuple[PreparedBatch, list[int], list[int]]:
        """:meth:`_prepare` on the host only (tensors in CPU memory, no CUDA call), without touching
        the batch this backend holds: what :mod:`harness.host_overlap`'s worker thread runs for the
        next batch while the current one runs (a CUDA call from another thread would break a graph
        capture in progress); the main thread then hands it over with :meth:`adopt`."""
        return self._prepare(list(requests), tier, device=torch.device("cpu"))

    def adopt(self, requests: list[GenRequest], tier: str | None, out: tuple) -> tuple:
        """Make ``out`` (from :meth:`prepare_detached`, or already on the device) the prepared inputs
        of ``requests`` at ``tier``, copied to this backend's device, so the warm-up and the timed call
        reuse them."""
        batch = out[0]
        if batch.input_ids.device != self.device:
            move = lambda t: t.to(self.device) if isinstance(t, torch.Tensor) else t  # noqa: E731
            batch = PreparedBatch(move(batch.input_ids), move(batch.attention_mask), {k: move(v) for k, v in batch.extras.items()})
            out = (batch, *out[1:])
        self._last_prepared = (tier, tuple(requests), out)
        return out

    def decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def generate(self, requests: list[GenRequest], max_new_tokens: int, tier: str | None = None) -> list[GenOutput]:
        if not requests:
            return []
        tier = self.resolve_tier(tier)
        batch, n_text, n_vision = self.prepared(requests, tier)
        if self.device.type == "cuda":
            key = self.warmup_key(requests, max_new_tokens, tier)
            if key not in self._warm:  # warm-up (and compilation) outside the timed call
                self.decoder.run(batch, max_new_tokens, self.eos_token_ids, self.pad_token_id, Timer(str(self.device), enabled=False))
                self._warm.add(key)
        result = self.decoder.run(batch, max_new_tokens, self.eos_token_ids, self.pad_token_id, Timer(str(self.device)))
        timings: StepTimings = result.timer.step_timings(len(requests))
        seen = self.inputs_as_seen(batch)
        outs = []
        for toks, reason, nt, nv, text in zip(result.tokens, result.finish_reasons, n_text, n_vision, seen):
            outs.append(GenOutput(text=self.decode_text(toks), input_tokens=nt + nv, vision_tokens=nv, text_tokens=nt,
                                  output_tokens=len(toks), timings=timings, finish_reason=reason, model_input=text))
        return outs

    def warmup_key(self, requests: list[GenRequest], max_new_tokens: int, tier: str | None = None) -> tuple:
        """What the engine compiles or captures for this call, the key of every warm-up (the runner's
        and this backend's own): the active blocks, ``top_k`` only where the step model does not
        serve every ``top_k`` from one graph (the fast engine does), and the decoder's static shape
        key (cache rows and width, prompt pass length, image input shape). An engine with dynamic
        shapes (eager) captures nothing: its key is the tier and the batch bucket."""
        tier = self.resolve_tier(tier)
        batch, _, _ = self.prepared(requests, tier)
        top_k = None if getattr(self.step_model, "serves_every_top_k", False) else self.switch.top_k
        shape = self.decoder.shape_key(batch, max_new_tokens)
        if shape is None:
            shape = (tier, batch_bucket(len(requests)))
        return (self.active_blocks, top_k, shape)

    def inputs_as_seen(self, batch: PreparedBatch) -> list[str]:
        """Each row's input ids without the left padding, as text (after the measured call), once per
        prepared batch: its warm-up calls and its timed call share them."""
        if self._last_seen is not None and self._last_seen[0] is batch:
            return self._last_seen[1]
        ids, mask = batch.input_ids.cpu(), batch.attention_mask.cpu().bool()
        texts = [as_seen(self.tokenizer, row[m].tolist()) for row, m in zip(ids, mask)]
        self._last_seen = (batch, texts)
        return texts

    def generate_ids(self, requests: list[GenRequest], max_new_tokens: int, tier: str | None = None):
        """Like :meth:`generate` but returns the raw :class:`harness.decode.DecodeResult` (tests, tools)."""
        batch, _, _ = self.prepared(requests, self.resolve_tier(tier))
        return self.decoder.run(batch, max_new_tokens, self.eos_token_ids, self.pad_token_id, Timer(str(self.device)))
