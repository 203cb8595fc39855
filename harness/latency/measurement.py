"""One profiled generate call (:class:`Measurement`) and the rules that pick which calls a fit may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

INTERFERENCE_FACTOR = 2.0


@dataclass
class Measurement:
    """One profiled generate call: ``batch_size`` copies of one prompt (``decode_step_ms[i]`` = the
    batch's step at output position i+1; times are the batch's)."""

    num_active_blocks: int
    top_k: int
    tier_idx: int
    vision_tokens: int
    text_tokens: int
    prefill_ms: float
    decode_step_ms: list[float]
    repeat: int = 0
    batch_size: int = 1

    @property
    def config_key(self) -> tuple:
        return (self.num_active_blocks, self.top_k, self.tier_idx, self.text_tokens, self.batch_size)

    @property
    def group_key(self) -> tuple:
        """Repeats of one call: same configuration, vision tokens and output length."""
        return self.config_key + (self.vision_tokens, len(self.decode_step_ms))

    @property
    def decode_ms(self) -> float:
        return float(sum(self.decode_step_ms))

    @property
    def total_ms(self) -> float:
        return self.prefill_ms + self.decode_ms

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def group(measurements: Sequence[Measurement]) -> dict[tuple, list[Measurement]]:
    out: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        out.setdefault(m.group_key, []).append(m)
    return out


def drop_interference(measurements: Sequence[Measurement], factor: float = INTERFERENCE_FACTOR) -> list[Measurement]:
    """Drop calls slower than ``factor`` x the fastest repeat of the same call: on a shared machine
    another process can slow a whole call down many times; such calls measure the neighbours."""
    keep = []
    for g in group(measurements).values():
        fastest = min(m.total_ms for m in g)
        keep.extend(m for m in g if m.total_ms <= factor * fastest)
    return keep
