"""The reference model's training data: examples from the synthetic training splits of the eight
tasks (built in worker processes), task-weighted streaming batches and their collation."""

from __future__ import annotations

import math
import multiprocessing as mp
import random
from dataclasses import dataclass

import numpy as np
import torch

from tools import reference_model as rm


TASKS = ("scienceqa", "textvqa", "okvqa", "vqav2", "tallyqa", "stvqa", "docvqa", "coco-caption")
# relative share of each task's rows in the training stream: more of what is slow to learn
# (reading, counting, binding a colour to a shape), less of what is learnt early (captions)
TASK_WEIGHTS = {"scienceqa": 1.5, "textvqa": 2.0, "okvqa": 0.75, "vqav2": 1.0, "tallyqa": 1.5, "stvqa": 1.5, "docvqa": 2.0, "coco-caption": 0.5}


def parse_weights(text: str) -> dict[str, float]:
    """``"textvqa=2,coco-caption=0.5"`` -> TASK_WEIGHTS with those entries replaced."""
    weights = dict(TASK_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if name not in weights or number < 0:
            raise SystemExit(f"--task-weights: expected task=weight (weight >= 0; 0 leaves the task out) with a task among {', '.join(TASKS)}, got '{part}'")
        weights[name] = number
    return weights


@dataclass
class Example:
    task: str
    image: object  # PIL image
    prompt: str
    target: str


# -- data --------------------------------------------------------------------------------------
def _task_examples(args: tuple[str, int, int]) -> list[Example]:
    """Examples of one task from ``generate_rows(task, "train", n, seed)`` (runs in a worker)."""
    name, n_rows, seed = args
    from harness.tasks import get_task
    from tools.synthetic import generate_rows

    task = get_task(name)
    out = []
    for i, row in enumerate(generate_rows(name, "train", n_rows, seed)):
        for s in task.samples_from_row(row, i):
            if s.error is None and s.image is not None:
                out.append(Example(task.name, s.image.convert("RGB"), task.prompt(s), task.target(s)))
    return out


def _standin_examples(args: tuple[str, int, int]) -> list[Example]:
    """A tiny stand-in data source (coloured squares) for smoke tests without ``tasks``."""
    from PIL import Image, ImageDraw

    name, n_rows, seed = args
    rng = random.Random(f"{name}-{seed}")
    colours = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
    out = []
    for _ in range(n_rows):
        c = rng.choice(list(colours))
        n = rng.randint(1, 4)
        img = Image.new("RGB", (192, 192), "white")
        d = ImageDraw.Draw(img)
        for j in range(n):
            x = 10 + 45 * j
            d.rectangle([x, 80, x + 30, 110], fill=colours[c])
        q = "How many squares are there?\nAnswer with a single number." if name == "tallyqa" else "What colour are the squares?\nAnswer the question using a single word or phrase."
        out.append(Example(name, img, q, str(n) if name == "tallyqa" else c))
    return out


def load_examples(rows_per_task: int, seed: int, workers: int, standin: bool = False, chunk: int = 100) -> list[Example]:
    """Rows of every task's training split, generated in parallel chunks with distinct seeds."""
    fn = _standin_examples if standin else _task_examples
    jobs = []
    for t_i, name in enumerate(TASKS):
        for c in range(math.ceil(rows_per_task / chunk)):
            n = min(chunk, rows_per_task - c * chunk)
            jobs.append((name, n, seed * 1_000_003 + t_i * 10_007 + c))
    if workers <= 1:
        parts = [fn(j) for j in jobs]
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(fn, jobs, chunksize=1)
    return [e for p in parts for e in p]


class StreamingBatches(torch.utils.data.IterableDataset):
    """An endless, seeded stream of training batches generated on the fly in each loader worker.

    Worker ``w`` generates chunk ``c`` of every task with seed ``(seed, w, c)``, so no two workers
    or chunks repeat rows and the stream is reproducible for a given worker count. Each batch has
    one tier (image side), drawn uniformly; its items come from a shuffled buffer of all tasks, and
    each generated example is used ``reuse`` times (at independently drawn tiers).
    """

    def __init__(self, tokenizer, batch: int, sizes: list[int], seed: int, chunk_rows: int = 24, standin: bool = False,
                 reuse: int = 1, weights: dict[str, float] | None = None):
        self.tokenizer, self.batch, self.sizes, self.seed, self.reuse = tokenizer, batch, sizes, seed, max(1, reuse)
        self.chunk_rows, self.standin = chunk_rows, standin
        self.weights = weights or {t: 1.0 for t in TASKS}

    def _chunk(self, worker: int, c: int) -> list[Example]:
        fn = _standin_examples if self.standin else _task_examples
        out = []
        for t_i, name in enumerate(TASKS):
            weight = self.weights.get(name, 1.0)
            if weight <= 0:  # task left out of the stream
                continue
            rows = max(1, round(self.chunk_rows * weight))
            rows = max(1, rows // 3) if name == "tallyqa" else rows  # 3 questions a row
            out += fn((name, rows, 7_919 + self.seed * 1_000_003 + worker * 100_003 + c * 97 + t_i))
        return out

    def __iter__(self):
        from harness.backends.imaging import preprocess

        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        buf: list[Example] = []
        uses: list[int] = []
        c = 0
        while True:
            while len(buf) < 4 * self.batch:
                fresh = self._chunk(worker, c)
                buf += fresh
                uses += [self.reuse] * len(fresh)
                c += 1
            take = rng.choice(len(buf), size=self.batch, replace=False)
            items = [buf[i] for i in take]
            for i in take:
                uses[i] -= 1
            keep = [i for i in range(len(buf)) if uses[i] > 0]
            buf, uses = [buf[i] for i in keep], [uses[i] for i in keep]
            size = int(self.sizes[rng.integers(len(self.sizes))])
            batch = []
            for ex in items:
                prompt = rm.prompt_ids(self.tokenizer, ex.prompt, rm.vision_tokens(size))
                answer = rm.target_ids(self.tokenizer, ex.target)
                batch.append((preprocess(ex.image, size), torch.tensor(prompt + answer), torch.tensor([-100] * len(prompt) + answer)))
            yield collate(batch, self.tokenizer.pad_token_id)


def collate(items, pad_id: int):
    pixels = torch.stack([p for p, _, _ in items])
    n = max(len(i) for _, i, _ in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), -100, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for r, (_, i, l) in enumerate(items):
        ids[r, : len(i)] = i
        labels[r, : len(l)] = l
        mask[r, : len(i)] = 1
    return pixels, ids, labels, mask
