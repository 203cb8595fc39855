"""Typed records passed between pipeline stages (task -> backend -> metric -> run record).

Every stage hands the next a dataclass, never a loose dict, so result keys are checked by the
type, not by string convention. ``to_dict()`` gives the JSON form written to run records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Sample:
    """One evaluation item, as a task makes it from one dataset row (or one `qa` entry)."""

    id: str  # unique within the task's split
    task: str  # canonical task name
    question: str
    image: Any = None  # PIL.Image.Image (RGB) or None
    choices: list[str] | None = None  # multiple choice options, in order
    answer: int | None = None  # 0-based index of the correct choice (mc)
    references: list[str] | None = None  # None: this split has no public labels
    image_id: Any = None  # for corpus metrics (CIDEr) and provenance
    group: str | None = None  # sub-score group, e.g. TallyQA "simple" / "complex"
    context: str = ""  # extra text shown before the question (ScienceQA hint)
    error: str | None = None  # e.g. unreadable image: recorded as a failed sample
    meta: dict = field(default_factory=dict)

    @property
    def labeled(self) -> bool:
        return self.references is not None or self.answer is not None

    @property
    def image_size(self) -> tuple[int, int] | None:
        return None if self.image is None else tuple(self.image.size)


@dataclass
class GenRequest:
    """What a backend needs to generate for one sample."""

    prompt: str  # rendered prompt text, without image placeholder tokens
    image: Any = None  # PIL image or None
    sample_id: str = ""


@dataclass
class StepTimings:
    """Measured latency of one generate call (one batch), in milliseconds.

    ``prefill_ms`` covers vision encoder + projector + language-model prefill up to the first
    token's logits; ``decode_ms`` from the first token to the last; ``decode_step_ms`` one entry
    per decode step. ``vision_ms``/``projector_ms``/``lm_prefill_ms`` are filled when the backend
    can split them (else None).
    """

    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    decode_step_ms: list[float] = field(default_factory=list)
    vision_ms: float | None = None
    projector_ms: float | None = None
    lm_prefill_ms: float | None = None
    batch_size: int = 1
    clock: str = "perf_counter_ns"  # or "cuda_events"

    @property
    def total_ms(self) -> float:
        return self.prefill_ms + self.decode_ms

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_ms"] = self.total_ms
        return d


@dataclass
class GenOutput:
    """One sample's generation result from a backend."""

    text: str
    input_tokens: int  # everything the LM saw in prefill (text + vision)
    vision_tokens: int
    text_tokens: int
    output_tokens: int  # generated tokens, EOS excluded
    timings: StepTimings | None = None  # shared by every sample of the batch
    finish_reason: str = "eos"  # "eos" or "length"
    model_input: str | None = None  # the tokens the model saw, as text (harness.backends.prompt.as_seen)


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
