"""Per-task scene generators: ``params(rng) -> scene``, ``build(...) -> row`` in each hub schema."""

from __future__ import annotations

import hashlib
from typing import Callable

from PIL import Image

from tools.synthetic.drawing import (
    ANTONYMS, BACKGROUNDS, CELL, CITIES, COLORS, DOC_FIELDS, DOC_QUESTIONS, DOC_TITLES, FRUITS,
    MONTHS, NAMES, NUMBER_WORDS, PLURAL, POLYGONS, SHAPES, SIGN_COLORS, SIZE, WORDS, _canvas,
    _draw_cells, _draw_sign, _draw_text, _human_answers, _indefinite, _place_in_grid,
    _render_objects, _sign_extent, draw_shape,
)


# -- per-task generators: params(rng) -> scene (hashable), build(scene, rng, i, seed, split) -> row
def _id_base(seed: int, split: str) -> int:
    """Numeric id base: eval and train ids (and different seeds) never collide."""
    return (1 if split == "eval" else 5) * 100_000_000 + (seed % 1000) * 100_000


def _objects_scene(rng, n_min, n_max, grid, rmin, rmax, distinct=True, shapes=SHAPES, colors=tuple(COLORS)):
    n = rng.randint(n_min, n_max)
    pos = _place_in_grid(rng, n, grid, rmin, rmax)
    if distinct:
        sh = rng.sample(shapes, n)
        co = rng.sample(colors, n)
    else:
        sh = [rng.choice(shapes) for _ in range(n)]
        co = [rng.choice(colors) for _ in range(n)]
    bg = rng.randrange(len(BACKGROUNDS))
    return (bg, tuple(sorted((sh[j], co[j], *pos[j]) for j in range(n))))  # canonical: one scene per image


def _clear_of(rng, n: int, boxes, rmin: int, rmax: int) -> tuple[tuple[int, int, int], ...]:
    """Up to ``n`` small grey-clutter discs (cx, cy, r), sorted, each fully visible: none touches
    another or any of ``boxes`` (x0, y0, x1, y1), so every scene renders a distinct image."""
    out = []
    for _ in range(n):
        cx, cy, r = rng.randint(0, SIZE - 1), rng.randint(0, SIZE - 1), rng.randint(rmin, rmax)
        if any(x0 - r - 1 <= cx <= x1 + r + 1 and y0 - r - 1 <= cy <= y1 + r + 1 for x0, y0, x1, y1 in boxes):
            continue
        if any((cx - ox) ** 2 + (cy - oy) ** 2 <= (r + orr + 1) ** 2 for ox, oy, orr in out):
            continue
        out.append((cx, cy, r))
    return tuple(sorted(out))


def _options(rng, correct: str, pool, present=()) -> tuple[list[str], int]:
    """2-5 options listed in the vocabulary's own order: a run of consecutive entries of ``pool``
    that contains the answer (so the answer letter follows from the answer and the first option,
    which a tiny model can learn); ``present`` is unused by design, kept for signature stability."""
    n = min(len(pool), rng.choices((2, 3, 4, 5), weights=(1, 2, 4, 3))[0])
    k = pool.index(correct)
    start = rng.randint(max(0, k - n + 1), min(k, len(pool) - n))
    choices = list(pool[start : start + n])
    return choices, choices.index(correct)


def _scienceqa(rng, i, seed, split):
    scene = _objects_scene(rng, 1, 2, 3, 8, 8)  # one small size: one pixel pattern per shape, a blob at the 64 px tier
    yield scene
    bg, objs = scene
    image = _render_objects(BACKGROUNDS[bg], objs)
    shape, color = rng.choice([(o[0], o[1]) for o in objs])
    present_shapes = [o[0] for o in objs]
    if len(objs) == 1:
        kind = rng.choice(("shape", "color"))
    else:
        kind = rng.choice(("shape_of_color", "color_of_shape"))
    if kind == "shape":
        question, topic = rng.choice(("Which shape is shown in the picture?", "What shape is this?")), "shapes"
        choices, answer = _options(rng, shape, SHAPES)
        solution = f"The picture shows a {shape}."
    elif kind == "color":
        question, topic = rng.choice(("What color is the shape?", "Which color is the shape in the picture?")), "colors"
        choices, answer = _options(rng, color, tuple(COLORS))
        solution = f"The shape is {color}."
    elif kind == "shape_of_color":
        question, topic = f"Which shape is {color}?", "shapes"
        choices, answer = _options(rng, shape, SHAPES, present_shapes)
        solution = f"The {color} shape is a {shape}."
    else:
        question, topic = f"What color is the {shape}?", "colors"
        choices, answer = _options(rng, color, tuple(COLORS), [o[1] for o in objs])
        solution = f"The {shape} is {color}."
    hint = "" if rng.random() < 0.7 else "Look at the shapes in the picture."
    yield {
        "image": image, "question": question, "choices": choices, "answer": answer, "hint": hint,
        "task": "closed choice", "grade": rng.choice(("grade1", "grade2")), "subject": "natural science",
        "topic": topic, "category": "Identify shapes and colors", "skill": f"Identify {topic}",
        "lecture": "Shapes have names and colors. Look at each shape in the picture.", "solution": solution,
    }


def _vqav2(rng, i, seed, split):
    scene = _objects_scene(rng, 1, 5, 3, 8, 8)  # small: shapes blur to blobs at the 64 px tier, colours and counts stay
    yield scene
    bg, objs = scene
    image = _render_objects(BACKGROUNDS[bg], objs)
    shape, color = rng.choice([(o[0], o[1]) for o in objs])
    # weighted towards questions that need the shape itself (what shape / is there a <colour> <shape>),
    # which a low-resolution view blurs, over colour and count, which survive it
    kind = rng.choices(("color", "shape", "count", "yesno"), weights=(2, 4, 2, 3))[0]
    if kind == "color":
        q, qtype, atype, ans = f"What color is the {shape}?", "what color is the", "other", color
        alts = [c for c in COLORS if c != color]
    elif kind == "shape":
        q, qtype, atype, ans = f"What shape is the {color} object?", "what", "other", shape
        alts = [s for s in SHAPES if s != shape]
    elif kind == "count":
        q, qtype, atype, ans = "How many shapes are there?", "how many", "number", str(len(objs))
        alts = [NUMBER_WORDS[len(objs)], str(len(objs) + 1), str(max(len(objs) - 1, 0))]
    else:
        present = {(o[0], o[1]) for o in objs}
        if rng.random() < 0.5:
            qs, qc, ans = shape, color, "yes"
        else:
            # a present colour on another shape: answering needs the shape, not just the colour
            absent = [(s, c) for s in SHAPES for c in COLORS if (s, c) not in present and c in {p[1] for p in present}]
            qs, qc = rng.choice(absent)
            ans = "no"
        q, qtype, atype = f"Is there {_indefinite(qc)} {qs}?", "is there a", "yes/no"
        alts = ["no" if ans == "yes" else "yes"]
    answers = _human_answers(rng, ans, alts)
    image_id = _id_base(seed, split) + i
    yield {
        "question_type": qtype, "multiple_choice_answer": ans,
        "answers": [{"answer": a, "answer_confidence": rng.choice(("yes", "yes", "yes", "maybe")), "answer_id": j + 1} for j, a in enumerate(answers)],
        "image_id": image_id, "answer_type": atype, "question_id": image_id * 1000 + 1, "question": q, "image": image,
    }


def _signs_scene(rng, n_min, n_max, rows, cols, clutter):
    """Signs on patch-aligned slots (one per row, one letter per 16-px cell), words from WORDS,
    grey clutter shapes."""
    n = rng.randint(n_min, n_max)
    colors = rng.sample(tuple(SIGN_COLORS), n)
    words = rng.sample(WORDS, n)
    signs = []
    for j, y in enumerate(sorted(rng.sample(rows[n - 1] if isinstance(rows[0], tuple) else rows, n))):
        text = words[j].upper()
        w, _ = _sign_extent(text)
        xs = [x for x in cols if x + w <= SIZE] or [0]
        signs.append((text, colors[j], rng.choice(xs), y))
    boxes = [(x, y, x + _sign_extent(text)[0], y + CELL) for text, _, x, y in signs]
    shapes = tuple((rng.choice(SHAPES), *disc) for disc in _clear_of(rng, rng.randint(0, clutter), boxes, 5, 9))
    return (rng.randrange(len(BACKGROUNDS)), tuple(signs), shapes)


def _render_signs(scene) -> Image.Image:
    bg, signs, clutter = scene
    img, draw = _canvas(BACKGROUNDS[bg])
    for shape, cx, cy, r in clutter:
        draw_shape(draw, shape, cx, cy, r, (170, 170, 170))
    for text, color, x, y in signs:
        _draw_sign(img, text, x, y, SIGN_COLORS[color])
    return img


def _sign_question(rng, signs, single_phrasings, color_phrasings):
    text, color = rng.choice([(s[0], s[1]) for s in signs])
    if len(signs) == 1:
        q = rng.choice(single_phrasings)
    else:
        q = rng.choice(color_phrasings).format(color=color)
    return q, text.lower(), [s[0].lower() for s in signs if s[0] != text]


def _misspell(rng, word: str) -> str:
    if len(word) < 3:
        return word + word[-1]
    j = rng.randrange(len(word))
    return word[:j] + word[j + 1 :]


def _textvqa(rng, i, seed, split):
    scene = _signs_scene(rng, 1, 2, ((48, 80, 112), (32, 112)), (16, 32, 48, 64, 80, 96), 3)
    yield scene
    image = _render_signs(scene)
    q, ans, others = _sign_question(rng, scene[1], ("what does the sign say?", "what is written on the sign?"), ("what word is on the {color} sign?", "what is written on the {color} sign?"))
    answers = _human_answers(rng, ans, others + [_misspell(rng, ans), ans.upper()])
    qid = _id_base(seed, split) + i
    yield {
        "image_id": hashlib.sha1(f"textvqa-{split}-{seed}-{i}".encode()).hexdigest()[:16], "question_id": qid, "question": q,
        "question_tokens": q.rstrip("?").split() + ["?"], "image": image, "image_width": SIZE, "image_height": SIZE,
        "flickr_original_url": "", "flickr_300k_url": "", "answers": answers, "image_classes": ["Sign"],
        "set_name": "val" if split == "eval" else "train", "ocr_tokens": [s[0].lower() for s in scene[1]],
    }


def _stvqa(rng, i, seed, split):
    scene = _signs_scene(rng, 1, 3, (16, 80, 144), (16, 48, 96, 112), 5)
    yield scene
    image = _render_signs(scene)
    q, ans, _ = _sign_question(rng, scene[1], ("What is written on the sign?", "What word is on the sign?"), ("What is written on the {color} sign?", "What word is on the {color} sign?"))
    q = q[0].upper() + q[1:]
    qid = _id_base(seed, split) + i
    return_row = {"question_id": qid, "question": q, "image": image, "file_name": f"synthetic_{split}_{qid}.png", "dataset": "synthetic", "answers": [ans]}
    yield return_row


def _okvqa(rng, i, seed, split):
    kind = rng.choice(("fruit", "sides", "antonym"))
    bg = rng.randrange(len(BACKGROUNDS))
    if kind == "fruit":
        color = rng.choice(tuple(COLORS))
        shape = rng.choice(("circle", "diamond"))  # never a polygon of the "sides" questions: one image, one scene
        detail = (color, shape, *_place_in_grid(rng, 1, 2, 10, 16)[0])
    elif kind == "sides":
        poly = rng.choice(tuple(POLYGONS))
        detail = (poly, rng.choice(tuple(COLORS)), *_place_in_grid(rng, 1, 2, 9, 13)[0])
    else:
        word = rng.choice(tuple(ANTONYMS))
        detail = (word, rng.choice((16, 32, 48, 64, 80)), rng.choice((32, 64, 96, 128)))
    if kind == "antonym":
        box = (detail[1], detail[2], detail[1] + _sign_extent(detail[0])[0], detail[2] + CELL)
    else:
        cx, cy, r = detail[2:]
        box = (cx - r, cy - r, cx + r, cy + r)
    distractors = _clear_of(rng, rng.randint(0, 3), [box], 4, 8)
    scene = (kind, bg, detail, distractors)
    yield scene
    img, draw = _canvas(BACKGROUNDS[bg])
    for cx, cy, r in distractors:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(170, 170, 170))
    if kind == "fruit":
        color, shape, cx, cy, r = detail
        draw_shape(draw, shape, cx, cy, r, COLORS[color])
        q = rng.choice(("What fruit is usually this color?", "Which fruit has the color of this shape?"))
        ans, alts = FRUITS[color][0], list(FRUITS[color][1:])
    elif kind == "sides":
        poly, color, cx, cy, r = detail
        draw_shape(draw, poly, cx, cy, r, COLORS[color])
        q = rng.choice(("How many sides does this shape have?", "How many corners does this shape have?"))
        k = POLYGONS[poly]
        ans, alts = str(k), [NUMBER_WORDS[k], str(k + 1), poly]
    else:
        word, x, y = detail
        _draw_sign(img, word.upper(), x, y, (250, 250, 250) if bg else (230, 230, 230))
        q = rng.choice(("What is the opposite of the word shown?", "What word means the opposite of this?"))
        ans, alts = ANTONYMS[word], [word, "not " + word]
    qid = 10 * (_id_base(seed, split) + i) + 5
    yield {"question_id": str(qid), "image": img, "question": q, "answers": _human_answers(rng, ans, alts), "question_type": "other", "answer_type": "other"}


TALLY_SHAPES = ("circle", "square", "triangle")
TALLY_COLORS = ("red", "blue", "green", "yellow")


def _tallyqa(rng, i, seed, split):
    # two shapes in play with independent counts, so per-shape answers spread over 0..6
    shape_a, shape_b = rng.sample(TALLY_SHAPES, 2)
    n_a = rng.randint(0, 6)
    n_b = rng.randint(0, min(6, 8 - n_a))
    colors = rng.sample(TALLY_COLORS, 2)
    kinds = [shape_a] * n_a + [shape_b] * n_b
    pos = _place_in_grid(rng, len(kinds), 6, 9, 11)
    objs = tuple(sorted((kinds[j], rng.choice(colors), *pos[j]) for j in range(len(kinds))))
    scene = (rng.randrange(len(BACKGROUNDS)), objs)
    yield scene
    bg, objs = scene
    image = _render_objects(BACKGROUNDS[bg], objs)
    total = len(objs)
    simple = [(rng.choice(("How many objects are there?", "How many shapes are in the picture?")), total)]
    for s in (shape_a, shape_b):
        simple.append((f"How many {PLURAL[s]} are there?", sum(o[0] == s for o in objs)))
    complex_ = []
    for s in (shape_a, shape_b):
        for c in colors:
            complex_.append((f"How many {c} {PLURAL[s]} are there?", sum(o[0] == s and o[1] == c for o in objs)))
    for c in colors:
        complex_.append((f"How many {c} objects are there?", sum(o[1] == c for o in objs)))
    picks = [(q, a, True) for q, a in rng.sample(simple, 2)] + [(*rng.choice(complex_), False)]
    yield {"image": image, "qa": [{"question": q, "answer": int(a), "is_simple": bool(s)} for q, a, s in picks]}


def _docvqa(rng, i, seed, split):
    title = rng.choice(DOC_TITLES)
    fields = rng.sample(DOC_FIELDS, rng.randint(3, 4))
    values = []
    for f in fields:
        if f == "Name":
            values.append(rng.choice(NAMES))
        elif f == "City":
            values.append(rng.choice(CITIES))
        elif f == "Date":
            values.append(f"{rng.choice(MONTHS)} {rng.choice((1, 5, 10, 15, 20, 25))}")
        elif f == "Total":
            values.append(f"${5 * rng.randint(2, 19)}")
        else:
            values.append(str(rng.randint(1, 20)))
    scene = (title, tuple(fields), tuple(values), rng.choice((0, 16)), rng.randrange(len(BACKGROUNDS)))
    yield scene
    title, fields, values, left, bg = scene
    img, draw = _canvas(BACKGROUNDS[bg])
    # the title and the values in 16-px cells on the patch grid; field labels in small print
    _draw_cells(img, title, 16 + left, 16, (15, 15, 15))
    draw.line((8, 38, SIZE - 8, 38), fill=(90, 90, 90), width=1)
    for k, (f, v) in enumerate(zip(fields, values)):
        y = 48 + 32 * k
        _draw_text(img, (4, y + 2), f"{f}:", 11, (60, 60, 60))
        _draw_cells(img, v, 64 + left, y, (20, 20, 20))
    which = rng.randrange(len(fields) + 1)
    if which == len(fields):
        question, answers = rng.choice(DOC_QUESTIONS["title"]), [title.lower(), title]
        qtype = "layout"
    else:
        f, v = fields[which], values[which]
        question = rng.choice(DOC_QUESTIONS[f])
        answers = [v, v.lstrip("$")] if f == "Total" else [v]
        qtype = "form"
    doc_id = _id_base(seed, split) + i
    yield {
        "questionId": str(doc_id * 10 + 1), "question": question, "question_types": [qtype], "image": img, "docId": doc_id,
        "ucsf_document_id": f"syn{doc_id:07d}", "ucsf_document_page_no": "1", "answers": answers,
        "data_split": "val" if split == "eval" else "train",
    }


def _coco(rng, i, seed, split):
    n = rng.randint(1, 3)
    cols = rng.sample(range(3), n)
    objs = []
    for shape, color, col in zip(rng.sample(SHAPES, n), rng.sample(tuple(COLORS), n), sorted(cols)):
        r = rng.randint(16, 24)
        cx = col * 64 + 32
        cy = rng.choice((64, 96, 128))
        objs.append((shape, color, cx, cy, r))
    scene = (rng.randrange(len(BACKGROUNDS)), tuple(objs))
    yield scene
    bg, objs = scene
    image = _render_objects(BACKGROUNDS[bg], objs)
    names = [f"{o[1]} {o[0]}" for o in objs]  # left to right
    a = [_indefinite(x) for x in names]
    if n == 1:
        caps = [f"{a[0]} on a plain background", f"a single {names[0]}", f"one {names[0]} in the picture", f"a picture of {a[0]}", f"{a[0]} in the middle of a light background"]
    else:
        listed = ", ".join(a[:-1]) + f" and {a[-1]}"
        rev = ", ".join(reversed(a[1:])) + f" and {a[0]}"
        count = NUMBER_WORDS[n]
        caps = [
            f"{listed} on a plain background",
            f"{count} shapes: {listed}",
            f"{listed} next to each other",
            f"{rev} on a light background",
            f"a picture of {listed}",
        ]
    image_id = _id_base(seed, split) + i
    fname = f"{image_id:012d}.jpg"
    yield {
        "question_id": fname, "image": image, "question": "Please carefully observe the image and come up with a caption for the image.",
        "answer": caps, "id": image_id, "license": 4, "file_name": fname, "coco_url": "", "height": SIZE, "width": SIZE,
        "date_captured": "2026-11-26 00:00:00",
    }


GENERATORS: dict[str, Callable] = {
    "scienceqa": _scienceqa,
    "textvqa": _textvqa,
    "okvqa": _okvqa,
    "vqav2": _vqav2,
    "tallyqa": _tallyqa,
    "stvqa": _stvqa,
    "docvqa": _docvqa,
    "coco-caption": _coco,
}
