"""VQAv2 (`lmms-lab/VQAv2`, split `validation`; testdev/test labels are hidden: EvalAI only).

``answers`` is a list of ten ``{answer, answer_confidence, answer_id}`` dicts; the references are
their ``answer`` strings. Default prompt as lmms-eval renders it.
"""

from __future__ import annotations

from harness.tasks import register
from harness.tasks.base import DatasetSpec, VQATask


@register
class VQAv2(VQATask):
    name = "vqav2"
    aliases = ("coco-vqa",)
    description = "VQAv2 on COCO images; 10 answers per question"
    molmo_style = "vqa2"
    meta_columns = ("question_type", "answer_type")
    dataset = DatasetSpec(
        hub_id="lmms-lab/VQAv2",
        config=None,
        split="validation",
        labeled=True,
        required_columns=("image", "question", "question_id"),
        label_columns=("answers",),
        splits={"validation": True, "testdev": False, "test": False},
        notes="testdev and test labels are hidden (EvalAI)",
    )
