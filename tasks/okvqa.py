"""OK-VQA (`lmms-lab/OK-VQA`, split `val2014`): questions needing outside knowledge.

``answers`` is a list of ten strings in lmms-lab's copy; HuggingFaceM4's answer dicts are read
through their ``raw_answer`` (what MolmoE scores against). Default prompt as lmms-eval renders it.
"""

from __future__ import annotations

from harness.tasks import register
from harness.tasks.base import SHORT_ANSWER, DatasetSpec, VQATask

UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'."


@register
class OKVQA(VQATask):
    name = "okvqa"
    aliases = ("ok-vqa",)
    description = "OK-VQA: questions that need outside knowledge; 10 answers per question"
    molmo_style = "okvqa"
    instruction = UNANSWERABLE + SHORT_ANSWER
    dataset = DatasetSpec(
        hub_id="lmms-lab/OK-VQA",
        config=None,
        split="val2014",
        labeled=True,
        required_columns=("image", "question", "question_id"),
        label_columns=("answers",),
        splits={"val2014": True},
    )
