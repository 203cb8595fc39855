"""Single-row matrix-vector products of the fast engine's batch-1 steps (the q/k/v, output and
router projections of every block, and the LM head) as a Triton kernel; CUDA only
(``TRITON_INTERPRET=1`` runs it on the CPU for tests).

A ``[1, K] x [N, K]^T`` product reads the whole weight once, so it is bound by memory bandwidth.
One program per tile of a few output rows reads those rows whole (``K / BK`` loads unrolled, all
in flight), accumulates in float32 and rounds once to the input's dtype, as cuBLAS's kernels do.
Measured on an H200 (benchmarks/results/decode_kernels.md, microseconds per call with each of 16
calls on its own weights): q/k/v 7.9 against cuBLAS's 9.9, output 4.2 against 6.3, router 1.7
against 4.9, LM head 47.5 against 53.9.

:data:`gemv` is a ``torch.library`` Triton op, so ``torch.compile`` traces it into the engine's
compiled block step (and CUDA graphs capture it) like any other kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton


def config_for(n: int, k: int) -> tuple[int, int, int]:
    """(output rows per program, columns per load, warps) for an ``[N, K]`` weight: the fastest
    measured on an H200 at the MolmoE-1B shapes (benchmarks/results/decode_kernels.md: whole rows of
    up to 2,048 columns per load; one row per program for small outputs such as the router's, two
    for the q/k/v, output and LM-head products)."""
    bk = min(2048, triton.next_power_of_2(k))
    return (1, bk, 8) if n <= 256 else (2, bk, 4)


@triton.jit
def _gemv(x_ptr, w_ptr, y_ptr, N, stride_n, K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    n_ok = offs_n < N
    acc = tl.zeros([BN], dtype=tl.float32)
    for k0 in tl.static_range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        k_ok = offs_k < K
        xv = tl.load(x_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_n + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0,
                    eviction_policy="evict_first")  # read once: these lines go first, other data stays in L2
        acc += tl.sum(w.to(tl.float32) * xv[None, :], axis=1)
    tl.store(y_ptr + offs_n, acc.to(y_ptr.dtype.element_ty), mask=n_ok)


def launch(x, w, bn: int | None = None, bk: int | None = None, warps: int | None = None, launcher=lambda k: k):
    """``x`` [..., K] holding one row, ``w`` [N, K] (unit column stride) -> ``x @ w.T`` [..., N];
    tiles by :func:`config_for` unless given."""
    n, k = w.shape
    dbn, dbk, dwarps = config_for(n, k)
    bn, bk, warps = bn or dbn, min(bk or dbk, triton.next_power_of_2(k)), warps or dwarps
    y = torch.empty(x.shape[:-1] + (n,), dtype=x.dtype, device=x.device)
    launcher(_gemv)[(triton.cdiv(n, bn),)](x.contiguous(), w, y, n, w.stride(0), K=k, BN=bn, BK=bk, num_warps=warps)
    return y


@triton_op("harness::gemv", mutates_args={})
def gemv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, w)`` for an ``x`` of one row."""
    return launch(x, w, launcher=wrap_triton)
