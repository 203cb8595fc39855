"""Deterministic synthetic rows in each benchmark's exact hub schema (SYNTHETIC data, not the real
benchmarks).

``generate_rows(task, split, n, seed)`` returns ``n`` row dicts with the task's hub column names and
types and 192x192 PIL images: coloured shapes to name and count, rendered words on signs, short
"documents" of label/value lines, and captions with five references each. Content is drawn from
small closed vocabularies (18 four-letter sign words in minimal pairs, 6 shapes, 6 colours, 10
names, 8 cities, short numbers) on layouts aligned to the 16 px patch grid: objects sit at fixed
cell centres, and sign words, document titles and document values are written one character per
16x16 cell (like a display board), so each high-tier vision patch holds one glyph and a tiny VLM
trained from scratch can learn to read it at 192x192, while a 64x64 view (a 5 px glyph, three per
patch) loses the detail. Multiple-choice options are a run of consecutive entries of the vocabulary in
its own order (2-5 of them), so the answer letter follows from the answer and the first option.

Splits: ``eval`` (what ships as bundled samples) and ``train`` (for the reference model). Every
image's pixels are hashed and the hash decides the split (1 in 8 images belong to ``eval``), so
no train image can ever equal an eval image, for any seeds and sizes. Row ``i``
depends only on ``(task, split, seed, i)``: ``n=50`` is a prefix of ``n=100``.

``python -m tools.synthetic --write-bundled`` regenerates ``tasks/samples/<task>.parquet``.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from harness.errors import HarnessError
from harness.tasks.data import SAMPLES_DIR
from tools.synthetic.drawing import BUNDLED_ROWS, BUNDLED_SEED, EVAL_SHARE, SPLITS
from tools.synthetic.scenes import GENERATORS


def scene_split(task: str, scene) -> str:
    """Which split an image belongs to, from a key of it (``generate_rows`` passes the SHA-256 of
    its pixels): a hash, so train and eval are disjoint by construction."""
    h = hashlib.sha256(f"{task}|{scene!r}".encode()).digest()
    return "eval" if int.from_bytes(h[:8], "big") % EVAL_SHARE == 0 else "train"


def _task_name(task) -> str:
    name = getattr(task, "name", task)
    if name not in GENERATORS:
        from harness.tasks import get_task

        name = get_task(name).name
    if name not in GENERATORS:
        raise HarnessError(f"no synthetic generator for task '{name}'; synthetic data exists for: {', '.join(GENERATORS)}")
    return name


def generate_rows(task, split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` synthetic rows in ``task``'s hub schema (PIL images). Deterministic in
    ``(task, split, seed)``; row ``i`` does not depend on ``n``; train and eval never share an image."""
    name = _task_name(task)
    if split not in SPLITS:
        raise HarnessError(f"synthetic split must be one of {', '.join(SPLITS)}, got '{split}'")
    if not isinstance(n, int) or n < 0:
        raise HarnessError(f"number of synthetic rows must be a non-negative integer, got {n!r}")
    make = GENERATORS[name]
    rows, seen = [], set()
    i = 0
    while len(rows) < n:
        rng = random.Random(f"{name}|{split}|{seed}|{i}")
        for _attempt in range(10_000):
            gen = make(rng, i, seed, split)
            next(gen)  # the scene parameters
            row = next(gen)
            key = hashlib.sha256(row["image"].tobytes()).hexdigest()  # the pixels decide the split
            if scene_split(name, key) == split and key not in seen:
                break
        else:  # pragma: no cover - the scene spaces are far larger than any request
            raise HarnessError(f"synthetic generator for {name} ran out of distinct {split} images")
        seen.add(key)
        rows.append(row)
        i += 1
    return rows


def generate_samples(task, split: str, n: int, seed: int = 0) -> list:
    """``generate_rows`` turned into :class:`~harness.types.Sample` objects by the task itself
    (TallyQA rows give several samples each), e.g. for training: ``task.prompt(s)`` -> ``task.target(s)``."""
    from harness.tasks import get_task

    task_obj = get_task(_task_name(task))
    out = []
    for index, row in enumerate(generate_rows(task_obj.name, split, n, seed)):
        out.extend(task_obj.samples_from_row(row, index))
    return out


# -- hub features (column types) for writing parquet -------------------------------------------
def hub_features(task):
    """The ``datasets.Features`` of the task's hub schema (as written to the bundled files)."""
    from datasets import Features, Image as HFImage, List, Value

    s = Value("string")
    name = _task_name(task)
    table = {
        "scienceqa": {"image": HFImage(), "question": s, "choices": List(s), "answer": Value("int8"), "hint": s, "task": s, "grade": s,
                      "subject": s, "topic": s, "category": s, "skill": s, "lecture": s, "solution": s},
        "textvqa": {"image_id": s, "question_id": Value("int32"), "question": s, "question_tokens": List(s), "image": HFImage(),
                    "image_width": Value("int32"), "image_height": Value("int32"), "flickr_original_url": s, "flickr_300k_url": s,
                    "answers": List(s), "image_classes": List(s), "set_name": s, "ocr_tokens": List(s)},
        "okvqa": {"question_id": s, "image": HFImage(), "question": s, "answers": List(s), "question_type": s, "answer_type": s},
        "vqav2": {"question_type": s, "multiple_choice_answer": s,
                  "answers": List({"answer": s, "answer_confidence": s, "answer_id": Value("int64")}),
                  "image_id": Value("int64"), "answer_type": s, "question_id": Value("int64"), "question": s, "image": HFImage()},
        "tallyqa": {"image": HFImage(), "qa": List({"question": s, "answer": Value("int64"), "is_simple": Value("bool")})},
        "stvqa": {"question_id": Value("int64"), "question": s, "image": HFImage(), "file_name": s, "dataset": s, "answers": List(s)},
        "docvqa": {"questionId": s, "question": s, "question_types": List(s), "image": HFImage(), "docId": Value("int64"),
                   "ucsf_document_id": s, "ucsf_document_page_no": s, "answers": List(s), "data_split": s},
        "coco-caption": {"question_id": s, "image": HFImage(), "question": s, "answer": List(s), "id": Value("int64"),
                         "license": Value("int8"), "file_name": s, "coco_url": s, "height": Value("int32"), "width": Value("int32"),
                         "date_captured": s},
    }
    return Features(table[name])


def write_bundled(out_dir: Path | None = None, tasks=None) -> list[Path]:
    """Regenerate the bundled synthetic eval files (seed ``BUNDLED_SEED``)."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    out_dir = Path(out_dir) if out_dir else SAMPLES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in tasks or GENERATORS:
        rows = generate_rows(name, "eval", BUNDLED_ROWS[name], BUNDLED_SEED)
        table = Dataset.from_list(rows, features=hub_features(name)).data.table
        meta = dict(table.schema.metadata or {})
        meta[b"harness_synthetic"] = f"tasks.synthetic seed={BUNDLED_SEED} split=eval rows={len(rows)}".encode()
        path = out_dir / f"{name}.parquet"
        pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")
        written.append(path)
    return written
