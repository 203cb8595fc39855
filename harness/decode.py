"""The harness-owned greedy decode loop, used by every backend.

A backend supplies a :class:`StepModel` (three methods: make a KV cache, prefill a prepared
batch, run one decode step); :class:`Decoder` runs greedy decoding over a **left-padded** batch:

- positions: ``cumsum(attention_mask) - 1`` for the prompt, then one more per step;
- the attention mask grows by one column per step (static caches use one fixed-width mask whose
  future columns are zero, so every decode step has the same shapes);
- each sample stops at an EOS token or ``max_new_tokens``; the batch stops when all have;
- timing, through :mod:`harness.latency.measure`: ``prefill`` from the first op of the prompt
  forward (vision encoder included) to the first token; ``decode`` from the first token to the
  last; one ``decode_step`` per step, each from the previous token to its own (so the steps add up
  to ``decode`` and the loop's bookkeeping between steps is counted, not lost).

On CUDA the loop never waits for the GPU between steps: whether every sample has finished after
token *i* is copied to the host without blocking and read only after step *i+1* has been queued,
so the GPU always has the next step in hand (a blocking check per step left it idle for the
host's bookkeeping and launch of the next step). When token *i* turns out to be the last, the
step queued after it is discarded: its token is not kept and its time is not in ``decode``, which
still ends at token *i*'s event. On the CPU the check is immediate, as before.

``static_cache=True`` asks the model for a fixed-width cache (the prompt plus the new tokens,
rounded up to :data:`STATIC_BUCKET` columns) and passes one fixed-width mask whose future columns
are zero, so every decode step has the same shapes (the fast engine, :mod:`harness.engine`,
replays CUDA graphs on them); the interface is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from harness.latency.measure import Timer

STATIC_BUCKET = 256  # static caches are sized to a multiple of this, to bound the shapes a step sees


@dataclass
class PreparedBatch:
    """A left-padded batch ready for prefill; ``extras`` holds backend-specific inputs (images)."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 0 = padding (on the left)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


class StepModel(Protocol):
    device: torch.device

    def make_cache(self, batch_size: int, max_len: int, static: bool) -> Any: ...

    def prefill(self, batch: PreparedBatch, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                cache: Any, timer: Timer) -> torch.Tensor:
        """Logits of the last prompt position, ``[B, vocab]``."""

    def step(self, tokens: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
             cache: Any) -> torch.Tensor:
        """One decode step for ``tokens`` ``[B, 1]``: logits ``[B, vocab]``."""


@dataclass
class DecodeResult:
    tokens: list[list[int]]  # generated ids per sample, EOS excluded
    finish_reasons: list[str]  # "eos" or "length"
    timer: Timer


def left_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into ``(input_ids, attention_mask)``."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class _Finished:
    """Whether every sample has finished. ``lazy``: read one step late (the loop queues the next
    step first); on CUDA the value then travels to the host without blocking the queue."""

    def __init__(self, device: torch.device, lazy: bool):
        self.lazy = lazy
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.host = torch.zeros((), dtype=torch.bool, pin_memory=True)
            self.event = torch.cuda.Event()
        self.value = False

    def post(self, finished: torch.Tensor) -> None:
        """Queue the copy of ``finished.all()`` (CUDA) or read it now (CPU)."""
        if self.cuda:
            self.host.copy_(finished.all(), non_blocking=True)
            self.event.record()
        else:
            self.value = bool(finished.all())

    def read(self) -> bool:
        if self.cuda:
            self.event.synchronize()
            return bool(self.host)
        return self.value


class Decoder:
    """Greedy decoding for one :class:`StepModel`; ``static_cache`` = fixed-width cache and mask."""

    def __init__(self, model: StepModel, static_cache: bool = False, lookahead: bool | None = None):
        self.model = model
        self.static_cache = bool(static_cache)
        self.lookahead = lookahead  # read "all finished" one step late; None: on CUDA only

    def shape_key(self, batch: PreparedBatch, max_new_tokens: int):
        """The shapes a static-cache model specialises on: (cache rows, width, batch size, length of
        the prompt pass, image input shape); None without a static cache. The prompt pass's length
        is the model's ``padded_length`` of the prompt (its own length for models that do not pad)."""
        if not self.static_cache:
            return None
        prompt = batch.input_ids.shape[1]
        total = prompt + max(1, int(max_new_tokens))
        rows = getattr(self.model, "rows_for", lambda n: n)(batch.batch_size)
        padded = getattr(self.model, "padded_length", lambda n: n)(prompt)
        pixels = batch.extras.get("pixel_values")
        return (rows, -(-total // STATIC_BUCKET) * STATIC_BUCKET, batch.batch_size, padded,
                None if pixels is None else tuple(pixels.shape))

    def run(self, batch: PreparedBatch, max_new_tokens: int, eos_token_ids, pad_token_id: int,
            timer: Timer | None = None) -> DecodeResult:
        model = self.model
        device = batch.input_ids.device
        timer = timer or Timer(str(device))
        bsz, prompt_len = batch.input_ids.shape
        max_new_tokens = max(1, int(max_new_tokens))
        total = prompt_len + max_new_tokens
        static = self.static_cache
        width = -(-total // STATIC_BUCKET) * STATIC_BUCKET if static else total
        mask = torch.zeros((bsz, width), dtype=torch.long, device=device)
        mask[:, :prompt_len] = batch.attention_mask
        eos = torch.tensor(sorted({int(e) for e in (eos_token_ids or [])}) or [-1], device=device)
        with torch.inference_mode():
            cache = model.make_cache(bsz, width, static)
            positions = prompt_positions(batch.attention_mask)
            prefill_mask = mask if static else mask[:, :prompt_len]
            start = timer.mark()
            logits = model.prefill(batch, prefill_mask, positions, cache, timer)
            nxt = logits.argmax(-1)
            first = last = timer.mark()  # the first token exists: prefill ends, decode starts
            timer.add("prefill", start, first)

            out = torch.full((bsz, max_new_tokens), int(pad_token_id), dtype=torch.long, device=device)
            finished = torch.zeros(bsz, dtype=torch.bool, device=device)  # by EOS (a finished row only pads)
            pos = positions[:, -1:] + 1
            n_steps = 0
            dev = torch.device(device)
            done = _Finished(dev, dev.type == "cuda" if self.lookahead is None else bool(self.lookahead))
            for i in range(max_new_tokens):
                # few small kernels per step: on a GPU each costs microseconds of every decode step
                out[:, i] = torch.where(finished, int(pad_token_id), nxt)
                finished |= torch.isin(nxt, eos)
                n_steps = i + 1
                if i == max_new_tokens - 1:
                    break
                done.post(finished)
                if not done.lazy and done.read():
                    break
                mask[:, prompt_len + i] = 1
                step_mask = mask if static else mask[:, : prompt_len + i + 1]
                # column i of ``out`` and ``pos`` are never written again (``pos`` is rebound below)
                logits = model.step(out[:, i : i + 1], step_mask, pos, cache)
                nxt = logits.argmax(-1)
                now = timer.mark()  # step i+1 = previous token to this one, bookkeeping included
                if done.lazy and done.read():  # token i was the last: the step just queued is discarded
                    break
                timer.add("decode_step", last, now)
                last = now
                pos = pos + 1
            if n_steps > 1:
                timer.add("decode", first, last)

        gen = out[:, :n_steps].tolist()
        eos_set = set(eos.tolist())
        tokens, reasons = [], []
        for row, eos_hit in zip(gen, finished.tolist()):
            if eos_hit:
                cut = next(j for j, t in enumerate(row) if t in eos_set)
                tokens.append(row[:cut])
                reasons.append("eos")
            else:
                tokens.append(row)
                reasons.append("length")
        return DecodeResult(tokens, reasons, timer)
