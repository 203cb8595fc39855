"""VQA accuracy (VQAv2, TextVQA, OK-VQA): ``vqa_score`` and the Molmo-compatible ``vqa_score_molmo``."""

from __future__ import annotations

from typing import Any, Sequence

from harness.metrics import registry
from harness.metrics.base import Metric, _type_name
from harness.metrics.normalize import vqa_normalize

_EXPLAIN_COMMON = """\
Answer processing (identical to the official GT-Vision-Lab/VQA vqaEval.py, current version):
newlines/tabs -> spaces and strip; the punctuation characters ; / [ ] " { } ( ) = + \\ _ - > < @ `
, ? ! are deleted where they touch a space (or anywhere when the answer holds a digit-comma-digit
such as 1,000) and replaced by a space elsewhere; periods not followed by a digit are deleted (at
most 32, as the official re.sub count quirk does: 3.5 keeps its period, "dog." loses it); then
lower-case, number words none/zero..ten -> 0..10, articles a/an/the dropped, contractions from the
official table restored (dont -> don't). Characters outside that list (' : & % $ and all non-ASCII
such as ¡ or the en dash) are kept; accents are not folded (café != cafe)."""

VQA_EXPLAIN = f"""\
vqa_score: the official VQA accuracy.

For n human answers (ten in VQAv2/TextVQA/OK-VQA), the prediction's accuracy is the mean over the
n leave-one-out subsets of min(#subset answers equal to the prediction / 3, 1). With k of the n
answers matching: (k * min((k-1)/3, 1) + (n-k) * min(k/3, 1)) / n, so k=1 -> 0.3, k=2 -> 0.6,
k=3 -> 0.9, k>=4 -> 1.0 for ten answers. A single reference can never score (its only subset is
empty), as in the official definition.

{_EXPLAIN_COMMON}

The processing is applied ALWAYS, to the prediction and to every human answer. Documented
differences from other implementations:
- official vqaEval.py: processes the human answers only with the punctuation rule, and only when
  they are not all identical; so "Yes" against ten "yes" scores 0 there, "two" does not match a
  human "two" after the prediction became "2", and " red" does not match "red". We score 1 / match
  / match, as lmms-eval's VQAv2 task does.
- Molmo (vqa_score_molmo): min(k/3, 1) over all n answers without the leave-one-out mean (k=3 ->
  1.0 instead of 0.9), and only the first line of the prediction.
- lmms-eval TextVQA (EvalAI processor): additionally deletes commas and ? and splits "'s" before
  the official processing, so "left,right" -> "leftright" and "man's" -> "man 's".
References may be strings or VQAv2 answer dicts ({{"answer": ...}})."""

MOLMO_EXPLAIN = f"""\
vqa_score_molmo: VQA accuracy as Molmo's evaluation computes it, to reproduce Molmo's published
numbers. The prediction is cut at its first line break (Molmo scores the first line only), then
both sides get the same answer processing as vqa_score, and the score is min(k / 3, 1) where k is
the number of the n human answers equal to the prediction: no leave-one-out mean. Against
vqa_score: k=1 -> 0.333 (0.3), k=2 -> 0.667 (0.6), k=3 -> 1.0 (0.9); a multi-line answer whose
first line is right scores as that line.

{_EXPLAIN_COMMON}"""


def answer_text(ref: Any) -> str:
    """A reference as text: strings as they are, VQAv2 answer dicts by their ``answer``."""
    if isinstance(ref, dict):
        return ref["answer"]
    return ref


def vqa_accuracy(prediction: str, references: Sequence[Any]) -> float:
    """Official VQA accuracy of one prediction against its human answers (strings or dicts)."""
    n = len(references)
    if n == 0:
        return 0.0
    pred = vqa_normalize(prediction)
    k = 0
    for ref in references:
        if vqa_normalize(answer_text(ref)) == pred:
            k += 1
    # each matching answer leaves k-1 matches in its subset, each other answer leaves k
    return (k * min(1.0, (k - 1) / 3) + (n - k) * min(1.0, k / 3)) / n


def first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.split("\n", 1)[0]


def vqa_accuracy_molmo(prediction: str, references: Sequence[Any]) -> float:
    """Molmo's VQA score: min(#matching answers / 3, 1) over all answers, first line only."""
    pred = vqa_normalize(first_line(prediction))
    k = sum(1 for ref in references if vqa_normalize(answer_text(ref)) == pred)
    return min(1.0, k / 3)


class _VQABase(Metric):
    def check_fields(self, item: dict) -> str | None:
        refs = item.get("references")
        if not isinstance(refs, list):
            return f"field 'references' must be a list of strings or answer dicts, got {_type_name(refs)}"
        if not refs:
            return "field 'references' is empty; give the human answers (ten for VQAv2/TextVQA/OK-VQA)"
        for ref in refs:
            if isinstance(ref, dict):
                if not isinstance(ref.get("answer"), str):
                    return "a reference answer dict has no string 'answer' field"
            elif not isinstance(ref, str):
                return f"field 'references' must hold strings or answer dicts, found {_type_name(ref)}"
        return None


@registry.register("vqa_score", aliases=("vqa", "vqa_accuracy"))
class VQAScore(_VQABase):
    __doc__ = VQA_EXPLAIN
    name = "vqa_score"
    subscores = ("vqa_score",)
    summary = "Official VQA accuracy: mean over leave-one-out subsets of min(#matches/3, 1), official answer processing always applied."
    explain = VQA_EXPLAIN

    def score_items(self, items: list[dict]) -> list[dict]:
        return [{"vqa_score": vqa_accuracy(it["prediction"], it["references"])} for it in items]


@registry.register("vqa_score_molmo", aliases=("molmo_vqa",))
class VQAScoreMolmo(_VQABase):
    __doc__ = MOLMO_EXPLAIN
    name = "vqa_score_molmo"
    subscores = ("vqa_score_molmo",)
    summary = "Molmo's VQA score: min(#matches/3, 1) over all answers (no leave-one-out), first line of the prediction."
    explain = MOLMO_EXPLAIN

    def score_items(self, items: list[dict]) -> list[dict]:
        return [{"vqa_score_molmo": vqa_accuracy_molmo(it["prediction"], it["references"])} for it in items]
