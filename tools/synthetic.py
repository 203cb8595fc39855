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
from functools import lru_cache
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont

from harness.errors import HarnessError

SIZE = 192
SPLITS = ("eval", "train")
EVAL_SHARE = 8  # one image hash in EVAL_SHARE belongs to the eval split
BUNDLED_SEED = 0
from harness.tasks.data import SAMPLES_DIR  # noqa: E402
# rows per bundled file (TallyQA rows hold 3 questions each)
BUNDLED_ROWS = {
    "scienceqa": 100,
    "textvqa": 100,
    "okvqa": 100,
    "vqav2": 100,
    "tallyqa": 40,
    "stvqa": 100,
    "docvqa": 100,
    "coco-caption": 100,
}

COLORS = {
    "red": (215, 38, 38),
    "green": (34, 150, 60),
    "blue": (38, 82, 220),
    "yellow": (240, 200, 20),
    "purple": (135, 55, 175),
    "orange": (245, 125, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds", "star": "stars", "cross": "crosses"}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
# sign words: four letters each, in minimal pairs (SALE/SAFE, BANK/BARK, SHOP/STOP ...), so
# that reading them needs the detail a 64x64 view blurs away
WORDS = (
    "sale", "safe", "cafe", "cake", "bake", "bank", "bark", "park", "part",
    "mart", "mall", "hall", "hill", "milk", "silk", "shop", "stop", "ship",
)
SIGN_COLORS = {"red": COLORS["red"], "blue": COLORS["blue"], "green": COLORS["green"], "black": (25, 25, 25), "purple": COLORS["purple"], "orange": COLORS["orange"]}
BACKGROUNDS = ((250, 250, 250), (244, 241, 232), (236, 240, 245), (240, 245, 236))
FRUITS = {"red": ("apple", "cherry", "strawberry"), "yellow": ("banana", "lemon", "pineapple"), "orange": ("orange", "tangerine", "peach"), "green": ("lime", "pear", "kiwi"), "purple": ("grape", "plum", "grapes"), "blue": ("blueberry", "blueberries", "plum")}
POLYGONS = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}
ANTONYMS = {
    "hot": "cold", "up": "down", "big": "small", "open": "closed", "day": "night", "wet": "dry",
    "fast": "slow", "old": "new", "left": "right", "in": "out", "yes": "no", "on": "off",
    "high": "low", "full": "empty", "hard": "soft", "light": "dark",
}
NAMES = ("Smith", "Jones", "Brown", "Taylor", "Clark", "Lewis", "King", "Baker", "Adams", "Young")
CITIES = ("Paris", "Rome", "Berlin", "Madrid", "London", "Dublin", "Oslo", "Boston")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DOC_TITLES = ("INVOICE", "RECEIPT", "REPORT", "LETTER", "MEMO", "ORDER")
DOC_FIELDS = ("Name", "City", "Date", "Total", "Room")
DOC_QUESTIONS = {
    "Name": ("What is the name?", "What name is written on the document?"),
    "City": ("Which city is mentioned?", "What is the city?"),
    "Date": ("What is the date?", "What date is written on the document?"),
    "Total": ("What is the total?", "What is the total amount?"),
    "Room": ("What is the room number?", "Which room is given?"),
    "title": ("What is the title of the document?", "What kind of document is this?"),
}


# -- drawing ---------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    import math

    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.38
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx + w, cy + w),
                (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    if shape in POLYGONS:  # regular polygon, flat bottom
        k = POLYGONS[shape]
        start = math.pi / 2 + math.pi / k
        return [(cx + r * math.cos(start + 2 * math.pi * j / k), cy + r * math.sin(start + 2 * math.pi * j / k)) for j in range(k)]
    raise ValueError(shape)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rgb) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rgb)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=rgb)
    else:
        draw.polygon(_shape_points(shape, cx, cy, r), fill=rgb)


def _canvas(bg) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (SIZE, SIZE), bg)
    return img, ImageDraw.Draw(img)


@lru_cache(maxsize=8192)
def _text_size(text: str, size: int) -> tuple[int, int, int, int]:
    return _font(size).getbbox(text, stroke_width=1)


@lru_cache(maxsize=4096)
def _text_mask(text: str, size: int) -> tuple[Image.Image, int, int]:
    """Bold text rendered once into an 'L' mask (cached: the vocabularies are small), with the
    offset of the mask's corner from the text origin."""
    x0, y0, x1, y1 = _text_size(text, size)
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).text((-x0, -y0), text, font=_font(size), fill=255, stroke_width=1, stroke_fill=255)
    return mask, x0, y0


def _draw_text(img: Image.Image, xy, text: str, size: int, ink) -> None:
    """Same pixels as ``ImageDraw.text(xy, text, stroke_width=1)`` in one colour, from the cache."""
    mask, dx, dy = _text_mask(text, size)
    img.paste(ink, (xy[0] + dx, xy[1] + dy), mask)


CELL = 16  # one character per 16x16 cell on the patch grid, like a split-flap display board
GLYPH = 15  # font size of a cell character (bold): it fills most of its cell


def _draw_cells(img: Image.Image, text: str, x: int, y: int, ink, fill=None) -> None:
    """``text`` one character per ``CELL`` x ``CELL`` cell, each glyph centred in its cell, with
    ``(x, y)`` the top-left corner (patch-aligned when both are multiples of 16); ``fill`` paints
    the cells first (a sign)."""
    if fill is not None:
        img.paste(fill, (x, y, x + CELL * len(text), y + CELL))
    for j, ch in enumerate(text):
        if ch != " ":
            mask, _, _ = _text_mask(ch, GLYPH)
            w, h = mask.size
            img.paste(ink, (x + j * CELL + (CELL - w) // 2, y + (CELL - h) // 2), mask)


def _draw_sign(img: Image.Image, text: str, x: int, y: int, rgb) -> None:
    """A sign: ``text`` in cells on a filled strip; ``(x, y)`` is the top-left corner."""
    ink = (20, 20, 20) if sum(rgb) > 600 else (255, 255, 255)
    _draw_cells(img, text, x, y, ink, fill=rgb)


def _sign_extent(text: str) -> tuple[int, int]:
    return CELL * len(text), CELL


def _place_in_grid(rng: random.Random, n: int, grid: int, rmin: int, rmax: int, jitter: int = 0) -> list[tuple[int, int, int]]:
    """``n`` non-overlapping (cx, cy, r), one per distinct cell of a ``grid x grid`` layout,
    centred in the cell (``jitter`` pixels of random offset at most; 0 keeps the layout on the
    patch grid, which a small vision tower learns far faster)."""
    cell = SIZE // grid
    out = []
    for c in rng.sample(range(grid * grid), n):
        r = rng.randint(rmin, min(rmax, cell // 2 - 2))
        slack = max(0, min(jitter, cell // 2 - r - 1))
        cx = (c % grid) * cell + cell // 2 + rng.randint(-slack, slack)
        cy = (c // grid) * cell + cell // 2 + rng.randint(-slack, slack)
        out.append((cx, cy, r))
    return out


def _render_objects(bg, objects) -> Image.Image:
    img, draw = _canvas(bg)
    for shape, color, cx, cy, r in objects:
        draw_shape(draw, shape, cx, cy, r, COLORS[color])
    return img


def _human_answers(rng: random.Random, answer: str, alternatives) -> list[str]:
    """Ten annotator answers: the answer at least 6 times, the rest plausible alternatives."""
    alternatives = [a for a in alternatives if a != answer] or [answer]
    k = rng.randint(6, 10)
    answers = [answer] * k + [rng.choice(alternatives) for _ in range(10 - k)]
    rng.shuffle(answers)
    return answers


def _indefinite(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


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


def _main(argv=None) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m tools.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-bundled", action="store_true", help="regenerate tasks/samples/<task>.parquet")
    ap.add_argument("--out", type=Path, default=None, help="folder for --write-bundled (default: tasks/samples)")
    ap.add_argument("--task", action="append", help="only these tasks (repeatable)")
    ap.add_argument("--preview", type=Path, help="write a PNG contact sheet of a few eval rows per task here")
    args = ap.parse_args(argv)
    names = [_task_name(t) for t in args.task] if args.task else list(GENERATORS)
    if args.write_bundled:
        t = time.time()
        for p in write_bundled(args.out, names):
            print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
        print(f"done in {time.time() - t:.1f}s")
    if args.preview:
        args.preview.mkdir(parents=True, exist_ok=True)
        for name in names:
            rows = generate_rows(name, "eval", 8, BUNDLED_SEED)
            sheet = Image.new("RGB", (SIZE * 4, SIZE * 2), (0, 0, 0))
            for k, row in enumerate(rows):
                sheet.paste(row["image"], ((k % 4) * SIZE, (k // 4) * SIZE))
            sheet.save(args.preview / f"{name}.png")
            print(f"wrote {args.preview / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
