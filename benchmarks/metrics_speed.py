"""Metric throughput: 100,000 VQA items, 100,000 ANLS items and a 5,000-image CIDEr corpus.

    python benchmarks/metrics_speed.py [--vqa 100000] [--anls 100000] [--cider 5000] [--seed 0]
                                       [--output benchmarks/results/metrics_speed.json]

Items are synthetic but shaped like the real data (ten human answers per VQA question drawn from a
skewed answer vocabulary with case/punctuation/number-word variants; DocVQA-like strings with
1-3 references and edited predictions; five reference captions per image). Each metric is timed
once, end to end through ``get_metric(name).score(items)`` in a fresh process state (the
normalisation caches start empty). Prints a table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.jsonio import atomic_write_json  # noqa: E402
from harness.metrics import get_metric  # noqa: E402

_WORDS = (
    "yes no red blue green white black two three four one dog cat man woman table tennis frisbee "
    "pizza kitchen street bus train sign stop left right wood metal grass water sky tree car "
    "umbrella snow beach surfboard giraffe zebra elephant horse bird sheep cow plate food"
).split()


def _variant(rng: random.Random, word: str) -> str:
    r = rng.random()
    if r < 0.5:
        return word
    if r < 0.6:
        return word.capitalize()
    if r < 0.7:
        return word + "."
    if r < 0.75:
        return "a " + word
    if r < 0.8:
        return f"the {word}s"
    if r < 0.85:
        return word + "!"
    if r < 0.9:
        return f"{word}-{rng.choice(_WORDS)}"
    return f"{word} {rng.choice(_WORDS)}"


def vqa_items(n: int, rng: random.Random) -> list[dict]:
    items = []
    weights = [1.0 / (i + 1) for i in range(len(_WORDS))]
    for i in range(n):
        main = rng.choices(_WORDS, weights)[0]
        refs = [_variant(rng, main) if rng.random() < 0.7 else _variant(rng, rng.choice(_WORDS)) for _ in range(10)]
        pred = _variant(rng, main if rng.random() < 0.6 else rng.choice(_WORDS))
        items.append({"id": i, "prediction": pred, "references": refs})
    return items


def _doc_string(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1960, 2024)}"
    if kind < 0.5:
        return f"${rng.randint(1, 99)},{rng.randint(0, 999):03d}.{rng.randint(0, 99):02d}"
    words = rng.sample(_WORDS, rng.randint(1, 5))
    return " ".join(w.capitalize() if rng.random() < 0.5 else w for w in words)


def _edit(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(0, 3)):
        op = rng.random()
        pos = rng.randrange(len(chars) + 1)
        if op < 0.4 and chars:
            chars[min(pos, len(chars) - 1)] = rng.choice("abcdefxyz0123456789 ")
        elif op < 0.7:
            chars.insert(pos, rng.choice("abcxyz "))
        elif chars:
            del chars[min(pos, len(chars) - 1)]
    out = "".join(chars)
    return out.upper() if rng.random() < 0.1 else out


def anls_items(n: int, rng: random.Random) -> list[dict]:
    items = []
    for i in range(n):
        refs = [_doc_string(rng) for _ in range(rng.randint(1, 3))]
        pred = _edit(rng, rng.choice(refs)) if rng.random() < 0.8 else _doc_string(rng)
        items.append({"id": i, "prediction": pred, "references": refs})
    return items


_SUBJECTS = ["a man", "a woman", "two dogs", "a cat", "a group of people", "a red bus", "a giraffe", "a child", "three zebras", "a surfer"]
_VERBS = ["riding", "standing next to", "sitting on", "walking down", "playing with", "looking at", "eating", "holding"]
_OBJECTS = ["a wave", "the street", "a wooden table", "a frisbee", "a slice of pizza", "an umbrella", "the grass", "a surfboard", "a train", "a kitchen counter"]
_PLACES = ["in a park", "on the beach", "in the city", "near a building", "in a field", "at night", "in the snow", ""]


def _caption(rng: random.Random) -> str:
    text = " ".join(p for p in (rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_PLACES)) if p)
    text = text[0].upper() + text[1:]
    return text + ("." if rng.random() < 0.7 else "")


def cider_items(n: int, rng: random.Random) -> list[dict]:
    return [{"id": i, "image_id": i, "prediction": _caption(rng), "references": [_caption(rng) for _ in range(5)]} for i in range(n)]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(metric_name: str, items: list[dict]) -> dict:
    metric = get_metric(metric_name)
    start, cpu_start, child_start = time.perf_counter(), time.process_time(), _children_cpu()
    result = metric.score(items)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start + _children_cpu() - child_start
    return {
        "metric": metric_name,
        "items": len(items),
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu, 4),  # this process + child processes (the Java tokenizer)
        "items_per_s": round(len(items) / seconds, 1) if seconds > 0 else None,
        "aggregate": result.aggregate,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vqa", type=int, default=100_000)
    parser.add_argument("--anls", type=int, default=100_000)
    parser.add_argument("--cider", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "metrics_speed.json"))
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    rng = random.Random(args.seed)
    runs = [
        ("vqa_score", vqa_items(args.vqa, rng), 5.0),
        ("ansl_em", anls_items(args.anls, rng), 5.0),
        ("cider_score", cider_items(args.cider, rng), None),
    ]
    rows = []
    for name, items, target in runs:
        row = _time(name, items)
        row["target_s"] = target
        row["meets_target"] = None if target is None else row["seconds"] < target
        rows.append(row)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"metric throughput ({os.cpu_count()} CPUs, load {load_before:.1f}, Python {platform.python_version()})")
    for col in ("metric", "items", "seconds", "cpu s", "items/s", "target"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for row in rows:
        target = "-" if row["target_s"] is None else f"< {row['target_s']:g} s " + ("ok" if row["meets_target"] else "MISSED")
        table.add_row(row["metric"], f"{row['items']:,}", f"{row['seconds']:.3f}", f"{row['cpu_seconds']:.3f}", f"{row['items_per_s']:,.0f}", target)
    Console().print(table)

    report = {
        "benchmark": "metrics_speed",
        "seed": args.seed,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        },
        "results": rows,
    }
    atomic_write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
