"""TextVQA (`lmms-lab/textvqa`, split `validation`; test answers are empty: EvalAI only).

Ten human answers per question (strings). Default prompt as lmms-eval renders it: the question
with its first letter capitalised, then the single-word instruction.
"""

from __future__ import annotations

from harness.types import Sample
from tasks import register
from tasks.base import SHORT_ANSWER, DatasetSpec, VQATask


@register
class TextVQA(VQATask):
    name = "textvqa"
    aliases = ("textvqa-val",)
    description = "TextVQA: read text in natural images; 10 answers per question"
    molmo_style = "text_vqa"
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

    def samples_from_row(self, row, index):
        return [
            Sample(
                id=str(row["question_id"]),
                task=self.name,
                question=self._text(row, "question", index),
                image=row.get("image"),
                references=self._str_list(row, "answers", index),
                image_id=row.get("image_id"),
            )
        ]

    def prompt_default(self, sample: Sample) -> str:
        return f"{sample.question.capitalize()}{SHORT_ANSWER}"
