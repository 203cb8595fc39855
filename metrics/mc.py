"""``mc``: multiple-choice accuracy (ScienceQA) with a deterministic answer extraction that never guesses."""

from __future__ import annotations

import re
import string
from typing import Sequence

from harness.metrics import registry
from harness.metrics.base import Metric, _type_name

LETTERS = string.ascii_uppercase

# Characters turned into spaces before looking for letter tokens (VLMEvalKit's can_infer_option).
_LETTER_SEPARATORS = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
# Answers that decline to answer: no option, and no option-text fallback either.
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_API_FAILURE = "Failed to obtain answer via API"
# "A mole", "a pine tree": a leading article followed by a word (a letter starts it).
_LEADING_ARTICLE = re.compile(r"\s*[Aa]\s+[^\W\d_]")
# Letter tokens must sit among the last four tokens of the answer to count.
_LETTER_WINDOW = 5

RULE_LOWERCASE = "bare_lowercase_letter"
RULE_ARTICLE = "article_then_option_text"
RULE_LETTER = "letter"
RULE_REFUSAL = "refusal"
RULE_TEXT = "option_text"
RULE_NONE = "none"

EXPLAIN = """\
mc: multiple-choice accuracy (ScienceQA). The answer is mapped to an option index, deterministically,
by the first rule that fires (recorded per item as `rule`):

1. bare_lowercase_letter: the whole answer (stripped) is one lower-case letter of an option ("b").
2. article_then_option_text: the answer starts with the article "A"/"a" followed by a word
   ("A mole") and exactly one option text occurs in it: that option. "A" is an article here,
   not option A.
3. letter: VLMEvalKit's can_infer_option: the characters . ( ) [ ] , : ; ! * # { } become
   spaces, the answer is split on whitespace, and exactly one upper-case option letter (A.. for
   the given options, at most 26) is a token, at one of the last four token positions: "B",
   "(B)", "B.", "B:", "[B]", "**B**", "Answer: B", "The answer is B.", "B is correct.". Two
   different letters ("A or B", "E... no wait, B") give no letter.
   refusal: no letter but a token "Z", or a known refusal sentence -> no option (VLMEvalKit's Z).
4. option_text: VLMEvalKit's can_infer_text: exactly one option text occurs in the answer,
   case-insensitively ("ogden." -> Ogden). Several or none -> no option.
5. none: pred_index -1, score 0. The metric never guesses.

Score: 1.0 when pred_index equals `answer` (0-based), else 0.0. Per item: mc, pred_index, rule.

Documented differences: VLMEvalKit's exact-matching mode (can_infer) is the reference; it does
not accept a bare lower-case letter ("a" -> no option) and reads "A mole" as option A. MMMU's
parser (used by lmms-eval) picks a random option when nothing is found (expected 1/n); LLaVA's
and lmms-eval's ScienceQA scorers accept only a leading letter, so "(B)" or "Answer: B" score 0;
Molmo's select_mc_option falls back to the nearest option by edit distance (always guesses)."""


def _letter_token(answer: str, letters: Sequence[str]) -> tuple[str, str | None]:
    """VLMEvalKit's letter rule. Returns (rule, letter or None)."""
    if _API_FAILURE in answer:
        return RULE_NONE, None
    for refusal in _REFUSALS:
        if refusal in answer:
            return RULE_REFUSAL, None
    tokens = answer.translate(_LETTER_SEPARATORS).split()
    found = [c for c in letters if c in tokens]
    if len(found) == 1:
        letter = found[0]
        if tokens.index(letter) > len(tokens) - _LETTER_WINDOW:
            return RULE_LETTER, letter
        return RULE_NONE, None
    if not found and "Z" in tokens:
        return RULE_REFUSAL, None
    return RULE_NONE, None


def _option_text(answer: str, choices: Sequence[str]) -> int:
    """Index of the single option whose text occurs in the answer (case-insensitive), else -1."""
    low = answer.lower()
    hits = [i for i, c in enumerate(choices) if c.lower() in low]
    return hits[0] if len(hits) == 1 else -1


def extract_choice(answer: str, choices: Sequence[str]) -> tuple[int, str]:
    """Map a free-text answer to ``(option index or -1, rule)``."""
    n = len(choices)
    letters = LETTERS[:n]
    stripped = answer.strip()
    if len(stripped) == 1 and stripped.islower() and stripped.upper() in letters:
        return letters.index(stripped.upper()), RULE_LOWERCASE
    if _LEADING_ARTICLE.match(answer):
        index = _option_text(answer, choices)
        if index >= 0:
            return index, RULE_ARTICLE
    rule, letter = _letter_token(answer, letters)
    if letter is not None:
        return letters.index(letter), RULE_LETTER
    if rule == RULE_REFUSAL:
        return -1, RULE_REFUSAL
    index = _option_text(answer, choices)
    if index >= 0:
        return index, RULE_TEXT
    return -1, RULE_NONE


@registry.register("mc", aliases=("multiple_choice", "scienceqa"))
class MultipleChoice(Metric):
    __doc__ = EXPLAIN
    name = "mc"
    subscores = ("mc",)
    summary = "Multiple-choice accuracy: letter ((B), B., Answer: B, ...) else the one option text contained; ambiguous -> no option, never a guess."
    explain = EXPLAIN
    required = ("prediction", "choices", "answer")

    def check_fields(self, item: dict) -> str | None:
        choices = item.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            return f"field 'choices' must be a list of strings, got {_type_name(choices)}"
        if not 1 <= len(choices) <= len(LETTERS):
            return f"field 'choices' must hold 1 to {len(LETTERS)} options, got {len(choices)}"
        answer = item.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, int):
            return f"field 'answer' must be the 0-based index of the correct option (an integer), got {_type_name(answer)}"
        if not 0 <= answer < len(choices):
            return f"field 'answer' is {answer}, outside 0..{len(choices) - 1} for {len(choices)} choices"
        refs = item.get("references")
        if refs is not None and not (isinstance(refs, list) and all(isinstance(r, str) for r in refs)):
            return f"field 'references' (optional for mc) must be a list of strings, got {_type_name(refs)}"
        return None

    def score_items(self, items: list[dict]) -> list[dict]:
        out = []
        for it in items:
            index, rule = extract_choice(it["prediction"], it["choices"])
            out.append({"mc": 1.0 if index == it["answer"] else 0.0, "pred_index": index, "rule": rule})
        return out
