"""The :class:`Task` interface and the shared behaviour of the five answer kinds.

A task turns one dataset row (in the hub schema) into :class:`~harness.types.Sample` objects,
renders prompts in named styles, post-processes model text, and builds the metric item dict of
docs/contracts.md, "Metric items". It adds no metric code: ``metric`` names a metric in ``metrics.registry``.

Prompt styles: ``default`` is the prompt as lmms-eval renders it for the benchmark; ``molmo`` is
Molmo's evaluation prompt ``<style_tag>: <prompt>`` with its per-task dataset prefix (``vqa2``,
``text_vqa``, ``doc_qa``, ``science_qa``, ``coco_captioning``, ``okvqa``, ``st_qa``, ``tally_qa``)
and the ``A: option`` layout for multiple choice. The chat framing (``User: ... Assistant:``) is
the model's: Molmo's processor adds it, other models through their prompt template. A subclass adds a style by extending
:meth:`Task.style_renderers`.

Scoring needs labels: a split without public labels (ST-VQA test, DocVQA test, ...) gives samples
with ``references=None`` and :meth:`Task.can_score` returns False; the runner then writes
predictions but no scores.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from harness.errors import HarnessError
from harness.types import Sample

LETTERS = "ABCDEFG"
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."


@dataclass(frozen=True)
class DatasetSpec:
    """Where the real benchmark lives and what its rows must contain."""

    hub_id: str
    config: str | None
    split: str  # the evaluation split used by default
    labeled: bool  # does the default split have public labels?
    required_columns: tuple[str, ...]  # always needed
    label_columns: tuple[str, ...] = ()  # needed to score; absent/empty means unlabeled
    splits: Mapping[str, bool] = field(default_factory=dict)  # known split -> has public labels
    notes: str = ""  # e.g. "test labels are hidden (EvalAI)"

    def split_labeled(self, split: str) -> bool | None:
        """Whether a split has public labels; None when the split is not known here."""
        if split == self.split:
            return self.labeled
        return self.splits.get(split)

    @property
    def hub_name(self) -> str:
        return "/".join(p for p in (self.hub_id, self.config, self.split) if p)


class Task:
    """One benchmark. Subclasses set the class attributes and implement :meth:`samples_from_row`."""

    name: str = ""
    aliases: tuple[str, ...] = ()
    metric: str = ""
    dataset: DatasetSpec
    max_new_tokens: int = 16
    image_column: str = "image"
    molmo_style: str = ""  # MolmoE style tag, e.g. "vqa2"
    molmo_max_new_tokens: int = 12  # MolmoE's evaluation setting for all eight tasks
    description: str = ""

    # -- rows -> samples ----------------------------------------------------------------------
    def samples_from_row(self, row: Mapping[str, Any], index: int) -> list[Sample]:
        raise NotImplementedError

    # -- prompts ------------------------------------------------------------------------------
    def style_renderers(self) -> dict[str, Callable[[Sample], str]]:
        return {"default": self.prompt_default, "molmo": self.prompt_molmo}

    @property
    def styles(self) -> tuple[str, ...]:
        return tuple(self.style_renderers())

    def prompt(self, sample: Sample, style: str | None = None) -> str:
        renderers = self.style_renderers()
        key = style or "default"
        if key not in renderers:
            raise HarnessError(f"task '{self.name}' has no prompt style '{key}'; choose one of: {', '.join(renderers)}")
        return renderers[key](sample)

    def prompt_default(self, sample: Sample) -> str:
        return f"{sample.question}{SHORT_ANSWER}"

    def molmo_body(self, sample: Sample) -> str:
        return sample.question

    def prompt_molmo(self, sample: Sample) -> str:
        return f"{self.molmo_style}: {self.molmo_body(sample)}"

    def max_new_tokens_for(self, style: str | None = None) -> int:
        return self.molmo_max_new_tokens if style == "molmo" else self.max_new_tokens

    # -- answers ------------------------------------------------------------------------------
    def postprocess(self, text: str) -> str:
        """Model text -> the answer string the metric sees: the first non-empty line, stripped."""
        for line in str(text).strip().splitlines():
            if line.strip():
                return line.strip()
        return ""

    def metric_item(self, sample: Sample, prediction: str) -> dict:
        """The metric item dict (docs/contracts.md) for this task's metric (plus ``group`` when the sample
        belongs to a sub-score group, e.g. TallyQA simple/complex)."""
        item = {"id": sample.id, "prediction": prediction, "references": sample.references}
        if sample.group is not None:
            item["group"] = sample.group
        return item

    def target(self, sample: Sample) -> str:
        """The ideal short answer in the default style (training target of the reference model)."""
        raise NotImplementedError

    def can_score(self, samples: list[Sample]) -> bool:
        """True when every sample that loaded has labels (unlabeled splits are never scored)."""
        usable = [s for s in samples if s.error is None] or samples
        return bool(usable) and all(s.labeled for s in usable)

    # -- helpers for row parsing --------------------------------------------------------------
    def _text(self, row: Mapping[str, Any], column: str, index: int, *, allow_empty: bool = False) -> str:
        value = row.get(column)
        if not isinstance(value, str):
            raise HarnessError(
                f"row {index}: column '{column}' of task {self.name} must be a string, got {type(value).__name__}; fix the data file"
            )
        if not allow_empty and not value.strip():
            raise HarnessError(f"row {index}: empty '{column}' in task {self.name}; remove the row or fill it in")
        return value

    def _str_list(self, row: Mapping[str, Any], column: str, index: int) -> list[str] | None:
        """A list-of-strings label column; None (unlabeled) when absent, null, empty or all ''."""
        value = row.get(column)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)):
            raise HarnessError(
                f"row {index}: column '{column}' of task {self.name} must be a list of strings, got {type(value).__name__}; fix the data file"
            )
        out = []
        for v in value:
            if isinstance(v, Mapping):  # e.g. VQAv2 / HF OK-VQA answer dicts
                v = v.get("raw_answer", v.get("answer"))
            if not isinstance(v, (str, int)) or isinstance(v, bool):
                raise HarnessError(f"row {index}: column '{column}' of task {self.name} holds {type(v).__name__}, expected strings")
            out.append(str(v))
        if not out or all(not v.strip() for v in out):
            return None
        return out

    def __repr__(self) -> str:
        return f"<Task {self.name} metric={self.metric} data={self.dataset.hub_name}>"


def majority(references: list[str]) -> str:
    """The most frequent reference; ties go to the one seen first."""
    counts = Counter(references)
    first = {r: i for i, r in reversed(list(enumerate(references)))}
    return max(counts, key=lambda r: (counts[r], -first[r]))


class MultipleChoiceTask(Task):
    """Options A..E, the answer an int index; scored by the `mc` metric."""

    metric = "mc"

    def options_block(self, choices: list[str], sep: str) -> str:
        return "\n".join(f"{LETTERS[i]}{sep} {c}" for i, c in enumerate(choices))

    def metric_item(self, sample: Sample, prediction: str) -> dict:
        refs = None if sample.answer is None else [sample.choices[sample.answer]]
        return {"id": sample.id, "prediction": prediction, "references": refs, "choices": list(sample.choices or []), "answer": sample.answer}

    def target(self, sample: Sample) -> str:
        if sample.answer is None:
            raise HarnessError(f"sample {sample.id} has no answer; an unlabeled sample has no target")
        return LETTERS[sample.answer]


def _references_or_raise(sample: Sample) -> list[str]:
    if not sample.references:
        raise HarnessError(f"sample {sample.id} has no references; an unlabeled sample has no target")
    return sample.references


class ShortAnswerTask(Task):
    """One question per row with a list of answer strings, configured declaratively.

    Subclasses name their columns (``id_column``, ``answers_column``, ``image_id_columns``: the
    first of these present in a row gives the image id, ``meta_columns``: copied into
    ``Sample.meta`` when they hold strings) and the default prompt (``capitalize_question``,
    ``instruction`` appended after the question). Override :meth:`row_meta` for other metadata.
    """

    id_column: str = "question_id"
    question_column: str = "question"
    answers_column: str = "answers"
    image_id_columns: tuple[str, ...] = ("image_id",)
    meta_columns: tuple[str, ...] = ()
    capitalize_question: bool = False
    instruction: str = SHORT_ANSWER

    def row_meta(self, row: Mapping[str, Any]) -> dict:
        return {k: row[k] for k in self.meta_columns if isinstance(row.get(k), str)}

    def row_image_id(self, row: Mapping[str, Any]) -> Any:
        value = None
        for column in reversed(self.image_id_columns):
            value = row.get(column, value)
        return value

    def samples_from_row(self, row, index):
        return [
            Sample(
                id=str(row[self.id_column]),
                task=self.name,
                question=self._text(row, self.question_column, index),
                image=row.get(self.image_column),
                references=self._str_list(row, self.answers_column, index),
                image_id=self.row_image_id(row),
                meta=self.row_meta(row),
            )
        ]

    def prompt_default(self, sample: Sample) -> str:
        question = sample.question.capitalize() if self.capitalize_question else sample.question
        return f"{question}{self.instruction}"


class VQATask(ShortAnswerTask):
    """Ten human answers per question; scored by `vqa_score`."""

    metric = "vqa_score"
    max_new_tokens = 16

    def target(self, sample: Sample) -> str:
        return majority(_references_or_raise(sample))


class CountTask(Task):
    """Counting questions with an integer answer; scored by `em` (first count in the answer)."""

    metric = "em"

    def prompt_default(self, sample: Sample) -> str:
        return f"{sample.question}\nAnswer with a single number."

    def target(self, sample: Sample) -> str:
        return _references_or_raise(sample)[0]


class ANLSTask(ShortAnswerTask):
    """Reading questions scored by ANLS plus exact match (`ansl_em`)."""

    metric = "ansl_em"
    max_new_tokens = 32

    def target(self, sample: Sample) -> str:
        return _references_or_raise(sample)[0]


class CaptionTask(Task):
    """One caption per image against ~5 references; corpus-level `cider_score`."""

    metric = "cider_score"
    max_new_tokens = 64

    def postprocess(self, text: str) -> str:
        return " ".join(str(text).split())

    def metric_item(self, sample: Sample, prediction: str) -> dict:
        return {"id": sample.id, "prediction": prediction, "references": sample.references, "image_id": sample.image_id}

    def prompt_default(self, sample: Sample) -> str:
        return sample.question

    def target(self, sample: Sample) -> str:
        return _references_or_raise(sample)[0]
