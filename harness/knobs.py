"""Knobs: the per-sample configuration of an adaptive MoE VLM (docs/contracts.md, "Knobs").

- ``num_blocks``: active transformer blocks *including block 0*, which is always kept; the other
  ``num_blocks - 1`` are the highest-scoring of blocks ``1..N-1`` by an importance file (ties go to
  the lower index), run in ascending index order; with no importance file, the prefix.
- ``top_k``: experts per token for every active block after block 0; block 0 keeps the model's
  default (8 for MolmoE-1B).
- ``tier``: image resolution tier name (``low``/``medium``/``high``), hence the vision tokens.

``Knobs`` prints as ``14,6`` or ``14,6,high`` and parses the same forms, plus
``num_blocks=14,top_k=6,tier=low``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from harness.errors import HarnessError

TIERS = ("low", "medium", "high")
TIER_INDEX = {name: i for i, name in enumerate(TIERS)}
KNOBS_FORMAT = "use B,K or B,K,TIER (e.g. --knobs 14,6 or --knobs 14,6,high) or num_blocks=14,top_k=6,tier=low"


@dataclass(frozen=True, order=True)
class Knobs:
    num_blocks: int
    top_k: int
    tier: str | None = None  # None = the model's default tier

    # -- parsing / printing -------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, tier: str | None = None) -> "Knobs":
        """Parse ``14,6`` / ``14,6,high`` / ``num_blocks=14,top_k=6,tier=low``; ``tier`` overrides."""
        if isinstance(text, Knobs):
            return text if tier is None else cls(text.num_blocks, text.top_k, tier)
        raw = str(text).strip()
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        values: dict[str, str] = {}
        if parts and all("=" in p for p in parts):
            for p in parts:
                k, v = (s.strip() for s in p.split("=", 1))
                k = {"blocks": "num_blocks", "b": "num_blocks", "k": "top_k", "topk": "top_k"}.get(k, k)
                if k not in ("num_blocks", "top_k", "tier"):
                    raise HarnessError(f"--knobs '{raw}': unknown knob '{k}'; {KNOBS_FORMAT}")
                values[k] = v
        elif 2 <= len(parts) <= 3 and not any("=" in p for p in parts):
            values = dict(zip(("num_blocks", "top_k", "tier"), parts))
        else:
            raise HarnessError(f"--knobs '{raw}' is malformed; {KNOBS_FORMAT}")
        if "num_blocks" not in values or "top_k" not in values:
            raise HarnessError(f"--knobs '{raw}' needs both num_blocks and top_k; {KNOBS_FORMAT}")
        try:
            nb, tk = int(values["num_blocks"]), int(values["top_k"])
        except ValueError:
            raise HarnessError(f"--knobs '{raw}': num_blocks and top_k must be integers; {KNOBS_FORMAT}")
        t = tier if tier is not None else values.get("tier")
        if t is not None:
            t = parse_tier(t)
        knobs = cls(nb, tk, t)
        knobs.check_generic()
        return knobs

    def __str__(self) -> str:
        base = f"{self.num_blocks},{self.top_k}"
        return f"{base},{self.tier}" if self.tier else base

    @property
    def slug(self) -> str:
        """File-name friendly form: ``b14-k6`` or ``b14-k6-high``."""
        return f"b{self.num_blocks}-k{self.top_k}" + (f"-{self.tier}" if self.tier else "")

    def with_tier(self, tier: str) -> "Knobs":
        return Knobs(self.num_blocks, self.top_k, tier)

    def to_dict(self) -> dict:
        return {"num_blocks": self.num_blocks, "top_k": self.top_k, "tier": self.tier}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Knobs":
        return cls(int(d["num_blocks"]), int(d["top_k"]), d.get("tier"))

    # -- validation ---------------------------------------------------------------------------
    def check_generic(self) -> None:
        """Checks that need no model: positive integers, a known tier."""
        if self.num_blocks < 1:
            raise HarnessError(f"num_blocks={self.num_blocks} is out of range; it counts block 0 and must be >= 1")
        if self.top_k < 1:
            raise HarnessError(f"top_k={self.top_k} is out of range; it must be >= 1")
        if self.tier is not None and self.tier not in TIERS:
            raise HarnessError(f"unknown tier '{self.tier}'; use one of {', '.join(TIERS)}")

    def validate(self, n_blocks: int, max_top_k: int, min_blocks: int | None = None,
                 tiers: Sequence[str] | None = None, model: str = "the model") -> "Knobs":
        """Check against a model's shape (read from its config, before any weights load)."""
        lo = min_blocks if min_blocks is not None else max(1, n_blocks - 4)
        if not lo <= self.num_blocks <= n_blocks:
            raise HarnessError(f"num_blocks={self.num_blocks} is out of range for {model}: allowed {lo}..{n_blocks} (block 0 included)")
        if not 1 <= self.top_k <= max_top_k:
            raise HarnessError(f"top_k={self.top_k} is out of range for {model}: allowed 1..{max_top_k}")
        if self.tier is not None and tiers is not None and self.tier not in tiers:
            raise HarnessError(f"tier '{self.tier}' is not available for {model}: allowed {', '.join(tiers)}")
        return self


def parse_tier(value) -> str:
    v = str(value).strip().lower()
    if v.isdigit() and int(v) < len(TIERS):
        return TIERS[int(v)]
    if v not in TIERS:
        raise HarnessError(f"unknown tier '{value}'; use one of {', '.join(TIERS)} (or 0, 1, 2)")
    return v


# -- block selection --------------------------------------------------------------------------
def load_importance(path: str | Path, n_blocks: int | None = None) -> dict[int, float]:
    """Read an importance file: ``{"0": 0.9, "1": 0.4, ...}`` or a list of floats by block."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"cannot read importance file '{path}': {exc.strerror}; pass an existing JSON file")
    except UnicodeDecodeError:
        raise HarnessError(f"importance file '{path}' is not UTF-8 text; pass a JSON object of block -> score")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"importance file '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); expected {{\"0\": 0.9, \"1\": 0.4, ...}}")
    return parse_importance(data, n_blocks, source=str(path))


def parse_importance(data, n_blocks: int | None = None, source: str = "importance scores") -> dict[int, float]:
    if isinstance(data, list):
        items = list(enumerate(data))
    elif isinstance(data, dict):
        items = []
        for k, v in data.items():
            try:
                items.append((int(k), v))
            except (TypeError, ValueError):
                raise HarnessError(f"{source}: key '{k}' is not a block index; keys must be integers 0..N-1")
    else:
        raise HarnessError(f"{source}: expected a JSON object of block -> score or a list of scores, got {type(data).__name__}")
    scores: dict[int, float] = {}
    for k, v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise HarnessError(f"{source}: score of block {k} is {v!r}, not a number")
        if math.isnan(v) or math.isinf(v):
            raise HarnessError(f"{source}: score of block {k} is {v}; scores must be finite numbers")
        if k < 0 or (n_blocks is not None and k >= n_blocks):
            raise HarnessError(f"{source}: block {k} does not exist (the model has blocks 0..{(n_blocks or 1) - 1})")
        scores[k] = float(v)
    if n_blocks is not None:
        missing = [i for i in range(1, n_blocks) if i not in scores]
        if missing:
            raise HarnessError(f"{source}: no score for block(s) {', '.join(map(str, missing))}; give a score for every block 1..{n_blocks - 1}")
    return scores


def select_blocks(num_blocks: int, n_blocks: int, importance: Mapping[int, float] | None = None) -> tuple[int, ...]:
    """Indices of the active blocks, ascending. Block 0 is always kept."""
    if not 1 <= num_blocks <= n_blocks:
        raise HarnessError(f"num_blocks={num_blocks} is out of range: allowed 1..{n_blocks}")
    if not importance:
        return tuple(range(num_blocks))
    candidates = sorted(range(1, n_blocks), key=lambda i: (-importance.get(i, float("-inf")), i))
    return tuple([0] + sorted(candidates[: num_blocks - 1]))
