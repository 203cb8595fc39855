"""The decode floor of the GPU benchmarks (``benchmarks/_common.py``'s ``decode_step_bytes``): the
bytes one batch-1 decode step reads, checked against the parameters of a built model, at the
MolmoE-1B shape against issue 32's figures, and shared by ``knobs_gpu.py`` and ``molmoe_gpu.py``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fixtures.scripts import BENCHMARKS, load_benchmark
from harness.backends import random_molmoe as rm


@pytest.fixture(scope="module")
def common():
    return load_benchmark("_common.py")


def read_by_step(lm, blocks: int, top_k: int, default_top_k: int) -> int:
    """Bytes of the parameters a decode step reads, from the built model's own tensors: each active
    block's non-expert parameters and ``top_k / experts`` of its expert tensors (block 0 at
    ``default_top_k``), the final norm, the LM head and one row of the input embedding."""
    n_experts = lm.config.num_experts
    total = 0.0
    for name, p in lm.named_parameters():
        nbytes = p.numel() * p.element_size()
        if name.startswith("model.layers."):
            block = int(name.split(".")[2])
            if block >= blocks:
                continue
            k = default_top_k if block == 0 else top_k
            total += nbytes * k / n_experts if ".experts." in name else nbytes
        elif name == "model.embed_tokens.weight":
            total += nbytes / p.shape[0]
        else:
            total += nbytes
    return round(total)


@pytest.mark.parametrize("knobs", [(16, 8), (16, 2), (14, 6), (12, 4), (1, 1)])
def test_bytes_are_the_parameters_a_step_reads(common, knobs):
    lm, _ = rm.build(rm.TINY, "cpu", torch.float32)
    blocks, top_k = knobs
    # the first `blocks` blocks are the active ones here; which blocks does not change the count
    assert common.decode_step_bytes(rm.TINY, blocks, top_k, dtype_bytes=4) == read_by_step(lm, blocks, top_k, rm.TINY.top_k)


def test_one_embedding_row_not_the_table(common):
    shape = rm.MOLMOE_1B
    wider = dataclasses.replace(shape, vocab=2 * shape.vocab)
    # doubling the vocabulary adds the LM head's share only (the embedding table is not read)
    extra = common.decode_step_bytes(wider, 16, 8) - common.decode_step_bytes(shape, 16, 8)
    assert extra == 2 * shape.vocab * shape.hidden


def test_molmoe_1b_floor_and_bytes_ratio(common):
    """Issue 32: at 4.25 TB/s the floor is 0.554 / 0.414 / 0.298 ms at 16,8 / 14,6 / 12,4, and the
    12,4 over 16,8 bytes ratio 0.537 (0.574 when the 206 MB embedding table was counted)."""
    shape = rm.MOLMOE_1B
    for (b, k), ms in {(16, 8): 0.554, (14, 6): 0.414, (12, 4): 0.298}.items():
        assert common.decode_floor_ms(shape, b, k, 4.25e12) == pytest.approx(ms, abs=0.001)
    ratio = common.bytes_ratio(shape, "12,4", "16,8")
    assert ratio == pytest.approx(0.537, abs=0.001)
    table = 2 * shape.vocab * shape.hidden
    old = (common.decode_step_bytes(shape, 12, 4) + table) / (common.decode_step_bytes(shape, 16, 8) + table)
    assert old == pytest.approx(0.574, abs=0.001) and table == pytest.approx(206e6, rel=0.001)
    assert common.bytes_ratio(shape, "16,8,high", "16,8") == 1.0  # a tier in the knobs is ignored


def test_benchmarks_share_the_definition(common, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import `_common` as run from benchmarks/
    for script in ("knobs_gpu.py", "molmoe_gpu.py"):
        mod = load_benchmark(script)
        assert not hasattr(mod, "floor_ms")
        assert mod.decode_floor_ms(rm.MOLMOE_1B, 12, 4, 4.25e12) == common.decode_floor_ms(rm.MOLMOE_1B, 12, 4, 4.25e12)
        assert mod.bytes_ratio(rm.MOLMOE_1B, "12,4", "16,8") == common.bytes_ratio(rm.MOLMOE_1B, "12,4", "16,8")
