"""Input-length limit: a prompt that does not fit the model's context is refused per sample.

The rule (no truncation): a sample fails, before any tensor is built, when its prompt tokens
(text + vision at the sample's tier) plus the run's ``max_new_tokens`` exceed the model's
``max_positions`` (``max_position_embeddings`` of the language model; MolmoE's trained
``max_sequence_length``). The sample is recorded with the error below and the run goes on.

A prompt so long that it cannot fit whatever its tokenization (more than ``MAX_TOKEN_BYTES``
bytes of text per position; no tokenizer in use has pieces that long) fails before it is even
tokenized, so a multi-megabyte question costs neither the tokenizer's time nor its memory.
"""

from __future__ import annotations

MAX_TOKEN_BYTES = 1024  # more UTF-8 bytes than any vocabulary piece covers


def context_error(pinput, knobs, max_new: int, info) -> str | None:
    """The failed sample's message, or None when the sample fits (or the model's context is
    unknown). ``pinput``: the sample's :class:`~harness.policies.base.PolicyInput` (token counts),
    ``knobs``: its configuration, ``info``: the model's ``ModelInfo``."""
    limit = getattr(info, "max_positions", None)
    text = int(pinput.text_tokens)
    vision = int(pinput.vision_tokens_by_tier.get(knobs.tier, 0))
    n = text + vision
    if not limit or n + int(max_new) <= int(limit):
        return None
    return (f"input too long: {n} prompt tokens ({text} text + {vision} vision at tier {knobs.tier}) "
            f"plus up to {int(max_new)} new tokens exceed the model's context of {int(limit)} positions; "
            "shorten the question, or lower --max-new-tokens or the tier")


def untokenizable_error(prompt: str, info) -> str | None:
    """Before tokenizing: the failed sample's message when ``prompt`` cannot fit the model's
    context at even ``MAX_TOKEN_BYTES`` bytes per token, else None."""
    limit = getattr(info, "max_positions", None)
    if not limit or len(prompt) <= MAX_TOKEN_BYTES * int(limit):  # characters <= bytes: cheap test first
        return None
    n_bytes = len(prompt.encode("utf-8"))
    if n_bytes <= MAX_TOKEN_BYTES * int(limit):
        return None
    return (f"input too long: the prompt has {n_bytes} bytes of text, more than {int(limit)} tokens of up to "
            f"{MAX_TOKEN_BYTES} bytes each can hold (the model's context is {int(limit)} positions); "
            "shorten the question")
