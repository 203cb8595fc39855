"""TallyQA (`vikhyatk/tallyqa-test`, split `test`): counting, reported as simple and complex.

One row per image with a ``qa`` list of ``{question, answer, is_simple}``: each entry becomes one
sample ``<row>-<k>`` whose ``group`` is ``simple`` or ``complex`` (the metric reports both as
sub-scores). Not in lmms-eval; the default prompt asks for a single number.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.errors import HarnessError
from harness.types import Sample
from harness.tasks import register
from harness.tasks.base import CountTask, DatasetSpec


@register
class TallyQA(CountTask):
    name = "tallyqa"
    aliases = ("tally-qa",)
    description = "TallyQA counting; simple and complex questions scored separately"
    max_new_tokens = 16
    molmo_style = "tally_qa"
    dataset = DatasetSpec(
        hub_id="vikhyatk/tallyqa-test",
        config=None,
        split="test",
        labeled=True,
        required_columns=("image", "qa"),
        splits={"test": True},
    )

    def samples_from_row(self, row, index):
        qa = row.get("qa")
        if not isinstance(qa, (list, tuple)) or not qa:
            raise HarnessError(f"row {index}: column 'qa' of task tallyqa must be a non-empty list of {{question, answer, is_simple}}")
        samples = []
        for k, item in enumerate(qa):
            if not isinstance(item, Mapping):
                raise HarnessError(f"row {index}: qa[{k}] of task tallyqa must be an object, got {type(item).__name__}")
            question = item.get("question")
            if not isinstance(question, str) or not question.strip():
                raise HarnessError(f"row {index}: qa[{k}] of task tallyqa has an empty or missing 'question'")
            answer = item.get("answer")
            if isinstance(answer, str) and answer.strip().isdigit():
                answer = int(answer)
            if answer is not None and (isinstance(answer, bool) or not isinstance(answer, int)):
                raise HarnessError(f"row {index}: qa[{k}] answer of task tallyqa must be an integer count, got {answer!r}")
            simple = item.get("is_simple")
            group = None if simple is None else ("simple" if simple else "complex")
            samples.append(
                Sample(
                    id=f"{index}-{k}",
                    task=self.name,
                    question=question,
                    image=row.get("image"),
                    references=None if answer is None else [str(answer)],
                    image_id=row.get("image_id", index),
                    group=group,
                )
            )
        return samples
