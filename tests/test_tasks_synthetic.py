"""The synthetic generator: determinism, hub schema, train/eval disjointness, the bundled files,
and that each task's targets score perfectly with its metric."""

from __future__ import annotations

import hashlib

import pytest

from harness.errors import HarnessError
from harness.tasks import BUILTIN_TASKS, get_task
from harness.tasks.data import load_samples
from tools.synthetic import BUNDLED_ROWS, BUNDLED_SEED, SAMPLES_DIR, generate_rows, generate_samples, hub_features


def image_hash(img) -> str:
    return hashlib.sha1(img.tobytes()).hexdigest()


def row_key(row):
    return {k: (image_hash(v) if k == "image" else v) for k, v in row.items()}


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_deterministic_and_prefix_stable(name):
    a = generate_rows(name, "train", 12, seed=5)
    b = generate_rows(name, "train", 12, seed=5)
    c = generate_rows(name, "train", 6, seed=5)
    assert [row_key(r) for r in a] == [row_key(r) for r in b]
    assert [row_key(r) for r in a[:6]] == [row_key(r) for r in c]
    d = generate_rows(name, "train", 6, seed=6)
    assert [row_key(r) for r in d] != [row_key(r) for r in c]


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_rows_fit_the_hub_schema_exactly(name):
    from datasets import Dataset

    rows = generate_rows(name, "train", 4, seed=0)
    features = hub_features(name)
    assert list(rows[0]) == list(features)  # same columns, same order
    ds = Dataset.from_list(rows, features=features)  # raises on a type mismatch
    assert ds.features == features
    task = get_task(name)
    for col in task.dataset.required_columns + task.dataset.label_columns:
        assert col in rows[0]


def test_schema_details_from_datasets_md():
    sqa = generate_rows("scienceqa", "eval", 20, 0)
    assert all(isinstance(r["answer"], int) and 2 <= len(r["choices"]) <= 5 for r in sqa)
    assert any(r["hint"] == "" for r in sqa)
    vqa = generate_rows("vqav2", "eval", 3, 0)[0]
    assert len(vqa["answers"]) == 10 and set(vqa["answers"][0]) == {"answer", "answer_confidence", "answer_id"}
    tally = generate_rows("tallyqa", "eval", 3, 0)[0]
    assert set(tally) == {"image", "qa"} and all(set(q) == {"question", "answer", "is_simple"} for q in tally["qa"])
    assert isinstance(generate_rows("docvqa", "eval", 1, 0)[0]["questionId"], str)
    assert all(len(r["answer"]) == 5 for r in generate_rows("coco-caption", "eval", 10, 0))
    assert all(len(r["answers"]) == 10 for r in generate_rows("textvqa", "eval", 5, 0) + generate_rows("okvqa", "eval", 5, 0))


def _disjoint(name, n_train, n_eval):
    train = {image_hash(r["image"]) for r in generate_rows(name, "train", n_train, seed=1)}
    evals = [image_hash(s.image) for s in load_samples(name, "bundled", limit=n_eval).samples]
    assert not train & set(evals)


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_train_and_eval_never_share_an_image(name):
    from tools.synthetic import scene_split

    _disjoint(name, 150, 100)
    # the split is a function of the scene: every scene lands in exactly one split
    assert {scene_split(name, ("scene", k)) for k in range(64)} == {"eval", "train"}
    # and no (image, question) pair repeats inside one split
    samples = generate_samples(name, "train", 40, 2)
    pairs = [(image_hash(s.image), s.question) for s in samples]
    assert len(set(pairs)) == len(pairs)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_train_and_eval_never_share_an_image_large(name):
    _disjoint(name, 5000, 1000)


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_bundled_files_are_the_generator_output(name):
    bundled = load_samples(name, "bundled")
    made = generate_samples(name, "eval", BUNDLED_ROWS[name], BUNDLED_SEED)
    assert [(s.id, s.question, s.references, s.choices, s.answer, s.group) for s in bundled.samples] == \
        [(s.id, s.question, s.references, s.choices, s.answer, s.group) for s in made]
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(bundled.samples, made))


def test_bundled_package_is_small():
    total = sum(p.stat().st_size for p in SAMPLES_DIR.glob("*.parquet"))
    assert total < 5 * 1024 * 1024
    assert sorted(p.stem for p in SAMPLES_DIR.glob("*.parquet")) == sorted(BUILTIN_TASKS)


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_targets_score_perfectly_and_a_constant_answer_does_not(name):
    from harness.metrics import get_metric

    task = get_task(name)
    samples = load_samples(name, "bundled").samples
    metric = get_metric(task.metric)
    main = metric.subscores[0]
    perfect = metric.score([task.metric_item(s, task.postprocess(task.target(s))) for s in samples]).aggregate[main]
    if name == "coco-caption":  # CIDEr runs a Java tokenizer: one call is enough here
        assert perfect > 2.0
        return
    assert perfect == pytest.approx(1.0)
    constant = metric.score([task.metric_item(s, "2") for s in samples]).aggregate[main]
    assert constant < 0.3


def test_answer_variety():
    """No single answer dominates a task (a constant-answer model must not look good)."""
    from collections import Counter

    for name in BUILTIN_TASKS:
        samples = generate_samples(name, "train", 120, 0)
        task = get_task(name)
        counts = Counter(task.target(s) for s in samples)
        assert counts.most_common(1)[0][1] / len(samples) < 0.35, (name, counts.most_common(3))
    groups = Counter(s.group for s in generate_samples("tallyqa", "eval", 40, 0))
    assert groups["simple"] > 0 and groups["complex"] > 0


def test_bad_arguments():
    with pytest.raises(HarnessError, match="split must be one of eval, train"):
        generate_rows("vqav2", "test", 3)
    with pytest.raises(HarnessError, match="non-negative integer"):
        generate_rows("vqav2", "eval", -1)
    with pytest.raises(HarnessError, match="unknown task"):
        generate_rows("vqa3", "eval", 1)
    assert generate_rows(get_task("coco-vqa"), "eval", 0) == []


def test_layouts_sit_on_the_patch_grid():
    """Sign words one glyph per 16 px cell at patch-aligned corners; objects at cell centres;
    clutter never touches a sign (so it can neither hide a letter nor make two scenes one image)."""
    import random

    from tools.synthetic import drawing as D, scenes as S

    for i in range(300):
        rng = random.Random(i)
        _, signs, clutter = S._signs_scene(rng, 1, 3, (16, 80, 144), (16, 48, 96, 112), 5)
        boxes = []
        for text, _, x, y in signs:
            assert x % D.CELL == 0 and y % D.CELL == 0 and x + D.CELL * len(text) <= D.SIZE
            boxes.append((x, y, x + D.CELL * len(text), y + D.CELL))
        for _, cx, cy, r in clutter:
            assert not any(x0 - r <= cx <= x1 + r and y0 - r <= cy <= y1 + r for x0, y0, x1, y1 in boxes)
        _, objs = S._objects_scene(rng, 1, 5, 3, 14, 14)
        assert all((cx - 32) % 64 == 0 and (cy - 32) % 64 == 0 and r == 14 for _, _, cx, cy, r in objs)
        assert list(objs) == sorted(objs)  # canonical order: one scene per image
    # a glyph stays inside its cell: the pixels left of a one-letter sign's cell are untouched
    from PIL import Image

    img = Image.new("RGB", (64, 32), (255, 255, 255))
    D._draw_sign(img, "M", 16, 8, (38, 82, 220))
    px = img.load()
    assert all(px[x, y] == (255, 255, 255) for x in range(0, 16) for y in range(32))
    assert px[16, 8] == (38, 82, 220) and px[31, 23] == (38, 82, 220)
