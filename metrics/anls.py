"""``ansl_em``: ANLS as the DocVQA (RRC) scorer and lmms-eval compute it, plus a lenient exact match."""

from __future__ import annotations

from typing import Sequence

import Levenshtein

from harness.metrics import registry
from harness.metrics.base import Metric
from harness.metrics.normalize import collapse_ws

THRESHOLD = 0.5

EXPLAIN = """\
ansl_em: two sub-scores per item, both in 0..1.

anls (main): Average Normalized Levenshtein Similarity exactly as the official DocVQA/RRC scorer
and lmms-eval compute it. Both strings are lower-cased, stripped and their whitespace runs
collapsed to one space; d = Levenshtein distance of those (code points); the length term is
max(len(reference.upper()), len(prediction.upper())) of the RAW strings (before stripping, with
upper-casing that may lengthen them: "ß" -> "SS"); similarity = 1 - d / length (1 when both raw
strings are empty); the best reference counts; a similarity below 0.5 becomes 0 (exactly 0.5 is
kept). No answer extraction: "Answer: Paris" against "Paris" scores 0.

em: 1.0 when the prediction equals any reference after lower-casing, stripping and collapsing
whitespace on both sides (so "ITC\\nLimited" = "itc  limited"), else 0.0.

Documented differences: the ST-VQA paper's ANLS and big_vision/Molmo (from pix2struct) drop a
similarity of exactly 0.5 (they keep only normalized distance < 0.5) and do not collapse
whitespace; big_vision is also case-sensitive. The MP-DocVQA framework takes the length term from
the normalised strings ("      abxy" vs "abcd": 0.5 there, 0.8 here). Molmo additionally scores
only the first line of the prediction and strips an "Answer:" prefix."""


def _similarity(prediction: str, pred_norm: str, reference: str) -> float:
    length = max(len(reference.upper()), len(prediction.upper()))
    if length == 0:
        return 1.0
    return 1.0 - Levenshtein.distance(collapse_ws(reference), pred_norm) / length


def anls(prediction: str, references: Sequence[str], threshold: float = THRESHOLD) -> float:
    """ANLS of one prediction against its references (0 for no references)."""
    if not references:
        return 0.0
    pred_norm = collapse_ws(prediction)
    best = max(_similarity(prediction, pred_norm, ref) for ref in references)
    return 0.0 if best < threshold else best


def lenient_exact_match(prediction: str, references: Sequence[str]) -> float:
    pred = collapse_ws(prediction)
    return 1.0 if any(collapse_ws(r) == pred for r in references) else 0.0


@registry.register("ansl_em", aliases=("anls", "anls_em", "docvqa"))
class ANLSExactMatch(Metric):
    __doc__ = EXPLAIN
    name = "ansl_em"
    subscores = ("anls", "em")
    summary = "DocVQA/RRC ANLS (threshold 0.5, 0.5 kept) and an exact match ignoring case and whitespace runs."
    explain = EXPLAIN

    def score_items(self, items: list[dict]) -> list[dict]:
        out = []
        for it in items:
            pred, refs = it["prediction"], it["references"]
            out.append({"anls": anls(pred, refs), "em": lenient_exact_match(pred, refs)})
        return out
