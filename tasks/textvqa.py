"""TextVQA (`lmms-lab/textvqa`, split `validation`; test answers are empty: EvalAI only).

Ten human answers per question (strings). Default prompt as lmms-eval renders it: the question
with its first letter capitalised, then the single-word instruction.
"""

from __future__ import annotations

from harness.tasks import register
from harness.tasks.base import DatasetSpec, VQATask


@register
class TextVQA(VQATask):
    name = "textvqa"
    aliases = ("textvqa-val",)
    description = "TextVQA: read text in natural images; 10 answers per question"
    molmo_style = "text_vqa"
    capitalize_question = True
    dataset = DatasetSpec(
        hub_id="lmms-lab/textvqa",
        config=None,
        split="validation",
        labeled=True,
        required_columns=("image", "question", "question_id"),
        label_columns=("answers",),
        splits={"train": True, "validation": True, "test": False},
        notes="test answers are empty strings (scored on EvalAI)",
    )
