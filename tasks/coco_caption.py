"""COCO Caption 2017 val (`lmms-lab/COCO-Caption2017`, split `val`; test has no references).

One sample per image; ``answer`` holds the (about five) reference captions; ``question_id`` is the
image file name and the image id is the number before ``.jpg``. CIDEr is corpus-level. Default
prompt as lmms-eval renders it for the 2014/2017 sets; the Molmo style wraps the same prompt
(MolmoE ships no COCO evaluation loader, only the `coco_captioning` style tag).
"""

from __future__ import annotations

import re

from harness.types import Sample
from harness.tasks import register
from harness.tasks.base import CaptionTask, DatasetSpec

CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."


def coco_image_id(question_id) -> int | str:
    """``"000000397133.jpg"`` -> 397133; anything else is returned unchanged."""
    m = re.search(r"(\d+)\.(?:jpg|jpeg|png)$", str(question_id))
    return int(m.group(1)) if m else question_id


@register
class COCOCaption(CaptionTask):
    name = "coco-caption"
    aliases = ("coco-cap",)
    description = "COCO captions (2017 val, 5k images); CIDEr over the corpus"
    molmo_style = "coco_captioning"
    dataset = DatasetSpec(
        hub_id="lmms-lab/COCO-Caption2017",
        config=None,
        split="val",
        labeled=True,
        required_columns=("image", "question_id"),
        label_columns=("answer",),
        splits={"val": True, "test": False},
        notes="test has no references (server only); 2017 val is not the Karpathy test split",
    )

    def samples_from_row(self, row, index):
        qid = row["question_id"]
        return [
            Sample(
                id=str(qid),
                task=self.name,
                question=CAPTION_PROMPT,
                image=row.get("image"),
                references=self._str_list(row, "answer", index),
                image_id=coco_image_id(qid),
            )
        ]
