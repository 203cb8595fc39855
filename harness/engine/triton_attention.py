"""Decode attention of the fast engine (one new query per sequence) as split-KV Triton kernels, the
default on CUDA (``HARNESS_ENGINE_ATTN=sdpa`` uses PyTorch's).

PyTorch's memory-efficient attention gives a single query one program per (sequence, head): 16
programs for MolmoE at batch 1, so the KV cache is read by 16 of the H200's 132 multiprocessors.
Here every (sequence, head, chunk of cache columns) is one program that keeps a running maximum,
sum and weighted value sum (online softmax), and the last chunk of a (sequence, head) to finish
combines them (:mod:`harness.engine.triton_arrive`; a second kernel for the combine cost 2.3 us a
block on an H200). Chunks are 32 columns (:func:`chunk_for`: wider only past 4,096 columns). Masked columns carry an additive
bias of -inf (:func:`harness.engine.block.attention_bias`); grouped-query attention reads the query
head's KV head.

Measured on an H200 (benchmarks/results/decode_kernels.md, microseconds per call, 16 heads of
128): 6.1 against 8.1 for PyTorch's kernel called alone at 256 cache columns, 12.3 against 14.4 at
2,304; one chunk of 256 columns per program, the previous layout, took 17.6 and 27.5. Inside the
engine PyTorch's kernel measured slower than alone (13 us a block at 256 columns,
benchmarks/results/engine_profile.md).

:data:`decode_attention` is a ``torch.library`` Triton op, so ``torch.compile`` traces it into
the engine's compiled block step (and CUDA graphs capture it) like any other kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from harness.engine.triton_arrive import last_to_arrive

MIN_CHUNK = 32  # cache columns per program at least; wider chunks only where the combine would read too many
MAX_CHUNK = 256
BW = 32  # columns per inner step
MAX_CHUNKS = 128  # one combine program reads every chunk: caches up to 128 x 256 = 32,768 columns
MAX_WIDTH = MAX_CHUNK * MAX_CHUNKS  # wider caches use PyTorch's attention
WARPS = 4


def chunk_for(width: int, min_chunk: int = MIN_CHUNK) -> int:
    """Cache columns per program: the smallest power-of-two multiple of ``min_chunk`` that keeps
    the chunks of one (sequence, head) within :data:`MAX_CHUNKS` (more programs over short caches,
    where one program per 256 columns left most multiprocessors idle)."""
    ch = min_chunk
    while ch < MAX_CHUNK and triton.cdiv(width, ch) > MAX_CHUNKS:
        ch *= 2
    return ch


def combine_width(chunks: int, max_chunks: int = MAX_CHUNKS) -> int:
    """The chunk count the combine reads: the next power of two of ``chunks``, at least 2 and at
    most ``max_chunks`` (a constant of the kernel, so the compiled step is specialised on it)."""
    return min(max_chunks, max(2, triton.next_power_of_2(chunks)))


def specialisations(min_width: int, step: int, max_width: int = MAX_WIDTH) -> int:
    """How many versions of the compiled step the kernel's constants (chunk, :func:`combine_width`)
    ask for over the cache widths ``min_width, min_width + step, ... <= max_width``: torch.compile
    guards on them, so each is one compilation of every function that calls
    :func:`decode_attention` (eight for caches of 256 to 32,768 columns in steps of 256)."""
    seen = set()
    for width in range(int(min_width), int(max_width) + 1, int(step)):
        chunk = chunk_for(width)
        seen.add((chunk, combine_width(triton.cdiv(width, chunk))))
    return len(seen)


@triton.jit
def _attn_chunk(q_ptr, k_ptr, v_ptr, b_ptr, m_ptr, l_ptr, acc_ptr, o_ptr, cnt_ptr, W, S, SCALE: tl.constexpr, GROUP: tl.constexpr,
                KVH: tl.constexpr, D: tl.constexpr, CH: tl.constexpr, BW: tl.constexpr, MAXS: tl.constexpr,
                LOOP: tl.constexpr = False, MAXC: tl.constexpr = MAX_CHUNKS):
    bh = tl.program_id(0).to(tl.int64)  # sequence * heads + head
    c = tl.program_id(1)
    b = bh // (GROUP * KVH)
    kvh = (bh % (GROUP * KVH)) // GROUP
    offs_d = tl.arange(0, D)
    q = tl.load(q_ptr + bh * D + offs_d).to(tl.float32) * SCALE  # a constant: float arguments can arrive as float64
    kv_base = (b * KVH + kvh) * W * D
    m_i = tl.full([1], -1.0e30, tl.float32)  # finite: a chunk with every column masked gives weight 0, not NaN
    l_i = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([D], dtype=tl.float32)
    for w0 in range(0, CH, BW):
        cols = c * CH + w0 + tl.arange(0, BW)
        ok = cols < W
        kb = tl.load(k_ptr + kv_base + cols[:, None] * D + offs_d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        s = tl.sum(kb * q[None, :], axis=1) + tl.load(b_ptr + b * W + cols, mask=ok, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m_i, tl.max(s, 0))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new)
        vb = tl.load(v_ptr + kv_base + cols[:, None] * D + offs_d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * vb, axis=0)
        l_i = l_i * alpha + tl.sum(p, 0)
        m_i = m_new
    one = tl.arange(0, 1)
    tl.store(m_ptr + bh * S + c + one, m_i)
    tl.store(l_ptr + bh * S + c + one, l_i)
    tl.store(acc_ptr + (bh * S + c) * D + offs_d, acc)
    if LOOP:  # the combine walks the chunks in tiles of MAXS, skipping those past the count: no constant follows the width
        if last_to_arrive(cnt_ptr + bh, S):
            mx = tl.max(tl.full([MAXS], -1.0e30, tl.float32), 0)
            for s0 in tl.static_range(0, MAXC, MAXS):
                if s0 < S:
                    offs = s0 + tl.arange(0, MAXS)
                    m = tl.load(m_ptr + bh * S + offs, mask=offs < S, other=-1.0e30, cache_modifier=".cg")
                    mx = tl.maximum(mx, tl.max(m, 0))
            den = tl.sum(tl.zeros([MAXS], tl.float32), 0)
            tot = tl.zeros([D], dtype=tl.float32)
            for s0 in tl.static_range(0, MAXC, MAXS):
                if s0 < S:
                    offs = s0 + tl.arange(0, MAXS)
                    ok = offs < S
                    m = tl.load(m_ptr + bh * S + offs, mask=ok, other=-1.0e30, cache_modifier=".cg")
                    wgt = tl.where(ok, tl.exp(m - mx), 0.0)
                    den += tl.sum(wgt * tl.load(l_ptr + bh * S + offs, mask=ok, other=0.0, cache_modifier=".cg"), 0)
                    part = tl.load(acc_ptr + (bh * S + offs[:, None]) * D + offs_d[None, :], mask=ok[:, None], other=0.0,
                                   cache_modifier=".cg")
                    tot += tl.sum(wgt[:, None] * part, axis=0)
            tl.store(o_ptr + bh * D + offs_d, (tot / den).to(o_ptr.dtype.element_ty))
    elif last_to_arrive(cnt_ptr + bh, S):  # the (sequence, head)'s last chunk combines them all, in chunk order
        offs = tl.arange(0, MAXS)
        ok = offs < S
        m = tl.load(m_ptr + bh * S + offs, mask=ok, other=-1.0e30, cache_modifier=".cg")
        wgt = tl.where(ok, tl.exp(m - tl.max(m, 0)), 0.0)
        den = tl.sum(wgt * tl.load(l_ptr + bh * S + offs, mask=ok, other=0.0, cache_modifier=".cg"), 0)
        part = tl.load(acc_ptr + (bh * S + offs[:, None]) * D + offs_d[None, :], mask=ok[:, None], other=0.0, cache_modifier=".cg")
        tl.store(o_ptr + bh * D + offs_d, (tl.sum(wgt[:, None] * part, axis=0) / den).to(o_ptr.dtype.element_ty))


def launch(q, kc, vc, bias, scale: float, chunk: int, counters: torch.Tensor, bw: int = BW, warps: int = WARPS,
           max_chunks: int = MAX_CHUNKS, launcher=lambda k: k, loop_combine: int = 0):
    """One kernel over chunks of ``chunk`` columns, at most ``max_chunks`` (a power of two) of
    them, whose last chunk per (sequence, head) combines them, reading the next power of two of
    the chunk count; with ``loop_combine`` (a power of two) in tiles of that many chunks, looped
    at run time, so that the kernel's constants do not follow the cache width (a candidate for
    fewer compiled versions, docs/engine.md; measured in benchmarks/decode_kernels.py). ``counters``:
    at least one zeroed int32 per (sequence, head) (:mod:`harness.engine.triton_arrive`);
    ``launcher`` wraps the kernel for tracing."""
    bsz, heads, _, d = q.shape
    kvh, width = kc.shape[1], kc.shape[2]
    chunks = triton.cdiv(width, chunk)
    m = torch.empty((bsz * heads, chunks), dtype=torch.float32, device=q.device)
    lsum = torch.empty_like(m)
    acc = torch.empty((bsz * heads, chunks, d), dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    launcher(_attn_chunk)[(bsz * heads, chunks)](q, kc, vc, bias, m, lsum, acc, out, counters, width, chunks, SCALE=scale,
                                                 GROUP=heads // kvh, KVH=kvh, D=d, CH=chunk, BW=min(bw, chunk),
                                                 MAXS=int(loop_combine) or combine_width(chunks, max_chunks),
                                                 LOOP=bool(loop_combine), MAXC=max_chunks, num_warps=warps)
    return out


@triton_op("harness::decode_attention", mutates_args={"counters"})
def decode_attention(q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, bias: torch.Tensor, scale: float,
                     counters: torch.Tensor) -> torch.Tensor:
    """``q`` [B, H, 1, D] (contiguous), ``kc``/``vc`` [B, KVH, W, D], ``bias`` [B, 1, 1, W] additive
    -> attention output [B, H, 1, D] in ``q``'s dtype; ``counters``: the persistent zeroed buffer of
    :func:`harness.engine.triton_arrive.counters` (an input, so compiled code updates it in place;
    every counter is back at zero after the call)."""
    return launch(q, kc, vc, bias, scale, chunk_for(kc.shape[2]), counters, launcher=wrap_triton)
