"""Knob layouts: the ONE place per model family that knows where the blocks list is, where
``top_k`` lives and how to read the block count and expert counts from a config.

:class:`KnobSwitch` applies ``(active blocks, top_k)`` to a loaded model by *replacing* the
executed block ``ModuleList`` with the kept blocks (skipped blocks run no compute and write no KV
cache; every kept block keeps its module, hence its original ``layer_idx``) and setting ``top_k``
on the router of every active block after block 0 (block 0 and skipped blocks keep the default).
Applying the full configuration restores the original list: switching is exact and reversible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from harness.errors import HarnessError


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _cfg(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None) if not isinstance(config, dict) else config.get(n)
        if v is not None:
            return v
    return default


@dataclass(frozen=True)
class Layout:
    """Where knobs live in one model family."""

    family: str  # name shown to users
    model_types: tuple[str, ...]  # config.model_type values of the (text) model
    router_path: str  # from a block to the module holding ``top_k`` ("" = the block itself)
    n_blocks_keys: tuple[str, ...] = ("num_hidden_layers",)
    top_k_keys: tuple[str, ...] = ("num_experts_per_tok",)
    n_experts_keys: tuple[str, ...] = ("num_experts",)
    skip_check: Callable[[object, Sequence[int]], None] | None = None  # refuse unsafe skips

    # -- config (no weights) ------------------------------------------------------------------
    def n_blocks(self, config) -> int:
        return int(_cfg(config, *self.n_blocks_keys))

    def top_k(self, config) -> int:
        return int(_cfg(config, *self.top_k_keys))

    def n_experts(self, config) -> int:
        return int(_cfg(config, *self.n_experts_keys))

    # -- modules ------------------------------------------------------------------------------
    def router(self, block):
        """The module whose ``top_k`` attribute the block's router reads, or None (dense block)."""
        try:
            mod = _get(block, self.router_path) if self.router_path else block
        except AttributeError:
            return None
        return mod if hasattr(mod, "top_k") else None


def _qwen3_vl_skip_check(config, active: Sequence[int]) -> None:
    n_deep = len(_cfg(getattr(config, "vision_config", config), "deepstack_visual_indexes", default=[]) or [])
    if any(active[i] != i for i in range(min(n_deep, len(active)))):
        raise HarnessError(
            f"Qwen3-VL-MoE injects deepstack visual features into the first {n_deep} blocks by loop position; "
            f"skipping any of blocks 0..{n_deep - 1} would misplace them. Keep those blocks (importance file) or use num_blocks=N")


OLMOE = Layout("olmoe", ("olmoe",), "mlp.gate")
QWEN3_MOE = Layout("qwen3_moe", ("qwen3_moe",), "mlp.gate")
MIXTRAL = Layout("mixtral", ("mixtral",), "mlp.gate", n_experts_keys=("num_local_experts",))
QWEN3_VL_MOE_TEXT = Layout("qwen3_vl_moe", ("qwen3_vl_moe_text", "qwen3_vl_moe"), "mlp.gate",
                           skip_check=_qwen3_vl_skip_check)
MOLMOE = Layout("molmoe", ("molmo", "molmoe"), "mlp", n_blocks_keys=("n_layers", "num_hidden_layers"),
                top_k_keys=("moe_top_k",), n_experts_keys=("moe_num_experts",))

TEXT_LAYOUTS = {t: lay for lay in (OLMOE, QWEN3_MOE, MIXTRAL, QWEN3_VL_MOE_TEXT) for t in lay.model_types}


class KnobSwitch:
    """Applies knobs to one loaded model through its layout (cheap, no reload, reversible)."""

    def __init__(self, root: torch.nn.Module, blocks_path: str, layout: Layout, config=None,
                 on_apply: Callable[[Sequence[int]], None] | None = None):
        self.layout = layout
        self.config = config
        parent_path, _, self.attr = blocks_path.rpartition(".")
        self.parent = _get(root, parent_path) if parent_path else root
        blocks = getattr(self.parent, self.attr)
        if not isinstance(blocks, torch.nn.ModuleList):
            raise HarnessError(f"{blocks_path} is not a ModuleList; the {layout.family} layout does not match this model")
        self.full_list = blocks  # the model's own ModuleList, put back whenever every block is active
        self.all_blocks = list(blocks)
        self.routers = [layout.router(b) for b in self.all_blocks]
        if self.routers[0] is None and not any(self.routers):
            raise HarnessError(f"no router with top_k found at '{layout.router_path}' in {blocks_path}; the {layout.family} layout does not match this model")
        self.default_top_k = [None if r is None else int(r.top_k) for r in self.routers]
        self.on_apply = on_apply
        self.active: tuple[int, ...] = tuple(range(len(self.all_blocks)))
        self.top_k: int | None = None

    @property
    def n_blocks(self) -> int:
        return len(self.all_blocks)

    def apply(self, active: Sequence[int], top_k: int) -> None:
        active = tuple(int(i) for i in active)
        if not active or active[0] != 0 or list(active) != sorted(set(active)) or active[-1] >= self.n_blocks:
            raise HarnessError(f"active blocks {active} must be ascending, unique, start with block 0 and lie in 0..{self.n_blocks - 1}")
        if self.layout.skip_check is not None and self.config is not None:
            self.layout.skip_check(self.config, active)
        keep = set(active)
        for i, router in enumerate(self.routers):
            if router is not None:
                router.top_k = top_k if (i in keep and i != 0) else self.default_top_k[i]
        kept = self.full_list if len(active) == self.n_blocks else torch.nn.ModuleList([self.all_blocks[i] for i in active])
        setattr(self.parent, self.attr, kept)
        if self.on_apply is not None:
            self.on_apply(active)
        self.active, self.top_k = active, top_k
