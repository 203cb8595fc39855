"""Drawing for the synthetic data: vocabularies, colours, shapes, glyphs on the 16 px patch grid."""

from __future__ import annotations

import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont


SIZE = 192
SPLITS = ("eval", "train")
EVAL_SHARE = 8  # one image hash in EVAL_SHARE belongs to the eval split
BUNDLED_SEED = 0
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
