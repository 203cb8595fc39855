"""``fixed``: every sample gets the same configuration -- what ``--knobs B,K[,TIER]`` means.

``--policy fixed --policy-arg knobs=14,6,high`` equals ``--knobs 14,6,high``. The configuration is
validated against the model at build time (before it loads); no tier = the model's default.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.knobs import Knobs
from harness.policies import register
from harness.policies.base import Param, Policy


@register("fixed")
class FixedPolicy(Policy):
    """Every sample at one configuration (what --knobs means)."""

    summary = "every sample at one configuration (what --knobs means); arg knobs=B,K[,TIER]"
    params = {"knobs": Param(Knobs.parse, None, "B,K[,TIER], e.g. 14,6,high", required=True)}

    def setup(self) -> None:
        k: Knobs = self.knobs
        info = self.context.model_info
        try:
            k.validate(info.n_blocks, info.max_top_k, getattr(info, "min_blocks", None),
                       getattr(info, "tiers", None) or None, model=getattr(info, "name", "the model"))
        except HarnessError as exc:
            raise HarnessError(f"policy 'fixed': {exc}")
        self.knobs = self.context.resolve(k)

    def choose(self, inputs):
        return [self.knobs] * len(inputs)
