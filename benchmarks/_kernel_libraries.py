"""Expert (MoE) kernels of kernel libraries from the package index, behind the harness's own expert
contract, for ``benchmarks/moe_kernels.py`` to time next to the engine's kernels.

The harness's experts weights are ``w13`` [E, 2*I, H] (gate rows, then up rows, as transformers'
OLMoE ``gate_up_proj``) and ``w2`` [E, H, I]. Each adapter takes them once (re-laying them out as its
library needs) and returns ``run(x, ids, scales)``: ``x`` [N, H], ``ids`` [N, k] int32 expert
indices, ``scales`` [N, k] float32 routing weights -> [N, H], the weighted sum of SwiGLU experts.

Libraries (each with its install hint in ``LIBRARIES``):
- FlashInfer (``flashinfer-python``): ``flashinfer.fused_moe.cutlass_fused_moe``, unquantised bf16;
  its SwiGLU weight takes the up rows first, then the gate rows. Its CUTLASS MoE is compiled with
  nvcc on first use (unless a matching ``flashinfer-jit-cache`` is installed).
- FlagGems (``flag-gems``): ``flag_gems.fused.fused_moe.outplace_fused_experts``, a Triton fused
  MoE after vLLM's unquantised one, in a standalone pure-Python package; it takes
  the harness's layout as is (``w1`` gate rows then up rows, ``w2`` [E, H, I]).
"""

from __future__ import annotations

INSTALL_HINT = "pip install -e '.[gpu]'"
# flag-gems 5.0.2 pins numpy==1.26.4, packaging==26.0 and sqlalchemy exactly: installed without its
# dependencies it leaves the environment's own numpy in place (it imports sqlalchemy and yaml).
FLAG_GEMS_HINT = "pip install --no-deps flag-gems sqlalchemy"


def _flashinfer(w13, w2):
    from flashinfer.fused_moe import cutlass_fused_moe

    inter = w13.shape[1] // 2
    fc1 = w13.new_empty(w13.shape)
    fc1[:, :inter] = w13[:, inter:]  # up
    fc1[:, inter:] = w13[:, :inter]  # gate
    fc2 = w2.contiguous()

    def run(x, ids, scales):
        out = cutlass_fused_moe(input=x, token_selected_experts=ids, token_final_scales=scales,
                                fc1_expert_weights=fc1, fc2_expert_weights=fc2, output_dtype=x.dtype,
                                quant_scales=None)
        return out[0] if isinstance(out, (list, tuple)) else out

    return run


def _flag_gems(w13, w2):
    from flag_gems.fused.fused_moe import outplace_fused_experts

    w13, w2 = w13.contiguous(), w2.contiguous()

    def run(x, ids, scales):
        return outplace_fused_experts(x.contiguous(), w13, w2, scales, ids)

    return run


# name -> (adapter, how to install the library)
LIBRARIES = {"flashinfer cutlass_fused_moe": (_flashinfer, INSTALL_HINT),
             "flag_gems fused_experts (triton)": (_flag_gems, FLAG_GEMS_HINT)}


def expert_kernels(w13, w2):
    """(name -> run, name -> why it is unavailable) over ``LIBRARIES``: a library that is not
    installed, or that refuses these weights, is reported, not raised."""
    kernels, unavailable = {}, {}
    for name, (make, hint) in LIBRARIES.items():
        try:
            kernels[name] = make(w13, w2)
        except ImportError as exc:
            unavailable[name] = f"not installed ({exc}); {hint}"
        except Exception as exc:  # a library that cannot take these weights is a result, not a crash
            unavailable[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return kernels, unavailable


def routing(topv, topi, k: int):
    """The libraries' routing inputs for the first ``k`` slots: int32 ids and float32 scales."""
    import torch

    return topi[:, :k].to(torch.int32).contiguous(), topv[:, :k].float().contiguous()
