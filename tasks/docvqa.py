"""DocVQA (`lmms-lab/DocVQA`, config `DocVQA`, split `validation`; test answers are null).

``questionId`` is a string (an int in HuggingFaceM4's copy: both read). ``answers`` is one or more
acceptable strings. Scored by ANLS plus exact match. Default prompt as lmms-eval renders it.
"""

from __future__ import annotations

from harness.types import Sample
from tasks import register
from tasks.base import ANLSTask, DatasetSpec


@register
class DocVQA(ANLSTask):
    name = "docvqa"
    aliases = ("docvqa-val",)
    description = "DocVQA: questions on scanned documents; ANLS"
    molmo_style = "doc_qa"
    dataset = DatasetSpec(
        hub_id="lmms-lab/DocVQA",
        config="DocVQA",
        split="validation",
        labeled=True,
        required_columns=("image", "question", "questionId"),
        label_columns=("answers",),
        splits={"validation": True, "test": False},
        notes="test answers are null (submission only)",
    )

    def samples_from_row(self, row, index):
        meta = {}
        if isinstance(row.get("question_types"), list):
            meta["question_types"] = [str(t) for t in row["question_types"]]
        return [
            Sample(
                id=str(row["questionId"]),
                task=self.name,
                question=self._text(row, "question", index),
                image=row.get("image"),
                references=self._str_list(row, "answers", index),
                image_id=row.get("docId"),
                meta=meta,
            )
        ]
