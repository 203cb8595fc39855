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

The loop's state (tokens so far, finished rows, mask, positions) lives in device tensors
(:class:`LoopState`) changed by device ops only. A model with a static cache may offer
``loop_state(cache)`` (state buffers it owns, at fixed addresses) and ``greedy_step(state,
cache)`` (open the next mask column, forward the last token, choose the next): the fast engine
captures the whole step, bookkeeping included, in one CUDA graph, so a decode step launches one
graph instead of a dozen small kernels around it. Other models get ``step`` called with the same
tensors and the same bookkeeping.

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

IMAGE_INPUTS = ("pixel_values", "images")  # the batch extras that hold the image input (LLaVA-style, MolmoE)
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

    # optional, static caches only (see the module docstring):
    #   loop_state(cache) -> LoopState     state buffers owned by the model, one set per cache
    #   greedy_step(state, cache) -> None  state.open_column(); logits = step(...); state.choose(logits)


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


class LoopState:
    """The greedy loop's device tensors, for ``rows`` rows (a batch and, on a bucketed static cache,
    its padding rows, which are finished from the start):

    - ``out`` [rows, C] the tokens so far (column ``idx`` next); a finished row gets ``pad``;
    - ``finished`` [rows] ended by EOS; ``done`` [] every row has;
    - ``tok`` [rows, 1] the token the next step feeds (``out``'s last column), at cache column ``col``
      [1] and position ``pos`` [rows, 1]; ``mask`` [rows, W] the attention mask;
    - ``eos`` [E] the EOS ids (padded with -1), ``pad`` [] the padding id.

    :meth:`choose` (after a forward pass) and :meth:`open_column` (before a step) change them in
    place with device ops only, so a model may capture them in the CUDA graph of its step
    (``greedy_step``, see :class:`StepModel`): a decode step is then one graph replay.
    """

    NAMES = ("out", "finished", "done", "tok", "col", "pos", "idx", "mask", "eos", "pad")
    EOS_SLOTS = 16  # EOS ids a state holds (models list one to three)

    def __init__(self, rows: int, columns: int, width: int, device):
        z = lambda *s, dt=torch.long: torch.zeros(s, dtype=dt, device=device)  # noqa: E731
        self.out, self.finished, self.done = z(rows, columns), z(rows, dt=torch.bool), z(dt=torch.bool)
        self.tok, self.col, self.pos, self.idx = z(rows, 1), z(1), z(rows, 1), z(1)
        self.mask, self.eos, self.pad = z(rows, width), z(self.EOS_SLOTS), z()
        self.rows = rows

    def start(self, attention_mask, positions, eos: list[int], pad: int) -> None:
        """Load one left-padded batch of ``n <= rows`` prompts (host to device, once per batch)."""
        n, t = attention_mask.shape
        self.mask.zero_()
        self.mask[:, 0] = 1  # padding rows attend to column 0 only
        self.mask[:n, :t] = attention_mask
        self.finished.fill_(True)
        self.finished[:n] = False  # padding rows are finished: they only ever feed ``pad``
        self.done.fill_(False)
        self.pos[:n] = positions[:, -1:]  # choose() moves to the next position and column
        self.col.fill_(t - 1)
        self.idx.zero_()
        self.tok.fill_(int(pad))
        self.eos.fill_(-1)
        self.eos[: len(eos)] = torch.tensor(eos, dtype=torch.long)
        self.pad.fill_(int(pad))

    def choose(self, logits: torch.Tensor) -> None:
        """The greedy token from ``logits`` [n, V] (rows ``n`` and up keep theirs): into ``out`` at
        ``idx`` (``pad`` for a row already finished), ``tok``, ``finished`` and ``done``; then the
        next column, position and index."""
        choose_greedy(self.out, logits, self.finished, self.tok, self.pos, self.done, self.col, self.idx, self.eos, self.pad)

    def open_column(self) -> None:
        """Unmask ``col``, where the step about to run writes the token it feeds."""
        self.mask.index_fill_(1, self.col, 1)

    def snapshot(self) -> dict:
        return {k: getattr(self, k).clone() for k in self.NAMES}

    def restore(self, saved: dict) -> None:
        for k, v in saved.items():
            getattr(self, k).copy_(v)


ARGMAX_GROUPS = 64


def greedy_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(-1)`` (the first maximum), in two levels: the maximum of each of
    :data:`ARGMAX_GROUPS` column groups, then the first group holding the largest. Compiled, a
    batch-1 step's argmax over a 50k vocabulary is then many programs, not one (on an H200: about 3 us
    in two kernels, against 11 us in one)."""
    n, v = logits.shape
    size = -(-v // ARGMAX_GROUPS)
    padded = torch.nn.functional.pad(logits, (0, size * ARGMAX_GROUPS - v), value=float("-inf"))
    best, at = padded.view(n, ARGMAX_GROUPS, size).max(-1)
    group = best.argmax(-1, keepdim=True)
    return (group * size + at.gather(-1, group))[:, 0]


def choose_greedy(out, logits, finished, tok, pos, done, col, idx, eos, pad) -> None:
    """:meth:`LoopState.choose` as one function of tensors (what a model compiles into its step;
    the arguments with a row per sample first)."""
    n = logits.shape[0]
    nxt = greedy_argmax(logits)
    t = torch.where(finished[:n], pad, nxt)
    out[:n].index_copy_(1, idx, t[:, None])
    tok[:n] = t[:, None]
    finished[:n] |= (nxt[:, None] == eos[None, :]).any(-1)
    done.copy_(finished.all())
    col.add_(1)
    pos[:n] += 1
    idx.add_(1)


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

    def post(self, done: torch.Tensor) -> None:
        """Queue the copy of ``done`` (CUDA) or read it now (CPU)."""
        if self.cuda:
            self.host.copy_(done, non_blocking=True)
            self.event.record()
        else:
            self.value = bool(done)

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
        pixels = next((batch.extras[k] for k in IMAGE_INPUTS if batch.extras.get(k) is not None), None)
        return (rows, -(-total // STATIC_BUCKET) * STATIC_BUCKET, batch.batch_size, padded,
                None if pixels is None else tuple(pixels.shape))

    def reserve(self, batch_size: int, prompt_len: int, max_new_tokens: int) -> None:
        """Let a static-cache model allocate its cache storage for the largest call to come
        (``batch_size`` rows, a ``prompt_len``-token prompt, ``max_new_tokens``), at the width
        :meth:`run` would make it; nothing for a model without ``reserve``."""
        fn = getattr(self.model, "reserve", None)
        if not self.static_cache or not callable(fn):
            return
        total = int(prompt_len) + max(1, int(max_new_tokens))
        fn(int(batch_size), -(-total // STATIC_BUCKET) * STATIC_BUCKET)

    def fused(self) -> bool:
        """Whether each decode step is the model's ``greedy_step`` (one graph replay on CUDA)."""
        return self.static_cache and hasattr(self.model, "greedy_step") and hasattr(self.model, "loop_state")

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
        eos = sorted({int(e) for e in (eos_token_ids or []) if e is not None})
        fused = self.fused() and len(eos) <= LoopState.EOS_SLOTS
        with torch.inference_mode():
            cache = model.make_cache(bsz, width, static)
            state = model.loop_state(cache) if fused else LoopState(bsz, max_new_tokens, width, device)
            positions = prompt_positions(batch.attention_mask)
            state.start(batch.attention_mask, positions, eos, pad_token_id)
            mask = state.mask[:bsz]
            start = timer.mark()
            logits = model.prefill(batch, mask if static else mask[:, :prompt_len], positions, cache, timer)
            state.choose(logits)
            first = last = timer.mark()  # the first token exists: prefill ends, decode starts
            timer.add("prefill", start, first)

            n_steps = 1  # tokens kept
            dev = torch.device(device)
            done = _Finished(dev, dev.type == "cuda" if self.lookahead is None else bool(self.lookahead))
            for i in range(1, max_new_tokens):
                done.post(state.done)  # after token i-1
                if not done.lazy and done.read():
                    break
                if fused:
                    model.greedy_step(state, cache)  # open the column, forward token i-1, choose token i
                else:
                    state.open_column()
                    step_mask = mask if static else mask[:, : prompt_len + i]
                    state.choose(model.step(state.tok[:bsz], step_mask, state.pos[:bsz], cache))
                now = timer.mark()  # step i = previous token to this one, bookkeeping included
                if done.lazy and done.read():  # token i-1 was the last: the step just queued is discarded
                    break
                timer.add("decode_step", last, now)
                last = now
                n_steps = i + 1
            if n_steps > 1:
                timer.add("decode", first, last)
            gen = state.out[:bsz, :n_steps].tolist()
            ended = state.finished[:bsz].tolist()

        eos_set = set(eos)
        tokens, reasons = [], []
        for row, eos_hit in zip(gen, ended):
            if eos_hit:
                cut = next(j for j, t in enumerate(row) if t in eos_set)
                tokens.append(row[:cut])
                reasons.append("eos")
            else:
                tokens.append(row)
                reasons.append("length")
        return DecodeResult(tokens, reasons, timer)
