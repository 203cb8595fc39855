"""``em``: exact match after normalisation; counting answers (TallyQA) compare the first count read."""

from __future__ import annotations

import re
from typing import Sequence

from harness.metrics import registry
from harness.metrics.base import Metric
from harness.metrics.normalize import vqa_normalize

COUNT_WORDS: dict[str, int] = {
    "none": 0, "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}
# A whole-word ASCII number without leading zeros ("03" is not a count) or a count word.
_COUNT = re.compile(r"\b(0|[1-9][0-9]*|" + "|".join(COUNT_WORDS) + r")\b", re.IGNORECASE)
_COUNT_REF = re.compile(r"\s*[0-9]+\s*")

EXPLAIN = """\
em: exact match, 1.0 or 0.0 per item.

Counting answers (TallyQA: every reference is a whole number): the prediction's count is the
first whole word that is an ASCII number without leading zeros or a number word zero..twenty,
case-insensitive; "none" counts as 0. "3", "three", "There are 3.", "Three (3)", "3-4", "15.0" all
read as the first count; "03", "third", "iii", "a few", "no", "seventy", full-width or
Arabic-Indic digits read as nothing (score 0). The item scores 1 when that count equals a
reference. Per item: em and `extracted` (the count, or null).

Other answers: exact match after the official VQA answer processing (see `harness metrics
--explain vqa_score`) on both sides, against any reference; `extracted` is the processed
prediction.

Documented differences: VLMEvalKit's TallyQA scorer (the reference) does not read "none" as 0;
big_vision's PaliGemma TallyQA scorer and Molmo's exact match compare whole strings, so
"There are 3." or "3." or " 3 " score 0 there, and Molmo's em does not map number words."""


def extract_count(text: str) -> int | None:
    """The first count in ``text`` (digits or a number word; "none" -> 0), or None."""
    match = _COUNT.search(text)
    if match is None:
        return None
    token = match.group(1)
    if token[0].isdigit():
        return int(token)
    return COUNT_WORDS[token.lower()]


def is_count_refs(references: Sequence[str]) -> bool:
    return bool(references) and all(_COUNT_REF.fullmatch(r) for r in references)


def exact_match(prediction: str, references: Sequence[str]) -> tuple[float, int | str | None]:
    """``(score, extracted)`` for one item."""
    if is_count_refs(references):
        count = extract_count(prediction)
        hit = count is not None and any(int(r) == count for r in references)
        return (1.0 if hit else 0.0), count
    pred = vqa_normalize(prediction)
    hit = any(vqa_normalize(r) == pred for r in references)
    return (1.0 if hit else 0.0), pred


@registry.register("em", aliases=("exact_match", "tallyqa"))
class ExactMatch(Metric):
    __doc__ = EXPLAIN
    name = "em"
    subscores = ("em",)
    summary = "Exact match after normalisation; counting references compare the first number or number word ('none' = 0)."
    explain = EXPLAIN

    def score_items(self, items: list[dict]) -> list[dict]:
        out = []
        for it in items:
            score, extracted = exact_match(it["prediction"], it["references"])
            out.append({"em": score, "extracted": extracted})
        return out
