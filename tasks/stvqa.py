"""ST-VQA (`lmms-lab/ST-VQA`, split `test`, Task 3): scene text, scored by ANLS.

The hub split has **no answers** (the RRC server scores submissions), so hub runs write
predictions and refuse to score. Local copies with an ``answers`` list of strings (the official
train JSON's field, and the bundled synthetic split) are scored with ``ansl_em``.
"""

from __future__ import annotations

from harness.tasks import register
from harness.tasks.base import ANLSTask, DatasetSpec


@register
class STVQA(ANLSTask):
    name = "stvqa"
    aliases = ("st-vqa",)
    description = "ST-VQA scene text; hub test split is unlabeled (RRC server only)"
    molmo_style = "st_qa"
    image_id_columns = ("file_name", "question_id")
    dataset = DatasetSpec(
        hub_id="lmms-lab/ST-VQA",
        config=None,
        split="test",
        labeled=False,
        required_columns=("image", "question", "question_id"),
        label_columns=("answers",),
        splits={"test": False},
        notes="test answers are hidden (RRC server); scored only on local copies with answers",
    )
