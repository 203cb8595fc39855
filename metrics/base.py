"""The metric interface: a named scorer over metric items (docs/contracts.md).

An *item* is a dict ``{"id", "prediction", "references", ...}`` (``mc`` adds ``choices`` and
``answer``; ``cider_score`` adds ``image_id``). A :class:`Metric` turns a list of items into a
:class:`MetricResult`: one dict per item holding every sub-score (plus extras such as the chosen
``pred_index``) and the aggregate over the whole list.

Metrics validate their items themselves (:meth:`Metric.check_item`), so the CLI can name the
offending file and line and the task runner gets a one-line :class:`~harness.errors.HarnessError`
instead of a traceback. Any *string* content is valid input: scoring never fails on text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from harness.errors import HarnessError


@dataclass
class MetricResult:
    """Scores of one call: ``per_item[i]`` belongs to ``items[i]``; ``aggregate`` maps every
    sub-score name to its value over the whole list."""

    per_item: list[dict]
    aggregate: dict[str, float] = field(default_factory=dict)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class Metric:
    """Base class. Subclasses set the class attributes and implement :meth:`score_items`."""

    name: str = ""
    subscores: tuple[str, ...] = ()
    corpus_level: bool = False
    summary: str = ""
    explain: str = ""
    #: fields every item must carry, beyond ``id``
    required: tuple[str, ...] = ("prediction", "references")

    # -- validation ---------------------------------------------------------------------------
    def check_item(self, item: Any) -> str | None:
        """Return a one-line description of what is wrong with ``item``, or None if it is valid."""
        if not isinstance(item, dict):
            return f"expected a JSON object, got {_type_name(item)}"
        for key in ("id",) + tuple(self.required):
            if key not in item:
                return f"missing field '{key}' (required by metric {self.name}: id, {', '.join(self.required)})"
        if item["id"] is None or isinstance(item["id"], (dict, list)):
            return f"field 'id' must be a string or number, got {_type_name(item['id'])}"
        if not isinstance(item["prediction"], str):
            return f"field 'prediction' must be a string, got {_type_name(item['prediction'])}"
        return self.check_fields(item)

    def check_fields(self, item: dict) -> str | None:
        """Metric-specific checks after the common ones; default: a non-empty list of strings."""
        refs = item.get("references")
        if not is_str_list(refs):
            return f"field 'references' must be a list of strings, got {_describe(refs)}"
        if not refs:
            return "field 'references' is empty; give at least one reference answer"
        return None

    def validate(self, items: Iterable[Any]) -> list[dict]:
        items = list(items)
        for index, item in enumerate(items):
            problem = self.check_item(item)
            if problem:
                ident = item.get("id", index) if isinstance(item, dict) else index
                raise HarnessError(f"metric {self.name}: item {ident!r}: {problem}")
        return items

    # -- scoring ------------------------------------------------------------------------------
    def score(self, items: list[dict]) -> MetricResult:
        """Validate and score ``items``; raises HarnessError on malformed items."""
        items = self.validate(items)
        per_item = self.score_items(items)
        return MetricResult(per_item=per_item, aggregate=self.aggregate(per_item))

    def score_items(self, items: list[dict]) -> list[dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def aggregate(self, per_item: list[dict]) -> dict[str, float]:
        """Mean of every sub-score over the items (0.0 for an empty list)."""
        n = len(per_item)
        return {s: (sum(float(d[s]) for d in per_item) / n if n else 0.0) for s in self.subscores}

    def __repr__(self) -> str:
        return f"<Metric {self.name} subscores={self.subscores}>"


def _describe(value: Any) -> str:
    if isinstance(value, list):
        bad = next((v for v in value if not isinstance(v, str)), None)
        return f"a list containing {_type_name(bad)}"
    return _type_name(value)
