"""ScienceQA, image questions only (`lmms-lab/ScienceQA`, config `ScienceQA-IMG`, split `test`).

Rows carry ``choices`` (2-5 strings) and ``answer`` (0-based int). There is no id column, so the
row index is the id. Default prompt as lmms-eval renders it: ``Context: {hint}\\n`` (only when the
hint is non-empty), the question, ``A. option`` lines, then the letter instruction. The Molmo style
uses ``A: option`` lines; the hint, when present, goes before the question (MolmoE's own loader
replaces the question by the hint twice, a bug this harness does not copy).
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.types import Sample
from harness.tasks import register
from harness.tasks.base import LETTERS, DatasetSpec, MultipleChoiceTask

MC_INSTRUCTION = "\nAnswer with the option's letter from the given choices directly."


@register
class ScienceQA(MultipleChoiceTask):
    name = "scienceqa"
    aliases = ("scienceqa-img",)
    description = "ScienceQA image questions: multiple choice, 2-5 options"
    max_new_tokens = 16
    molmo_style = "science_qa"
    dataset = DatasetSpec(
        hub_id="lmms-lab/ScienceQA",
        config="ScienceQA-IMG",
        split="test",
        labeled=True,
        required_columns=("image", "question", "choices"),
        label_columns=("answer",),
        splits={"validation": True, "test": True},
    )

    def samples_from_row(self, row, index):
        question = self._text(row, "question", index)
        choices = row.get("choices")
        if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
            raise HarnessError(f"row {index}: column 'choices' of task scienceqa must be a list of strings, got {type(choices).__name__}")
        if not 2 <= len(choices) <= len(LETTERS):
            raise HarnessError(f"row {index}: scienceqa needs 2 to {len(LETTERS)} choices, got {len(choices)}")
        answer = row.get("answer")
        if answer is not None:
            if isinstance(answer, bool) or not isinstance(answer, int):
                raise HarnessError(f"row {index}: column 'answer' of task scienceqa must be an int index, got {type(answer).__name__} {answer!r}")
            if not 0 <= answer < len(choices):
                raise HarnessError(f"row {index}: scienceqa answer index {answer} is outside its {len(choices)} choices")
        hint = row.get("hint") or ""
        if not isinstance(hint, str):
            raise HarnessError(f"row {index}: column 'hint' of task scienceqa must be a string, got {type(hint).__name__}")
        meta = {k: row[k] for k in ("subject", "topic", "category", "skill", "grade") if isinstance(row.get(k), str)}
        return [
            Sample(
                id=str(index),
                task=self.name,
                question=question,
                image=row.get("image"),
                choices=list(choices),
                answer=answer,
                references=None if answer is None else [choices[answer]],
                image_id=index,
                context=hint,
                meta=meta,
            )
        ]

    def prompt_default(self, sample: Sample) -> str:
        context = f"Context: {sample.context}\n" if sample.context else ""
        return f"{context}{sample.question}\n{self.options_block(sample.choices, '.')}{MC_INSTRUCTION}"

    def molmo_body(self, sample: Sample) -> str:
        question = f"{sample.context}\n{sample.question}" if sample.context else sample.question
        return f"{question}\n{self.options_block(sample.choices, ':')}\n"
