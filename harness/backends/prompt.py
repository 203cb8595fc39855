"""Prompt assembly for ``hf:`` vision-language models: the one function that turns a prompt and a
vision-token count into input ids.

The reference model's training script imports :func:`build_input_ids`, so training and evaluation
see exactly the same token sequence:

    [bos if the tokenizer defines one] + [image_token_id] * n_vision
        + tokenizer(prompt_template.format(prompt=prompt), add_special_tokens=False)
"""

from __future__ import annotations

from itertools import groupby

from harness.errors import HarnessError

DEFAULT_TEMPLATE = "{prompt}"
RUN_MIN = 4  # a special token repeated at least this often is written once with its count


def render_prompt(prompt: str, prompt_template: str = DEFAULT_TEMPLATE) -> str:
    try:
        return prompt_template.format(prompt=prompt)
    except (KeyError, IndexError, ValueError) as exc:
        raise HarnessError(f"prompt_template {prompt_template!r} is invalid ({exc}); use a string with one '{{prompt}}' field")


def build_input_ids(tokenizer, prompt: str, n_vision: int = 0, image_token_id: int | None = None,
                    prompt_template: str = DEFAULT_TEMPLATE) -> list[int]:
    """Token ids the language model sees for one sample (before batching/padding).

    ``tokenizer`` is a Hugging Face tokenizer (or anything with ``bos_token_id`` and
    ``__call__(text, add_special_tokens=False) -> {"input_ids": [...]}``); ``n_vision`` image
    placeholder tokens (``image_token_id``) follow the BOS token and precede the text.
    """
    if n_vision and image_token_id is None:
        raise HarnessError("the model has vision tokens but no image_token_id; set image_token_id in its config")
    ids: list[int] = []
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        ids.append(int(bos))
    if n_vision:
        ids.extend([int(image_token_id)] * int(n_vision))
    text = tokenizer(render_prompt(prompt, prompt_template), add_special_tokens=False)["input_ids"]
    ids.extend(int(t) for t in text)
    return ids


def as_seen(tokenizer, ids) -> str:
    """The token sequence a model saw, as text: special tokens kept (BOS, chat-template markers, image
    placeholders), and a run of at least :data:`RUN_MIN` copies of one special token (the vision
    tokens) written once as ``<token>×N``, so that a sample line shows the exact input without
    hundreds of placeholders."""
    out: list[str] = []
    pending: list[int] = []
    for tok, run in groupby(int(t) for t in ids):
        n = len(list(run))
        if n >= RUN_MIN and tokenizer.decode([tok], skip_special_tokens=True) == "":
            if pending:
                out.append(tokenizer.decode(pending, skip_special_tokens=False))
                pending = []
            out.append(f"{tokenizer.decode([tok], skip_special_tokens=False)}×{n}")
        else:
            pending.extend([tok] * n)
    if pending:
        out.append(tokenizer.decode(pending, skip_special_tokens=False))
    return "".join(out)
