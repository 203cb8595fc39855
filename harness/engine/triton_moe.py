"""Triton expert kernels of the fast engine (CUDA; ``TRITON_INTERPRET=1`` runs them on the CPU
for tests). Both variants read the runtime ``top_k`` from a device tensor and mask every load of
a slot ``>= top_k``, so skipped slots move no weight bytes and a captured graph serves every
``top_k``:

- *pairwise* (few tokens): one program per ((token, slot), column tile) computes a GEMV against
  its expert's weights; no sorting, nothing to prepare;
- *grouped* (many tokens): the (token, slot) pairs are grouped by expert (one Triton program up to
  64 tokens, sync-free torch ops above) and each program multiplies a tile of one expert's tokens by a tile of its weights (``tl.dot``), so
  each expert's weights are read once per column tile however many tokens chose it.

The gate and up projections run in one kernel with the SwiGLU activation fused; the down
projection applies the routing weight; the per-slot results are summed in float32 (pairwise:
by the down kernel's last program per tile, :mod:`harness.engine.triton_arrive`). Weight loads
carry the evict-first hint: the weights stream through once, the small tensors stay in L2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from harness.engine.triton_arrive import counters, last_to_arrive


@dataclass(frozen=True)
class Config:
    """Tile sizes; the defaults are the fastest measured on an H200 for the MolmoE-1B expert shape
    (benchmarks/results/moe_kernels.md: pairwise wins at 1 token and at 8 tokens with top_k 4, grouped
    tiles at 8 tokens with top_k 8 and at 32, one threshold serving every top_k; pairwise
    tiles from benchmarks/results/decode_kernels_experts.md: 4 rows of 1,024 columns per load cut
    batch-1 top_k 2 from 24.9 to 17.8 us a block, top_k 4 from 27.6 to 22.8, top_k 8 from 36.2 to
    35.0, and batch 8 is no slower)."""

    pair_max_tokens: int = 8  # pairwise up to this many tokens, grouped above
    pair_bn: int = 4
    pair_bk: int = 1024
    pair_warps: int = 4
    bm: int = 16  # grouped: tokens per tile (decode: up to 64 tokens); prompts use the *_large tiles
    bn: int = 64
    bk: int = 128
    bm_large: int = 128  # prompts (benchmarks/results/moe_kernels.md: fastest at 700 and 2,000 tokens)
    bn_large: int = 64
    bk_large: int = 64
    warps: int = 4
    stages: int = 3
    fused_act: bool = True  # grouped: SwiGLU inside the gate/up kernel (two accumulators) or after it


DEFAULT = Config()


@triton.jit
def _pair_up(x_ptr, w_ptr, idx_ptr, k_ptr, h_ptr, H: tl.constexpr, I: tl.constexpr, KMAX: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    p = tl.program_id(0)
    nb = tl.program_id(1)
    active = (p % KMAX) < tl.load(k_ptr)
    t = p // KMAX
    e = tl.load(idx_ptr + p).to(tl.int64)
    offs_n = nb * BN + tl.arange(0, BN)
    n_ok = (offs_n < I) & active
    acc_g = tl.zeros([BN], dtype=tl.float32)
    acc_u = tl.zeros([BN], dtype=tl.float32)
    wbase = w_ptr + e * (2 * I * H)
    if active:  # a skipped slot's program loads nothing and loops not at all
        for k0 in range(0, H, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_ok = offs_k < H
            xv = tl.load(x_ptr + t * H + offs_k, mask=k_ok & active, other=0.0).to(tl.float32)
            m = n_ok[:, None] & k_ok[None, :]
            wg = tl.load(wbase + offs_n[:, None] * H + offs_k[None, :], mask=m, other=0.0, eviction_policy="evict_first").to(tl.float32)
            wu = tl.load(wbase + (offs_n[:, None] + I) * H + offs_k[None, :], mask=m, other=0.0, eviction_policy="evict_first").to(tl.float32)
            acc_g += tl.sum(wg * xv[None, :], axis=1)
            acc_u += tl.sum(wu * xv[None, :], axis=1)
    hv = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
    tl.store(h_ptr + p * I + offs_n, hv.to(h_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _pair_down(h_ptr, w_ptr, idx_ptr, wt_ptr, k_ptr, part_ptr, y_ptr, cnt_ptr, H: tl.constexpr, I: tl.constexpr, KMAX: tl.constexpr,
               BN: tl.constexpr, BK: tl.constexpr):
    """One (token, slot) pair's down projection for a tile of output columns, times its routing
    weight, into ``part``; the last of a token's ``top_k`` pairs to finish a tile sums their parts
    in slot order into ``y`` (:mod:`harness.engine.triton_arrive`): no separate sum kernel."""
    p = tl.program_id(0)
    nb = tl.program_id(1)
    k = tl.load(k_ptr)
    t = p // KMAX
    if p % KMAX < k:  # a skipped slot's program loads nothing and writes nothing
        e = tl.load(idx_ptr + p).to(tl.int64)
        offs_n = nb * BN + tl.arange(0, BN)
        n_in = offs_n < H
        acc = tl.zeros([BN], dtype=tl.float32)
        wbase = w_ptr + e * (H * I)
        for k0 in range(0, I, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_ok = offs_k < I
            hv = tl.load(h_ptr + p * I + offs_k, mask=k_ok, other=0.0).to(tl.float32)
            w = tl.load(wbase + offs_n[:, None] * I + offs_k[None, :], mask=n_in[:, None] & k_ok[None, :], other=0.0,
                        eviction_policy="evict_first").to(tl.float32)  # streamed once: other data keeps L2
            acc += tl.sum(w * hv[None, :], axis=1)
        tl.store(part_ptr + p * H + offs_n, acc * tl.load(wt_ptr + p).to(tl.float32), mask=n_in)
        if last_to_arrive(cnt_ptr + t * tl.num_programs(1) + nb, k):
            total = tl.zeros([BN], dtype=tl.float32)
            for s in tl.static_range(KMAX):  # unrolled: the loads are in flight together
                total += tl.load(part_ptr + (t * KMAX + s) * H + offs_n, mask=n_in & (s < k), other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + t * H + offs_n, total, mask=n_in)


@triton.jit
def _tile_rows(order_ptr, tile_e_ptr, tile_first_ptr, pair_first_ptr, counts_ptr, E: tl.constexpr, BM: tl.constexpr):
    """A tile's group (an expert, or ``E``: the skipped slots, whose rows the down kernel zeroes; past
    the last group's tiles nothing), whether it is an expert, its rows, and their pair indices."""
    pid_m = tl.program_id(0)
    e = tl.load(tile_e_ptr + pid_m)
    active = e < E
    es = tl.minimum(e, E)
    rows = (pid_m - tl.load(tile_first_ptr + es)) * BM + tl.arange(0, BM)
    r_ok = (rows < tl.load(counts_ptr + es)) & (e <= E)
    pidx = tl.load(order_ptr + tl.load(pair_first_ptr + es) + rows, mask=r_ok, other=0)
    return tl.minimum(e, E - 1).to(tl.int64), active, r_ok, pidx.to(tl.int64)


@triton.jit
def _group_key(topi_ptr, offs, P, k, KMAX: tl.constexpr, E: tl.constexpr):
    """Each pair's group: its expert, ``E`` for a slot ``>= top_k``, ``E + 1`` past the last pair."""
    ok = offs < P
    ids = tl.load(topi_ptr + offs, mask=ok, other=0).to(tl.int32)
    return tl.where(ok, tl.where((offs % KMAX) < k, ids, E), E + 1)


@triton.jit
def _align(topi_ptr, k_ptr, order_ptr, tile_e_ptr, tile_first_ptr, pair_first_ptr, counts_ptr, P, T,
           KMAX: tl.constexpr, E: tl.constexpr, BM: tl.constexpr, BP: tl.constexpr, BG: tl.constexpr, BT: tl.constexpr,
           CH: tl.constexpr):
    """The grouped kernels' bookkeeping in one program, no sort and no host sync: the (token, slot)
    pairs in groups by expert (slots ``>= top_k`` in a last group ``E``), in pair order within a
    group; per group its pair count, first pair and first tile of ``BM`` rows; per tile its group
    (``> E`` past the last). A pair's position counts the pairs before it (in an earlier group, or
    earlier in its own), ``CH`` other pairs at a time."""
    k = tl.load(k_ptr)
    offs = tl.arange(0, BP)
    key = _group_key(topi_ptr, offs, P, k, KMAX, E)
    g = tl.arange(0, BG)
    pos = tl.zeros([BP], dtype=tl.int32)
    counts = tl.zeros([BG], dtype=tl.int32)
    for j0 in tl.static_range(0, BP, CH):
        oj = j0 + tl.arange(0, CH)
        kj = _group_key(topi_ptr, oj, P, k, KMAX, E)
        before = (kj[None, :] < key[:, None]) | ((kj[None, :] == key[:, None]) & (oj[None, :] < offs[:, None]))
        pos += tl.sum(before.to(tl.int32), 1)
        counts += tl.sum((g[:, None] == kj[None, :]).to(tl.int32), 1)
    tl.store(order_ptr + pos, offs, mask=offs < P)
    counts = tl.where(g <= E, counts, 0)
    tiles = (counts + BM - 1) // BM
    tile_end = tl.cumsum(tiles, 0)
    pair_end = tl.cumsum(counts, 0)
    tl.store(counts_ptr + g, counts, mask=g <= E)
    tl.store(pair_first_ptr + g, pair_end - counts, mask=g <= E)
    tl.store(tile_first_ptr + g, tile_end - tiles, mask=g <= E)
    t = tl.arange(0, BT)
    tile_e = tl.sum((tile_end[None, :] <= t[:, None]).to(tl.int32), 1)  # searchsorted(tile_end, t, right=True)
    tl.store(tile_e_ptr + t, tile_e, mask=t < T)


ALIGN_MAX_PAIRS = 512  # the one-program bookkeeping up to this many (token, slot) pairs (64 tokens of 8 slots); torch ops above


def tiles_of(topi, top_k_t, n_exp: int, bm: int):
    """(order, tile_e, tile_first, pair_first, counts, max_tiles): the grouped kernels' view of the
    (token, slot) pairs (see :func:`_align`; the per-group arrays have ``n_exp + 1`` entries, the
    skipped slots last) and the number of tile programs to launch; one launch up to
    :data:`ALIGN_MAX_PAIRS` pairs, sync-free torch ops above (a stable sort by group)."""
    n, kmax = topi.shape
    p = n * kmax
    max_tiles = triton.cdiv(p, bm) + n_exp + 1  # each group adds at most one partial tile
    dev = topi.device
    if p <= ALIGN_MAX_PAIRS:
        order = torch.empty(p, dtype=torch.int32, device=dev)
        tile_e = torch.empty(max_tiles, dtype=torch.int32, device=dev)
        firsts = torch.empty(3, n_exp + 1, dtype=torch.int32, device=dev)
        bp = max(16, triton.next_power_of_2(p))
        _align[(1,)](topi.contiguous(), top_k_t, order, tile_e, firsts[0], firsts[1], firsts[2], p, max_tiles, KMAX=kmax, E=n_exp, BM=bm,
                     BP=bp, BG=triton.next_power_of_2(n_exp + 2), BT=triton.next_power_of_2(max_tiles), CH=min(bp, 32),
                     num_warps=4 if bp <= 256 else 8)
        return order, tile_e, firsts[0], firsts[1], firsts[2], max_tiles
    from harness.engine.moe import sort_pairs

    order, counts = sort_pairs(topi, top_k_t, n_exp, with_skipped=True)
    tiles = (counts + bm - 1) // bm
    tile_end = torch.cumsum(tiles, 0, dtype=torch.int32)
    pair_first = torch.cumsum(counts, 0, dtype=torch.int32) - counts
    tile_e = torch.searchsorted(tile_end, torch.arange(max_tiles, dtype=torch.int32, device=dev), right=True).to(torch.int32)
    return order.to(torch.int32), tile_e, tile_end - tiles, pair_first, counts, max_tiles


@triton.jit
def _grouped_up(x_ptr, w_ptr, order_ptr, tile_e_ptr, tile_first_ptr, pair_first_ptr, counts_ptr, h_ptr, H: tl.constexpr, I: tl.constexpr, E: tl.constexpr,
                KMAX: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr):
    e, active, r_ok, pidx = _tile_rows(order_ptr, tile_e_ptr, tile_first_ptr, pair_first_ptr, counts_ptr, E, BM)
    tok = pidx // KMAX
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    n_ok = (offs_n < I) & active
    acc_g = tl.zeros([BM, BN], dtype=tl.float32)
    acc_u = tl.zeros([BM, BN], dtype=tl.float32)
    wbase = w_ptr + e * (2 * I * H)
    if active:  # tiles past the last expert's load nothing
        for k0 in range(0, H, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_ok = offs_k < H
            a = tl.load(x_ptr + tok[:, None] * H + offs_k[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0)
            m = k_ok[:, None] & n_ok[None, :]
            bg = tl.load(wbase + offs_n[None, :] * H + offs_k[:, None], mask=m, other=0.0)
            bu = tl.load(wbase + (offs_n[None, :] + I) * H + offs_k[:, None], mask=m, other=0.0)
            if IEEE:
                acc_g = tl.dot(a, bg, acc_g, input_precision="ieee")
                acc_u = tl.dot(a, bu, acc_u, input_precision="ieee")
            else:
                acc_g = tl.dot(a, bg, acc_g)
                acc_u = tl.dot(a, bu, acc_u)
    hv = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
    tl.store(h_ptr + pidx[:, None] * I + offs_n[None, :], hv.to(h_ptr.dtype.element_ty), mask=(r_ok & active)[:, None] & n_ok[None, :])


@triton.jit
def _grouped_up_plain(x_ptr, w_ptr, order_ptr, tile_e_ptr, tile_first_ptr, pair_first_ptr, counts_ptr, h_ptr, H: tl.constexpr, N: tl.constexpr,
                      E: tl.constexpr, KMAX: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr):
    """Gate and up projections as one product over their 2I stacked rows (one accumulator)."""
    e, active, r_ok, pidx = _tile_rows(order_ptr, tile_e_ptr, tile_first_ptr, pair_first_ptr, counts_ptr, E, BM)
    tok = pidx // KMAX
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    n_ok = (offs_n < N) & active
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    wbase = w_ptr + e * (N * H)
    if active:
        for k0 in range(0, H, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_ok = offs_k < H
            a = tl.load(x_ptr + tok[:, None] * H + offs_k[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(wbase + offs_n[None, :] * H + offs_k[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(a, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
    tl.store(h_ptr + pidx[:, None] * N + offs_n[None, :], acc.to(h_ptr.dtype.element_ty), mask=(r_ok & active)[:, None] & n_ok[None, :])


@triton.jit
def _grouped_down(h_ptr, w_ptr, order_ptr, tile_e_ptr, tile_first_ptr, pair_first_ptr, counts_ptr, wt_ptr, y_ptr, H: tl.constexpr, I: tl.constexpr, E: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr):
    e, active, r_ok, pidx = _tile_rows(order_ptr, tile_e_ptr, tile_first_ptr, pair_first_ptr, counts_ptr, E, BM)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    n_ok = offs_n < H  # the skipped slots' rows are written too: zeros (nothing else clears them)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    wbase = w_ptr + e * (H * I)
    if active:  # tiles past the last expert's load nothing
        for k0 in range(0, I, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_ok = offs_k < I
            a = tl.load(h_ptr + pidx[:, None] * I + offs_k[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(wbase + offs_n[None, :] * I + offs_k[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(a, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
    wt = tl.load(wt_ptr + pidx, mask=r_ok & active, other=0.0).to(tl.float32)
    tl.store(y_ptr + pidx[:, None] * H + offs_n[None, :], (acc * wt[:, None]).to(y_ptr.dtype.element_ty), mask=r_ok[:, None] & n_ok[None, :])


@triton.jit
def _top_of(z, ok, offs, k, BE: tl.constexpr, KMAX: tl.constexpr, RENORM: tl.constexpr):
    """The routing of one token from its float32 logits ``z`` (``ok``: the experts; ``offs``:
    ``tl.arange(0, BE)``): softmax over the experts, the top ``KMAX`` sorted (the lowest index among
    equal values), the weights of slots ``>= k`` zeroed, optionally renormalised. -> (slots, weights,
    expert ids)."""
    ez = tl.where(ok, tl.exp(z - tl.max(z, 0)), 0.0)
    left = tl.where(ok, ez / tl.sum(ez, 0), -1.0)  # probabilities; taken ones become -1
    slots = tl.arange(0, KMAX)
    vals = tl.zeros([KMAX], dtype=tl.float32)
    idxs = tl.zeros([KMAX], dtype=tl.int32)
    for j in tl.static_range(KMAX):
        m = tl.max(left, 0)
        ix = tl.min(tl.where(left == m, offs, BE), 0)  # the lowest index among equal values
        vals = tl.where(slots == j, tl.where(j < k, m, 0.0), vals)
        idxs = tl.where(slots == j, ix, idxs)
        left = tl.where(offs == ix, -1.0, left)
    if RENORM:
        vals = vals / tl.sum(vals, 0)
    return slots, vals, idxs


@triton.jit
def _route(logit_ptr, k_ptr, v_ptr, i_ptr, E: tl.constexpr, BE: tl.constexpr, KMAX: tl.constexpr, RENORM: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BE)
    ok = offs < E
    z = tl.load(logit_ptr + row * E + offs, mask=ok, other=float("-inf")).to(tl.float32)
    slots, vals, idxs = _top_of(z, ok, offs, tl.load(k_ptr), BE, KMAX, RENORM)
    tl.store(v_ptr + row * KMAX + slots, vals.to(v_ptr.dtype.element_ty))
    tl.store(i_ptr + row * KMAX + slots, idxs.to(tl.int64))


@triton.jit
def _router_route(x_ptr, w_ptr, stride_e, z_ptr, cnt_ptr, k_ptr, v_ptr, i_ptr, E: tl.constexpr, H: tl.constexpr,
                  BE: tl.constexpr, BK: tl.constexpr, KMAX: tl.constexpr, RENORM: tl.constexpr):
    """The router product and the routing in one kernel: program (token, expert) computes one
    logit as :func:`harness.engine.triton_gemv._gemv` does (one weight row, float32, rounded to the
    model dtype as that product stores it); the token's last program to finish reads its logits back
    and routes them (:func:`_top_of`, :mod:`harness.engine.triton_arrive`)."""
    t = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1)
    offs_n = e + tl.arange(0, 1)
    acc = tl.zeros([1], dtype=tl.float32)
    for k0 in tl.static_range(0, H, BK):
        offs_k = k0 + tl.arange(0, BK)
        k_ok = offs_k < H
        xv = tl.load(x_ptr + t * H + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_e + offs_k[None, :], mask=k_ok[None, :], other=0.0,
                    eviction_policy="evict_first")
        acc += tl.sum(w.to(tl.float32) * xv[None, :], axis=1)
    tl.store(z_ptr + t * E + offs_n, acc.to(z_ptr.dtype.element_ty))
    if last_to_arrive(cnt_ptr + t, E):
        offs = tl.arange(0, BE)
        ok = offs < E
        z = tl.load(z_ptr + t * E + offs, mask=ok, other=float("-inf"), cache_modifier=".cg").to(tl.float32)
        slots, vals, idxs = _top_of(z, ok, offs, tl.load(k_ptr), BE, KMAX, RENORM)
        tl.store(v_ptr + t * KMAX + slots, vals.to(v_ptr.dtype.element_ty))
        tl.store(i_ptr + t * KMAX + slots, idxs.to(tl.int64))


def route(logits, top_k_t, max_top_k: int, renormalize: bool, out_dtype):
    """:func:`harness.engine.block.route` in one kernel (softmax, sorted top-``max_top_k``,
    slots ``>= top_k`` zeroed, optional renormalisation, cast): one program per token."""
    n, e = logits.shape
    topv = torch.empty(n, max_top_k, dtype=out_dtype, device=logits.device)
    topi = torch.empty(n, max_top_k, dtype=torch.int64, device=logits.device)
    _route[(n,)](logits.contiguous(), top_k_t, topv, topi, E=e, BE=triton.next_power_of_2(e), KMAX=max_top_k,
                 RENORM=bool(renormalize), num_warps=1)
    return topv, topi


def router_route(x, router, top_k_t, max_top_k: int, renormalize: bool, out_dtype, warps: int = 8):
    """:func:`route` of ``F.linear(x, router)`` in one kernel for a few tokens ``x`` [N, H]
    (:func:`_router_route`): the logits the separate product would store, routed by the same code,
    without the second launch: the engine's decode steps with ``HARNESS_ENGINE_ROUTER=fused``
    (``benchmarks/decode_kernels.py`` measures it against the two kernels)."""
    n, h = x.shape
    e = router.shape[0]
    z = torch.empty(n, e, dtype=x.dtype, device=x.device)
    topv = torch.empty(n, max_top_k, dtype=out_dtype, device=x.device)
    topi = torch.empty(n, max_top_k, dtype=torch.int64, device=x.device)
    _router_route[(n, e)](x.contiguous(), router, router.stride(0), z, counters(x.device, n), top_k_t, topv, topi, E=e, H=h,
                          BE=triton.next_power_of_2(e), BK=min(2048, triton.next_power_of_2(h)), KMAX=max_top_k,
                          RENORM=bool(renormalize), num_warps=warps)
    return topv, topi


def moe_pairwise(x, topv, topi, top_k_t, w13, w2, cfg: Config = DEFAULT):
    return moe_pairwise_parts(x, topv, topi, top_k_t, w13, w2, cfg)[:, 0].to(x.dtype)


def moe_pairwise_parts(x, topv, topi, top_k_t, w13, w2, cfg: Config = DEFAULT):
    """[N, 1, H] float32: each token's routing-weighted sum of its ``top_k`` expert outputs (summed
    in slot order by the down kernel's last program per tile)."""
    n, kmax = topi.shape
    hid, inter = x.shape[1], w2.shape[2]
    p = n * kmax
    idx = topi.reshape(-1).contiguous()
    h = torch.empty(p, inter, dtype=x.dtype, device=x.device)
    part = torch.empty(p, hid, dtype=torch.float32, device=x.device)
    y = torch.empty(n, 1, hid, dtype=torch.float32, device=x.device)
    tiles = triton.cdiv(hid, cfg.pair_bn)
    _pair_up[(p, triton.cdiv(inter, cfg.pair_bn))](x, w13, idx, top_k_t, h, hid, inter, KMAX=kmax, BN=cfg.pair_bn,
                                                   BK=cfg.pair_bk, num_warps=cfg.pair_warps)
    _pair_down[(p, tiles)](h, w2, idx, topv.reshape(-1).contiguous(), top_k_t, part, y, counters(x.device, n * tiles), hid, inter,
                           KMAX=kmax, BN=cfg.pair_bn, BK=cfg.pair_bk, num_warps=cfg.pair_warps)
    return y


def moe_grouped(x, topv, topi, top_k_t, w13, w2, cfg: Config = DEFAULT, bm: int | None = None):
    return moe_grouped_parts(x, topv, topi, top_k_t, w13, w2, cfg, bm).sum(1).to(x.dtype)


def moe_grouped_parts(x, topv, topi, top_k_t, w13, w2, cfg: Config = DEFAULT, bm: int | None = None, out_dtype=torch.float32):
    """[N, K, H] in ``out_dtype``, one row per slot (skipped slots are zeros)."""
    n, kmax = topi.shape
    hid, inter, n_exp = x.shape[1], w2.shape[2], w13.shape[0]
    p = n * kmax
    large = n > 64
    bm = bm or (cfg.bm_large if large else cfg.bm)
    bn, bk = (cfg.bn_large, cfg.bk_large) if large and bm == cfg.bm_large else (cfg.bn, cfg.bk)
    order, tile_e, tile_first, pair_first, counts, max_tiles = tiles_of(topi, top_k_t, n_exp, bm)
    ieee = x.dtype == torch.float32
    y = torch.empty(p, hid, dtype=out_dtype, device=x.device)  # every row written by the down kernel
    meta = dict(BM=bm, BN=bn, BK=bk, IEEE=ieee, num_warps=cfg.warps, num_stages=cfg.stages)
    if cfg.fused_act:
        h = torch.empty(p, inter, dtype=x.dtype, device=x.device)
        _grouped_up[(max_tiles, triton.cdiv(inter, bn))](x, w13, order, tile_e, tile_first, pair_first, counts, h,
                                                             hid, inter, n_exp, KMAX=kmax, **meta)
    else:  # skipped and past-the-end rows of h13 stay unset; the down kernel never reads them
        h13 = torch.empty(p, 2 * inter, dtype=x.dtype, device=x.device)
        _grouped_up_plain[(max_tiles, triton.cdiv(2 * inter, bn))](x, w13, order, tile_e, tile_first, pair_first, counts,
                                                                       h13, hid, 2 * inter, n_exp, KMAX=kmax, **meta)
        g, u = h13.chunk(2, dim=-1)
        h = F.silu(g) * u
    _grouped_down[(max_tiles, triton.cdiv(hid, bn))](h, w2, order, tile_e, tile_first, pair_first, counts,
                                                         topv.reshape(-1).contiguous(), y, hid, inter, n_exp, **meta)
    return y.view(n, kmax, hid)
