"""What ``harness profile`` measures: knobs x tiers x prompt lengths x output lengths x batch sizes.

The default grid covers the ranges runs produce: every tier (hence each tier's vision tokens), text
prompts up to the longest prompt of the tasks (bundled data), outputs up to the largest
``max_new_tokens`` of those tasks, and the batch sizes asked for, never beyond the model's maximum
positions (vision + prompt + output tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import HarnessError
from harness.knobs import Knobs


@dataclass
class Grid:
    blocks: list[int]
    top_k: list[int]
    tiers: list[str]
    prompt: list[int]  # target text tokens
    output: list[int]  # max new tokens
    batch: list[int] = field(default_factory=lambda: [1])

    def configs(self) -> list[tuple[int, int, str, int, int]]:
        return [(b, k, t, p, n) for n in self.batch for b in self.blocks for k in self.top_k for t in self.tiers
                for p in self.prompt]

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(**{k: list(v) for k, v in d.items() if k in ("blocks", "top_k", "tiers", "prompt", "output", "batch")})


def max_positions(backend) -> int | None:
    """The model's maximum positions (``max_position_embeddings`` of its language model), if known."""
    for attr in ("max_positions",):
        v = getattr(getattr(backend, "info", None), attr, None)
        if v:
            return int(v)
    for obj in (getattr(backend, "model", None), getattr(backend, "lm_model", None)):
        cfg = getattr(obj, "config", None)
        for c in (getattr(cfg, "text_config", None), cfg):
            v = getattr(c, "max_position_embeddings", None)
            if v:
                return int(v)
    return None


@dataclass
class TaskRanges:
    prompt_tokens: int  # the longest task prompt's text tokens
    max_new_tokens: int  # the largest max_new_tokens among the tasks
    tasks: list[str]


def task_ranges(backend, task_names, tier: str | None = None) -> TaskRanges:
    """Longest prompt (text tokens, this model's tokenizer) and largest ``max_new_tokens`` over the
    tasks' bundled samples."""
    from harness.tasks import get_task
    from harness.tasks.data import load_samples
    from harness.types import GenRequest

    longest, max_new = 1, 1
    for name in task_names:
        task = get_task(name)
        max_new = max(max_new, int(getattr(task, "max_new_tokens", 16) or 16))
        try:
            samples = load_samples(task, "bundled").samples
        except HarnessError:
            continue
        for s in samples:
            if not getattr(s, "error", None):
                longest = max(longest, int(backend.count_tokens(GenRequest(task.prompt(s), None), tier)[0]))
    return TaskRanges(longest, max_new, list(task_names))


def _spread(hi: int, lo: int, n: int) -> list[int]:
    hi, lo = max(1, hi), max(1, min(lo, hi))
    if n <= 1 or hi == lo:
        return [hi]
    return sorted({round(lo + (hi - lo) * i / (n - 1)) for i in range(n)})


def default_grid(info, ranges: TaskRanges | None = None, max_pos: int | None = None, quick: bool = False,
                 batch=(1,)) -> Grid:
    n = int(info.n_blocks)
    lo = int(getattr(info, "min_blocks", None) or max(1, n - 4))
    kmax = int(info.max_top_k)
    tiers = list(getattr(info, "tiers", None) or ["low", "medium", "high"])
    prompt_hi = ranges.prompt_tokens if ranges else 96
    out_hi = ranges.max_new_tokens if ranges else 16
    if max_pos:  # vision (largest tier) + prompt + output must fit the model's positions
        vision_hi = max((getattr(info, "vision_tokens", None) or {}).values() or [0])
        out_hi = max(1, min(out_hi, max_pos // 4))
        prompt_hi = max(1, min(prompt_hi, max_pos - vision_hi - out_hi - 2))
    if quick:
        return Grid(sorted({lo, n}), sorted({1, kmax}), tiers, _spread(prompt_hi, 16, 2), [min(8, out_hi)], list(batch))
    blocks = sorted({lo, (lo + n) // 2, n})
    ks = sorted({1, 2, max(1, kmax // 2), max(1, 3 * kmax // 4), kmax})
    return Grid(blocks, ks, tiers, _spread(prompt_hi, 16, 3), [out_hi], list(batch))


def parse_grid(text: str | None, info, base: Grid | None = None) -> Grid:
    """``blocks=12,14,16;top_k=1,4,8;tier=low,high;prompt=16,64;output=8,24;batch=1,8`` (any subset
    overrides ``base``)."""
    grid = base or default_grid(info)
    if not text:
        return grid
    names = {"blocks": "blocks", "num_blocks": "blocks", "top_k": "top_k", "k": "top_k", "tier": "tiers",
             "tiers": "tiers", "prompt": "prompt", "prompt_tokens": "prompt", "output": "output",
             "output_tokens": "output", "batch": "batch", "batch_size": "batch"}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, eq, vals = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in names:
            raise HarnessError(f"--grid part '{part}' is not KEY=V1,V2 with KEY one of blocks, top_k, tier, prompt, output, batch")
        items = [v.strip() for v in vals.split(",") if v.strip()]
        if not items:
            raise HarnessError(f"--grid '{key}' has no values")
        attr = names[key]
        if attr == "tiers":
            from harness.knobs import parse_tier

            setattr(grid, attr, [parse_tier(v) for v in items])
        else:
            try:
                setattr(grid, attr, sorted({int(v) for v in items}))
            except ValueError:
                raise HarnessError(f"--grid '{key}' values must be integers, got '{vals}'")
    check_grid(grid, info)
    return grid


def check_grid(grid: Grid, info, max_pos: int | None = None) -> None:
    model = getattr(info, "name", "the model")
    for b in grid.blocks:
        for k in grid.top_k:
            Knobs(b, k).validate(info.n_blocks, info.max_top_k, getattr(info, "min_blocks", None),
                                 getattr(info, "tiers", None), model=model)
    for t in grid.tiers:
        Knobs(info.n_blocks, 1, t).validate(info.n_blocks, info.max_top_k, getattr(info, "min_blocks", None),
                                            getattr(info, "tiers", None), model=model)
    if any(p < 1 for p in grid.prompt) or any(o < 1 for o in grid.output) or any(b < 1 for b in grid.batch):
        raise HarnessError("--grid prompt, output and batch values must be >= 1")
    if max_pos:
        vision_hi = max((getattr(info, "vision_tokens", None) or {}).get(t, 0) for t in grid.tiers)
        longest = vision_hi + max(grid.prompt) + max(grid.output)
        if longest > max_pos:
            raise HarnessError(f"--grid reaches {longest} positions (vision {vision_hi} + prompt {max(grid.prompt)} + "
                               f"output {max(grid.output)}) but {model} has {max_pos}; lower prompt or output")
