"""DocVQA (`lmms-lab/DocVQA`, config `DocVQA`, split `validation`; test answers are null).

``questionId`` is a string (an int in HuggingFaceM4's copy: both read). ``answers`` is one or more
acceptable strings. Scored by ANLS plus exact match. Default prompt as lmms-eval renders it.
"""

from __future__ import annotations

from harness.tasks import register
from harness.tasks.base import ANLSTask, DatasetSpec


@register
class DocVQA(ANLSTask):
    name = "docvqa"
    aliases = ("docvqa-val",)
    description = "DocVQA: questions on scanned documents; ANLS"
    molmo_style = "doc_qa"
    id_column = "questionId"
    image_id_columns = ("docId",)
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

    def row_meta(self, row):
        if isinstance(row.get("question_types"), list):
            return {"question_types": [str(t) for t in row["question_types"]]}
        return {}
