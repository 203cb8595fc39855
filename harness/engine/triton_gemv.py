"""Single-row matrix-vector products of the fast engine's batch-1 decode step (the q/k/v, output
and router projections of every block) as a Triton kernel; CUDA only (``TRITON_INTERPRET=1`` runs
it on the CPU for tests).

A ``[1, K] x [N, K]^T`` product reads the whole weight once, so it is bound by memory bandwidth.
One program per tile of :data:`BN` output rows reads those rows whole (``K / BK`` loads unrolled,
all in flight), accumulates in float32 and rounds once to the input's dtype, as cuBLAS's kernels
do. :data:`gemv` is a ``torch.library`` Triton op, so ``torch.compile`` traces it into the
engine's compiled block step (and CUDA graphs capture it) like any other kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

BN = 8  # output rows per program
BK = 512  # columns per load
WARPS = 4


@triton.jit
def _gemv(x_ptr, w_ptr, y_ptr, N, stride_n, K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    n_ok = offs_n < N
    acc = tl.zeros([BN], dtype=tl.float32)
    for k0 in tl.static_range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        k_ok = offs_k < K
        xv = tl.load(x_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_n + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        acc += tl.sum(w.to(tl.float32) * xv[None, :], axis=1)
    tl.store(y_ptr + offs_n, acc.to(y_ptr.dtype.element_ty), mask=n_ok)


def launch(x, w, bn: int = BN, bk: int = BK, warps: int = WARPS, launcher=lambda k: k):
    """``x`` [..., K] holding one row, ``w`` [N, K] (unit column stride) -> ``x @ w.T`` [..., N]."""
    n, k = w.shape
    y = torch.empty(x.shape[:-1] + (n,), dtype=x.dtype, device=x.device)
    launcher(_gemv)[(triton.cdiv(n, bn),)](x.contiguous(), w, y, n, w.stride(0), K=k, BN=bn, BK=min(bk, triton.next_power_of_2(k)),
                                           num_warps=warps)
    return y


@triton_op("harness::gemv", mutates_args={})
def gemv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, w)`` for an ``x`` of one row."""
    return launch(x, w, launcher=wrap_triton)
