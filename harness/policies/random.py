"""``random``: a seeded, uniform draw from the knob space for each sample -- the baseline
every adaptive-inference paper needs.

The draw depends only on the seed, the task and the sample id (a SHA-256 hash), never on the
batch a sample lands in or the order of samples, so results do not depend on batch composition
and a resumed run draws the same configurations.
"""

from __future__ import annotations

import hashlib

from harness.errors import HarnessError
from harness.policies import register
from harness.policies.base import Param, Policy


def draw_index(seed: int, task: str, sample_id: str, n: int) -> int:
    """Uniform index in ``0..n-1`` from (seed, task, sample id)."""
    digest = hashlib.sha256(f"{seed}\x1f{task}\x1f{sample_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n  # 2**64 % n bias < n / 2**64: negligible


@register("random")
class RandomPolicy(Policy):
    """Seeded uniform draw from the knob space, per sample."""

    summary = "seeded uniform draw from the knob space per sample (args: seed=INT, default --seed)"
    params = {"seed": Param(int, None, "integer; default: the run's --seed")}

    def setup(self) -> None:
        if not self.context.knob_space:
            raise HarnessError("policy 'random' needs a non-empty knob space; pass --knob-space NAME|FILE.toml")
        if self.seed is None:
            self.seed = int(self.context.seed)
        self.space = [self.context.resolve(k) for k in self.context.knob_space]

    def choose(self, inputs):
        n = len(self.space)
        return [self.space[draw_index(self.seed, i.task, i.sample_id, n)] for i in inputs]

    def describe(self) -> dict:
        return {"name": self.name, "args": {"seed": self.seed}, "knob_space_size": len(self.space)}
