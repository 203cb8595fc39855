"""The kernel-library adapters of benchmarks/moe_kernels.py keep the harness's expert contract: a
stand-in FlashInfer that follows FlashInfer's documented CUTLASS MoE contract (SwiGLU weight with
the up rows first, int32 ids, float32 scales, a list of outputs), and a stand-in FlagGems that
follows its fused_experts contract (w1 gate rows then up rows, positional weights then ids), must
give the reference experts' output through the adapters; a library that is not installed is
reported with its install hint. On a GPU with FlagGems installed, the real library is checked too."""

from __future__ import annotations

import sys
import types

import pytest
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


def documented_fused_experts(hidden_states, w1, w2, topk_weights, topk_ids):
    """FlagGems' (vLLM's) fused_experts contract written out in torch: w1 [E, 2I, H] gate rows first."""
    out = torch.zeros(hidden_states.shape[0], w2.shape[1], dtype=torch.float32)
    for t in range(hidden_states.shape[0]):
        for e, s in zip(topk_ids[t].tolist(), topk_weights[t].tolist()):
            gate, up = F.linear(hidden_states[t].float(), w1[e].float()).chunk(2)
            out[t] += s * F.linear(F.silu(gate) * up, w2[e].float())
    return out.to(hidden_states.dtype)


def fake_package(monkeypatch, dotted: str, **attrs):
    """Install a stand-in module ``dotted`` (and its parents) in sys.modules for this test."""
    parts = dotted.split(".")
    parent = None
    for i in range(len(parts)):
        mod = types.ModuleType(".".join(parts[: i + 1]))
        if parent is not None:
            setattr(parent, parts[i], mod)
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        parent = mod
    for key, value in attrs.items():
        setattr(parent, key, value)


def check_adapter(lib, name, device="cpu", dtype=torch.float32, tol=1e-5):
    g = torch.Generator().manual_seed(0)
    E, H, I, K = 6, 8, 5, 3
    w13, w2 = torch.randn(E, 2 * I, H, generator=g), torch.randn(E, H, I, generator=g)
    x = torch.randn(4, H, generator=g)
    topv, topi = torch.softmax(torch.randn(4, E, generator=g), -1).topk(K)
    kernels, unavailable = lib.expert_kernels(w13.to(device, dtype), w2.to(device, dtype))
    assert name in kernels, unavailable
    for k in (1, 3):
        ids, scales = lib.routing(topv.to(device), topi.to(device), k)
        got = kernels[name](x.to(device, dtype), ids, scales).float().cpu()
        torch.testing.assert_close(got, moe_loop(x, topv, topi, k, w13, w2), rtol=tol, atol=tol)
    return kernels, unavailable


def test_flashinfer_adapter_gives_the_reference_experts_output(monkeypatch):
    fake_package(monkeypatch, "flashinfer.fused_moe", cutlass_fused_moe=documented_cutlass_fused_moe)
    monkeypatch.setitem(sys.modules, "flag_gems", None)
    kernels, _ = check_adapter(load_adapters(), "flashinfer cutlass_fused_moe")
    assert set(kernels) == {"flashinfer cutlass_fused_moe"}


def test_flag_gems_adapter_gives_the_reference_experts_output(monkeypatch):
    fake_package(monkeypatch, "flag_gems.fused.fused_moe", outplace_fused_experts=documented_fused_experts)
    monkeypatch.setitem(sys.modules, "flashinfer", None)
    kernels, _ = check_adapter(load_adapters(), "flag_gems fused_experts (triton)")
    assert set(kernels) == {"flag_gems fused_experts (triton)"}


@pytest.mark.gpu
def test_the_real_flag_gems_keeps_the_contract_on_a_gpu():
    pytest.importorskip("flag_gems")
    check_adapter(load_adapters(), "flag_gems fused_experts (triton)", device="cuda", dtype=torch.bfloat16, tol=3e-2)


def test_a_library_that_is_not_installed_is_reported_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "flag_gems", None)
    lib = load_adapters()
    kernels, unavailable = lib.expert_kernels(torch.zeros(2, 4, 3), torch.zeros(2, 3, 2))
    assert kernels == {}
    why = unavailable["flashinfer cutlass_fused_moe"]
    assert why.startswith("not installed") and "pip install -e '.[gpu]'" in why
    why = unavailable["flag_gems fused_experts (triton)"]
    assert why.startswith("not installed") and "pip install --no-deps flag-gems" in why


def test_a_library_that_fails_at_import_is_reported_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("No device were detected on your machine !")

    monkeypatch.setitem(sys.modules, "flashinfer", None)
    lib = load_adapters()
    lib.LIBRARIES["flag_gems fused_experts (triton)"] = (broken, lib.FLAG_GEMS_HINT)
    kernels, unavailable = lib.expert_kernels(torch.zeros(2, 4, 3), torch.zeros(2, 3, 2))
    assert kernels == {} and unavailable["flag_gems fused_experts (triton)"].startswith("RuntimeError: No device")
