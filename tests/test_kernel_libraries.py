"""The kernel-library adapters of benchmarks/moe_kernels.py keep the harness's expert contract: a
stand-in FlashInfer that follows FlashInfer's documented CUTLASS MoE contract (SwiGLU weight with
the up rows first, int32 ids, float32 scales, a list of outputs) must give the reference experts'
output through the adapter; a library that is not installed is reported with the install hint."""

from __future__ import annotations

import sys
import types

import torch
import torch.nn.functional as F

from fixtures.scripts import load_benchmark
from harness.engine.moe import moe_loop


def load_adapters():
    return load_benchmark("_kernel_libraries.py")


def documented_cutlass_fused_moe(*, input, token_selected_experts, token_final_scales, fc1_expert_weights,
                                 fc2_expert_weights, output_dtype, quant_scales):
    """FlashInfer's contract as its docs and tests state it, written out in torch."""
    assert token_selected_experts.dtype == torch.int32 and token_final_scales.dtype == torch.float32
    assert quant_scales is None
    out = torch.zeros(input.shape[0], fc2_expert_weights.shape[1], dtype=torch.float32)
    for t in range(input.shape[0]):
        for e, s in zip(token_selected_experts[t].tolist(), token_final_scales[t].tolist()):
            up, gate = F.linear(input[t].float(), fc1_expert_weights[e].float()).chunk(2)
            out[t] += s * F.linear(F.silu(gate) * up, fc2_expert_weights[e].float())
    return [out.to(output_dtype)]


def test_flashinfer_adapter_gives_the_reference_experts_output(monkeypatch):
    fused = types.ModuleType("flashinfer.fused_moe")
    fused.cutlass_fused_moe = documented_cutlass_fused_moe
    pkg = types.ModuleType("flashinfer")
    pkg.fused_moe = fused
    monkeypatch.setitem(sys.modules, "flashinfer", pkg)
    monkeypatch.setitem(sys.modules, "flashinfer.fused_moe", fused)
    lib = load_adapters()
    g = torch.Generator().manual_seed(0)
    E, H, I, K = 6, 8, 5, 3
    w13, w2 = torch.randn(E, 2 * I, H, generator=g), torch.randn(E, H, I, generator=g)
    x = torch.randn(4, H, generator=g)
    topv, topi = torch.softmax(torch.randn(4, E, generator=g), -1).topk(K)
    kernels, unavailable = lib.expert_kernels(w13, w2)
    assert unavailable == {} and set(kernels) == {"flashinfer cutlass_fused_moe"}
    for k in (1, 3):
        ids, scales = lib.routing(topv, topi, k)
        got = kernels["flashinfer cutlass_fused_moe"](x, ids, scales)
        torch.testing.assert_close(got, moe_loop(x, topv, topi, k, w13, w2), rtol=1e-5, atol=1e-5)


def test_a_library_that_is_not_installed_is_reported_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # import raises ImportError
    lib = load_adapters()
    kernels, unavailable = lib.expert_kernels(torch.zeros(2, 4, 3), torch.zeros(2, 3, 2))
    assert kernels == {}
    why = unavailable["flashinfer cutlass_fused_moe"]
    assert why.startswith("not installed") and "pip install -e '.[gpu]'" in why
