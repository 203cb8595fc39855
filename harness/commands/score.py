"""``harness score --metric NAME FILE.jsonl [--output OUT.jsonl]``: score predictions without a model.

Input: one JSON object per line (docs/contracts.md): ``{"id", "prediction", "references"}``, plus
``choices`` and ``answer`` for ``mc`` and ``image_id`` for ``cider_score``. Output: one line per
input line, ``{"id": ..., <sub-score>: float, ...}`` (plus extras such as ``pred_index``), to
``--output`` or else to stdout; then the aggregate ``{"metric", "n", "scores"}`` as the last line
of stdout. Every input problem is a one-line error naming the file and line (exit 2), and
``--output`` is written atomically only after everything scored, so it is never half-written.
"""

from __future__ import annotations

import json
import sys

import click

from harness.errors import HarnessError
from harness.jsonio import atomic_write_text, dumps_line, iter_jsonl


def read_items(path: str, metric) -> list[dict]:
    """All items of ``path``, each checked by ``metric``; bad input names the file and line."""
    items = []
    check = getattr(metric, "check_item", None)  # plugins that are not Metric subclasses may lack it
    for lineno, obj in iter_jsonl(path):
        problem = check(obj) if check is not None else None
        if problem:
            raise HarnessError(f"{path}:{lineno}: {problem}")
        items.append(obj)
    return items


def dump(obj: dict) -> str:
    """One JSON line; text that cannot be UTF-8 encoded (lone surrogates from ``\\ud800``
    escapes in the input) is written as JSON escapes instead of failing."""
    line = dumps_line(obj)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj, ensure_ascii=True, default=str)
    return line


def score_file(metric_name: str, path: str) -> tuple[object, list[dict], object]:
    from harness.metrics import get_metric

    metric = get_metric(metric_name)
    items = read_items(path, metric)
    result = metric.score(items)
    return metric, items, result


@click.command("score")
@click.option("--metric", "metric_name", required=True, metavar="NAME",
              help="Metric name (see `harness metrics`), or package.module:attr of a plugin.")
@click.argument("file", metavar="FILE.jsonl")
@click.option("--output", "-o", metavar="OUT.jsonl", default=None,
              help="Write the per-line scores here (atomically) instead of to stdout.")
def command(metric_name: str, file: str, output: str | None) -> None:
    """Score a predictions JSONL file with a metric (no model).

    The aggregate {"metric", "n", "scores"} is always the last line of stdout.
    """
    metric, items, result = score_file(metric_name, file)
    lines = [dump({"id": item["id"], **scores}) for item, scores in zip(items, result.per_item)]
    aggregate = {"metric": metric.name, "n": len(items), "scores": {k: float(v) for k, v in result.aggregate.items()}}
    if output is not None:
        try:
            atomic_write_text(output, "".join(line + "\n" for line in lines))
        except OSError as exc:
            raise HarnessError(f"cannot write --output '{output}': {exc.strerror or exc}; choose a writable file path")
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.write(dump(aggregate) + "\n")
    sys.stdout.flush()
