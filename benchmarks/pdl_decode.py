"""Programmatic dependent launch (PDL, Hopper and later) for the fast engine's batch-1 decode
kernels (issue 32): one decode step's weight streaming at the MolmoE-1B shapes, timed with the
engine's kernels as they are and with PDL copies of them.

The chain mimics a decode step of the 16 blocks (hidden 2,048, 16 heads of 128, 64 experts of
intermediate 1,024, top_k 8, vocabulary 50,304), each block on its OWN weights (no weight is
served from L2 because an earlier kernel read it): residual add + RMSNorm (a kernel of this file,
standing in for the engine's compiled norm kernels; without it the SwiGLU experts make the
activations grow or vanish geometrically over 16 blocks), the q/k/v GEMV [6,144 x 2,048], the
output GEMV [2,048 x 2,048] (on the q part, standing in for the attention output), the router GEMV
[64 x 2,048], the routing kernel, the pairwise expert kernels (gate + up with SwiGLU, then down
with the routing weight and the slot sum); after the blocks a last norm and the LM head
[50,304 x 2,048]. Every kernel reads what the kernel before it wrote: a real dependency chain of
114 launches. Only the activations depend on the previous kernel; the weights of the GEMVs, the
norms and the down projection do not (the down projection's expert indices come from the routing
kernel two launches back), so a PDL kernel can issue its weight loads before it waits.

Variants (per step; graphs: the whole step captured into one CUDA graph and replayed, median of
many replays):

- ``engine``: harness.engine's ``_gemv``, ``_route``, ``_pair_up``, ``_pair_down`` as they are;
- ``pdl``: copies of them in this file that call ``tl.extra.cuda.gdc_launch_dependents()`` at their
  start (the routing and up kernels after their wait), load their first tile of weights, then
  ``tl.extra.cuda.gdc_wait()``, then the vector, launched with ``launch_pdl=True``;
- ``pdl, wait first``: the same launches, ``gdc_wait`` before any load (what the launch overlap
  alone gives, without the early weight loads);
- ``pdl kernels, plain launch``: the PDL copies launched without the attribute (``gdc_*`` are then
  no-ops): the control that separates the attribute from the code changes;
- the engine and ``pdl`` variants also launched eagerly (host-bound: reference only).

Reported: microseconds per step, x floor (weight bytes read / ``--bandwidth``, 4.25 TB/s by default
as in issue 32; also / the measured copy bandwidth), the relative error of the step's logits
against a float32 torch reference (float32 math, intermediates rounded to the dtype the kernels
store, the variant's own expert choice; each variant checked on a replay after every
intermediate buffer was filled with NaN, so a kernel that reads before its producer finished
shows up), the largest difference from the engine variant's logits, and how many edges of the
captured graph are programmatic (CUDA's graph API, via libcuda; an edge count of 0 for ``pdl``
means the capture turned the PDL launches into full dependencies).

    python benchmarks/pdl_decode.py            # GPU (sm_90+ for PDL), 1-2 minutes (mostly compiling)
    python benchmarks/pdl_decode.py --quick    # 50 replays a variant instead of 300, about a minute
Prints a table and writes pdl_decode.json / .md to --out ($OUT if set, else benchmarks/results/).
On a machine without CUDA it prints one line and exits 0; tests/test_pdl_decode.py runs the kernels
of every variant (PDL instructions off) in Triton's CPU interpreter on tiny shapes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

if __name__ == "__main__" and not torch.cuda.is_available():  # before Triton: a CPU box may not have it
    print("pdl_decode.py needs a CUDA device (torch sees none): nothing measured")
    raise SystemExit(0)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from harness.engine import triton_gemv as tg  # noqa: E402
from harness.engine import triton_moe as tm  # noqa: E402
from harness.engine.triton_arrive import counters, last_to_arrive  # noqa: E402


# -- the PDL copies of the engine's kernels ---------------------------------------------------------
# Same tiles and the same float32 accumulation order as the originals (the first K tile's sum starts
# the accumulator, 0 + s == s), so without PDL they give the engine's numbers. USE_PDL (constexpr) off:
# no gdc_* instruction at all (Triton's interpreter has no inline assembly). EARLY off: gdc_wait first.

@triton.jit
def _gemv_pdl(x_ptr, w_ptr, y_ptr, N, stride_n, K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
              USE_PDL: tl.constexpr, EARLY: tl.constexpr):
    """harness.engine.triton_gemv._gemv with its first K tile of weights loaded before the wait."""
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()  # the next kernel may start once every program got here
        if not EARLY:
            tl.extra.cuda.gdc_wait()
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    n_ok = offs_n < N
    rows = offs_n[:, None].to(tl.int64) * stride_n
    offs_k = tl.arange(0, BK)
    k_ok = offs_k < K
    w = tl.load(w_ptr + rows + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0, eviction_policy="evict_first")
    if USE_PDL:
        if EARLY:
            tl.extra.cuda.gdc_wait()  # the previous kernel wrote x: complete and visible after this
    xv = tl.load(x_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
    acc = tl.sum(w.to(tl.float32) * xv[None, :], axis=1)
    for k0 in tl.static_range(BK, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        k_ok = offs_k < K
        xv = tl.load(x_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rows + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0, eviction_policy="evict_first")
        acc += tl.sum(w.to(tl.float32) * xv[None, :], axis=1)
    tl.store(y_ptr + offs_n, acc.to(y_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _route_pdl(logit_ptr, k_ptr, v_ptr, i_ptr, E: tl.constexpr, BE: tl.constexpr, KMAX: tl.constexpr, RENORM: tl.constexpr,
               USE_PDL: tl.constexpr):
    """harness.engine.triton_moe._route after a wait (it reads nothing but the logits)."""
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()  # one program: the up kernel's programs may queue behind it
        tl.extra.cuda.gdc_wait()
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BE)
    ok = offs < E
    z = tl.load(logit_ptr + row * E + offs, mask=ok, other=float("-inf")).to(tl.float32)
    ez = tl.where(ok, tl.exp(z - tl.max(z, 0)), 0.0)
    left = tl.where(ok, ez / tl.sum(ez, 0), -1.0)
    k = tl.load(k_ptr)
    slots = tl.arange(0, KMAX)
    vals = tl.zeros([KMAX], dtype=tl.float32)
    idxs = tl.zeros([KMAX], dtype=tl.int32)
    for j in tl.static_range(KMAX):
        m = tl.max(left, 0)
        ix = tl.min(tl.where(left == m, offs, BE), 0)
        vals = tl.where(slots == j, tl.where(j < k, m, 0.0), vals)
        idxs = tl.where(slots == j, ix, idxs)
        left = tl.where(offs == ix, -1.0, left)
    if RENORM:
        vals = vals / tl.sum(vals, 0)
    tl.store(v_ptr + row * KMAX + slots, vals.to(v_ptr.dtype.element_ty))
    tl.store(i_ptr + row * KMAX + slots, idxs.to(tl.int64))


@triton.jit
def _pair_up_pdl(x_ptr, w_ptr, idx_ptr, k_ptr, h_ptr, H: tl.constexpr, INTER: tl.constexpr, KMAX: tl.constexpr, BN: tl.constexpr,
                 BK: tl.constexpr, USE_PDL: tl.constexpr):
    """harness.engine.triton_moe._pair_up after a wait: its weights are the expert the routing kernel
    (just before) picked, so nothing can be loaded early. It lets the down kernel launch only after
    its wait, which makes the routing kernel's output complete before any down program starts."""
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    p = tl.program_id(0)
    nb = tl.program_id(1)
    active = (p % KMAX) < tl.load(k_ptr)
    t = p // KMAX
    e = tl.load(idx_ptr + p).to(tl.int64)
    offs_n = nb * BN + tl.arange(0, BN)
    n_ok = (offs_n < INTER) & active
    acc_g = tl.zeros([BN], dtype=tl.float32)
    acc_u = tl.zeros([BN], dtype=tl.float32)
    wbase = w_ptr + e * (2 * INTER * H)
    if active:
        for k0 in range(0, H, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_ok = offs_k < H
            xv = tl.load(x_ptr + t * H + offs_k, mask=k_ok & active, other=0.0).to(tl.float32)
            m = n_ok[:, None] & k_ok[None, :]
            wg = tl.load(wbase + offs_n[:, None] * H + offs_k[None, :], mask=m, other=0.0, eviction_policy="evict_first").to(tl.float32)
            wu = tl.load(wbase + (offs_n[:, None] + INTER) * H + offs_k[None, :], mask=m, other=0.0, eviction_policy="evict_first").to(tl.float32)
            acc_g += tl.sum(wg * xv[None, :], axis=1)
            acc_u += tl.sum(wu * xv[None, :], axis=1)
    hv = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
    tl.store(h_ptr + p * INTER + offs_n, hv.to(h_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _pair_down_pdl(h_ptr, w_ptr, idx_ptr, wt_ptr, k_ptr, part_ptr, y_ptr, cnt_ptr, H: tl.constexpr, INTER: tl.constexpr,
                   KMAX: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, USE_PDL: tl.constexpr, EARLY: tl.constexpr):
    """harness.engine.triton_moe._pair_down with its first K tile of weights loaded before the wait.
    The expert index is the routing kernel's (two launches back): complete before this kernel's
    programs start (see :func:`_pair_up_pdl`), read past L1. Every program waits, skipped or not."""
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()
        if not EARLY:
            tl.extra.cuda.gdc_wait()
    p = tl.program_id(0)
    nb = tl.program_id(1)
    k = tl.load(k_ptr)  # top_k: set by the host, written by no kernel of the step
    t = p // KMAX
    active = p % KMAX < k
    e = tl.load(idx_ptr + p, cache_modifier=".cg").to(tl.int64)
    offs_n = nb * BN + tl.arange(0, BN)
    n_in = offs_n < H
    wbase = w_ptr + e * (H * INTER)
    offs_k = tl.arange(0, BK)
    k_ok = offs_k < INTER
    w = tl.load(wbase + offs_n[:, None] * INTER + offs_k[None, :], mask=(n_in & active)[:, None] & k_ok[None, :], other=0.0,
                eviction_policy="evict_first")
    if USE_PDL:
        if EARLY:
            tl.extra.cuda.gdc_wait()  # h (the up kernel's) and the routing weights are ready after this
    if active:
        hv = tl.load(h_ptr + p * INTER + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        acc = tl.sum(w.to(tl.float32) * hv[None, :], axis=1)
        for k0 in range(BK, INTER, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_ok = offs_k < INTER
            hv = tl.load(h_ptr + p * INTER + offs_k, mask=k_ok, other=0.0).to(tl.float32)
            w = tl.load(wbase + offs_n[:, None] * INTER + offs_k[None, :], mask=n_in[:, None] & k_ok[None, :], other=0.0,
                        eviction_policy="evict_first")
            acc += tl.sum(w.to(tl.float32) * hv[None, :], axis=1)
        tl.store(part_ptr + p * H + offs_n, acc * tl.load(wt_ptr + p).to(tl.float32), mask=n_in)
        if last_to_arrive(cnt_ptr + t * tl.num_programs(1) + nb, k):
            total = tl.zeros([BN], dtype=tl.float32)
            for s in tl.static_range(KMAX):
                total += tl.load(part_ptr + (t * KMAX + s) * H + offs_n, mask=n_in & (s < k), other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + t * H + offs_n, total, mask=n_in)


@triton.jit
def _add_norm(r_ptr, y_ptr, w_ptr, r_out_ptr, h_ptr, eps, H: tl.constexpr, BH: tl.constexpr, USE_PDL: tl.constexpr,
              EARLY: tl.constexpr):
    """``r_out = r + y`` (float32) and ``h = rms_norm(r_out) * w`` in the activation dtype: the
    residual stream between blocks (every variant runs this kernel; only the PDL ones with PDL)."""
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()
        if not EARLY:
            tl.extra.cuda.gdc_wait()
    offs = tl.arange(0, BH)
    ok = offs < H
    w = tl.load(w_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    if USE_PDL:
        if EARLY:
            tl.extra.cuda.gdc_wait()
    r = tl.load(r_ptr + offs, mask=ok, other=0.0).to(tl.float32) + tl.load(y_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(r_out_ptr + offs, r, mask=ok)
    inv = 1.0 / tl.sqrt(tl.sum(r * r, 0) / H + eps)
    tl.store(h_ptr + offs, (r * inv * w).to(h_ptr.dtype.element_ty), mask=ok)


# -- the chain --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shapes:
    hidden: int = 2048
    qkv: int = 6144  # q, k and v rows: 16 heads and 16 KV heads of 128
    experts: int = 64
    inter: int = 1024
    top_k: int = 8
    vocab: int = 50304
    layers: int = 16


MOLMOE = Shapes()


@dataclass(frozen=True)
class Variant:
    name: str
    engine: bool  # the engine's kernels (else this file's copies)
    use_pdl: bool = False  # gdc_* instructions in the copies
    early: bool = True  # weights loaded before gdc_wait
    launch_pdl: bool = False  # launched with the PDL attribute
    graph: bool = True


VARIANTS = (Variant("engine", True), Variant("pdl", False, True, True, True),
            Variant("pdl, wait first", False, True, False, True), Variant("pdl kernels, plain launch", False, True, True, False),
            Variant("engine", True, graph=False), Variant("pdl", False, True, True, True, graph=False))


@dataclass
class Chain:
    """Weights of every layer, the step's buffers (one set per layer: nothing is overwritten within
    a step), and the tiles."""

    s: Shapes
    dtype: torch.dtype
    w: dict
    buf: dict
    kt: torch.Tensor
    cnt: torch.Tensor
    gemv_bk: int | None = None  # None: the engine's config_for
    pair: tm.Config = tm.DEFAULT
    eps: float = 1e-5
    meta: dict = field(default_factory=dict)


def make_chain(s: Shapes, device, dtype=torch.bfloat16, seed=0, gemv_bk=None, pair=tm.DEFAULT, expert_gain=4.0) -> Chain:
    """Random weights at ``s`` (std 1/sqrt(fan-in); the down projection ``expert_gain`` times that, so
    the experts are a visible part of the residual) and the step's buffers."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape, std):
        out = torch.empty(shape, dtype=dtype, device=device)
        step = max(1, (1 << 24) // out[0].numel())
        for i in range(0, shape[0], step):  # a few rows at a time: no float32 copy of a whole expert bank
            rows = out[i:i + step]
            rows.copy_(torch.randn(rows.shape, generator=g, device=device) * std)
        return out

    h, L, E, inter, kmax = s.hidden, s.layers, s.experts, s.inter, s.top_k
    w = dict(ln=[1.0 + 0.1 * torch.randn(h, generator=g, device=device).to(dtype) for _ in range(L + 1)],
             wqkv=[rnd(s.qkv, h, std=h ** -0.5) for _ in range(L)], wo=[rnd(h, h, std=h ** -0.5) for _ in range(L)],
             wr=[rnd(E, h, std=h ** -0.5) for _ in range(L)], w13=[rnd(E, 2 * inter, h, std=h ** -0.5) for _ in range(L)],
             w2=[rnd(E, h, inter, std=expert_gain * inter ** -0.5) for _ in range(L)],
             lm_head=rnd(s.vocab, h, std=h ** -0.5))
    f32 = torch.float32
    mk = lambda n, shape, dt=dtype: [torch.zeros(shape, dtype=dt, device=device) for _ in range(n)]  # noqa: E731
    buf = dict(r=[torch.randn(h, generator=g, device=device)] + mk(L + 1, h, f32), hn=mk(L + 1, h), qkv=mk(L, s.qkv),
               o=mk(L, h), lg=mk(L, E), topv=mk(L, kmax), topi=mk(L, kmax, torch.int64), hup=mk(L, (kmax, inter)),
               part=mk(L, (kmax, h), f32), y=[torch.zeros(h, dtype=f32, device=device)] + mk(L, h, f32),
               out=torch.zeros(s.vocab, dtype=dtype, device=device))
    tiles = triton.cdiv(h, pair.pair_bn)
    return Chain(s, dtype, w, buf, torch.tensor([kmax], dtype=torch.int32, device=device), counters(device, tiles), gemv_bk, pair)


def _gemv(c: Chain, v: Variant, x, w, y, k):
    n = w.shape[0]
    bn, bk, warps = tg.config_for(n, k)
    bk = min(c.gemv_bk or bk, triton.next_power_of_2(k))
    grid = (triton.cdiv(n, bn),)
    if v.engine:
        tg._gemv[grid](x, w, y, n, w.stride(0), K=k, BN=bn, BK=bk, num_warps=warps)
    else:
        _gemv_pdl[grid](x, w, y, n, w.stride(0), K=k, BN=bn, BK=bk, USE_PDL=v.use_pdl, EARLY=v.early, num_warps=warps,
                        launch_pdl=v.launch_pdl)


def step(c: Chain, v: Variant) -> torch.Tensor:
    """One decode step's chain (114 launches at 16 layers); the logits are ``c.buf["out"]``."""
    s, b, w = c.s, c.buf, c.w
    h, kmax, cfg = s.hidden, s.top_k, c.pair
    pdl = dict(launch_pdl=v.launch_pdl) if not v.engine else {}
    bh = triton.next_power_of_2(h)

    def norm(i):
        _add_norm[(1,)](b["r"][i], b["y"][i], w["ln"][i], b["r"][i + 1], b["hn"][i], c.eps, H=h, BH=bh, USE_PDL=v.use_pdl,
                        EARLY=v.early, num_warps=8, **pdl)

    for i in range(s.layers):
        norm(i)
        _gemv(c, v, b["hn"][i], w["wqkv"][i], b["qkv"][i], h)
        _gemv(c, v, b["qkv"][i], w["wo"][i], b["o"][i], h)  # the q part stands in for the attention output
        _gemv(c, v, b["o"][i], w["wr"][i], b["lg"][i], h)
        route = dict(E=s.experts, BE=triton.next_power_of_2(s.experts), KMAX=kmax, RENORM=False, num_warps=1)
        up_grid, down_grid = (kmax, triton.cdiv(s.inter, cfg.pair_bn)), (kmax, triton.cdiv(h, cfg.pair_bn))
        up = dict(KMAX=kmax, BN=cfg.pair_bn, BK=cfg.pair_bk, num_warps=cfg.pair_warps)
        if v.engine:
            tm._route[(1,)](b["lg"][i], c.kt, b["topv"][i], b["topi"][i], **route)
            tm._pair_up[up_grid](b["o"][i], w["w13"][i], b["topi"][i], c.kt, b["hup"][i], h, s.inter, **up)
            tm._pair_down[down_grid](b["hup"][i], w["w2"][i], b["topi"][i], b["topv"][i], c.kt, b["part"][i], b["y"][i + 1], c.cnt,
                                     h, s.inter, **up)
        else:
            _route_pdl[(1,)](b["lg"][i], c.kt, b["topv"][i], b["topi"][i], USE_PDL=v.use_pdl, **route, **pdl)
            _pair_up_pdl[up_grid](b["o"][i], w["w13"][i], b["topi"][i], c.kt, b["hup"][i], h, s.inter, USE_PDL=v.use_pdl, **up, **pdl)
            _pair_down_pdl[down_grid](b["hup"][i], w["w2"][i], b["topi"][i], b["topv"][i], c.kt, b["part"][i], b["y"][i + 1], c.cnt,
                                      h, s.inter, USE_PDL=v.use_pdl, EARLY=v.early, **up, **pdl)
    norm(s.layers)
    _gemv(c, v, b["hn"][s.layers], w["lm_head"], b["out"], h)
    return b["out"]


def poison(c: Chain) -> None:
    """Every buffer a kernel of the step writes: NaN (expert indices: 0, a valid but wrong expert),
    so that a kernel that reads a buffer before its producer finished gives a wrong result."""
    for name, v in c.buf.items():
        for i, t in enumerate(v if isinstance(v, list) else [v]):
            if name in ("r", "y") and i == 0:
                continue  # the step's inputs: the first residual and the zero "expert output" before block 0
            t.fill_(0 if name == "topi" else float("nan"))


def reference(c: Chain) -> torch.Tensor:
    """The step in float32 torch from the same weights and input: float32 math, each intermediate
    rounded to the dtype its kernel stores, and the expert indices the checked run chose (read from
    its buffers; near-equal logits may pick differently in another rounding), ``c.kt`` of them."""
    s, b, w, dt = c.s, c.buf, c.w, c.dtype
    q = lambda t: t.to(dt).float()  # noqa: E731
    h, inter = s.hidden, s.inter

    def norm(r, i):
        return q(r * torch.rsqrt(r.pow(2).mean() + c.eps) * w["ln"][i].float())

    r, y = b["r"][0].float(), b["y"][0].float()
    for i in range(s.layers):
        r = r + y
        hn = norm(r, i)
        qkv = q(w["wqkv"][i].float() @ hn)
        o = q(w["wo"][i].float() @ qkv[:h])
        p = torch.softmax(q(w["wr"][i].float() @ o), 0)
        idx = b["topi"][i].tolist()[:int(c.kt[0])]  # slots >= top_k: weight 0, skipped by the kernels
        y = torch.zeros(h, device=r.device)
        for e in idx:
            gu = w["w13"][i][e].float() @ o
            g, u = gu[:inter], gu[inter:]
            hv = q(g / (1.0 + torch.exp(-g)) * u)
            y = y + (w["w2"][i][e].float() @ hv) * q(p[e])
    r = r + y
    return q(w["lm_head"].float() @ norm(r, s.layers))


def rel_err(out, ref) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def check(c: Chain, run) -> tuple[float, torch.Tensor, list]:
    """(relative error against :func:`reference`, logits, expert indices per layer) of one ``run()``
    after :func:`poison`."""
    poison(c)
    run()
    if c.buf["out"].is_cuda:
        torch.cuda.synchronize()
    out = c.buf["out"].clone()
    return rel_err(out, reference(c)), out, [t.tolist() for t in c.buf["topi"]]


def step_bytes(s: Shapes, dtype_bytes=2) -> int:
    """Weight bytes one step reads: per layer its norm, q/k/v, output and router weights and the
    ``top_k`` experts it picks (distinct); then the last norm and the LM head."""
    h = s.hidden
    layer = h + s.qkv * h + h * h + s.experts * h + s.top_k * 3 * h * s.inter
    return dtype_bytes * (s.layers * layer + h + s.vocab * h)


# -- CUDA: capture, edges, timing -------------------------------------------------------------------

def programmatic_edges(graph) -> tuple[int, int] | None:
    """(programmatic edges, all edges) of a captured graph, from libcuda's cuGraphGetEdges_v2 (CUDA
    12.3+); None where the graph or the call is not available."""
    import ctypes

    try:
        handle = ctypes.c_void_p(graph.raw_cuda_graph())
        fn = ctypes.CDLL("libcuda.so.1").cuGraphGetEdges_v2
    except Exception:  # noqa: BLE001 - an older torch or driver: no answer
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
    n = ctypes.c_size_t(0)
    if fn(handle, None, None, None, ctypes.byref(n)) != 0:
        n = ctypes.c_size_t(16384)  # the count query refused: ask with room to spare
    cap = n.value
    frm, to = (ctypes.c_void_p * cap)(), (ctypes.c_void_p * cap)()
    data = (ctypes.c_uint8 * (8 * cap))()  # CUgraphEdgeData: from_port, to_port, type, reserved[5]
    if fn(handle, frm, to, data, ctypes.byref(n)) != 0:
        return None
    return sum(data[8 * j + 2] == 1 for j in range(n.value)), n.value  # CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC


def capture(fn):
    """(graph, programmatic edges) of ``fn`` after two warm-up calls on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    try:
        g = torch.cuda.CUDAGraph(keep_graph=True)
    except TypeError:
        g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    edges = programmatic_edges(g)
    if hasattr(g, "instantiate"):
        try:
            g.instantiate()
        except RuntimeError:
            pass  # instantiated by capture_end already (keep_graph False)
    return g, edges


def measure(c: Chain, v: Variant, reps: int, floor_us: dict, engine_out) -> dict:
    from _common import cuda_median_ms

    row = {"variant": v.name, "launch": "graph" if v.graph else "eager", "pdl_attribute": v.launch_pdl}
    try:
        if v.graph:
            g, edges = capture(lambda: step(c, v))
            row["programmatic_edges"], row["edges"] = edges if edges else (None, None)
            run = g.replay
        else:
            run = lambda: step(c, v)  # noqa: E731
            for _ in range(2):
                run()
        row["rel_err"], out, idx = check(c, run)
        row["routing"] = idx
        if engine_out is not None:
            row["max_abs_diff_vs_engine"] = float((out.float() - engine_out.float()).abs().max())
        row["us"] = round(cuda_median_ms(run, reps, warm=5) * 1e3, 1)
        row["x_floor"] = round(row["us"] / floor_us["nominal"], 3)
        row["x_copy_floor"] = round(row["us"] / floor_us["copy"], 3)
        row["out"] = out
    except Exception as exc:  # noqa: BLE001 - recorded; the other variants still run
        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer replays (a smoke run)")
    ap.add_argument("--reps", type=int, default=None, help="timed replays per variant (default 300; --quick 50)")
    ap.add_argument("--bandwidth", type=float, default=4.25, help="TB/s of the nominal floor (issue 32: 4.25, an H200)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("pdl_decode.py needs a CUDA device (torch sees none): nothing measured")
        return 0
    from _common import copy_bandwidth, write_report

    t0 = time.time()
    reps = args.reps or (50 if args.quick else 300)
    cap = torch.cuda.get_device_capability()
    bw = copy_bandwidth()
    s = MOLMOE
    c = make_chain(s, "cuda")
    nbytes = step_bytes(s)
    floor_us = {"nominal": nbytes / (args.bandwidth * 1e12) * 1e6, "copy": nbytes / bw * 1e6}
    rows, engine_out = [], None
    for v in VARIANTS:
        if v.use_pdl and cap[0] < 9:
            rows.append({"variant": v.name, "launch": "graph" if v.graph else "eager", "error": f"PDL needs sm_90+, this is sm_{cap[0]}{cap[1]}"})
            continue
        row = measure(c, v, reps if v.graph else max(10, reps // 5), floor_us, engine_out)
        if v.engine and v.graph and "out" in row:
            engine_out = row["out"]
        row.pop("out", None)
        rows.append(row)
        print({k: x for k, x in row.items() if k != "routing"}, flush=True)
    ref_routing = next((r["routing"] for r in rows if "routing" in r), None)
    for r in rows:
        if "routing" in r:
            r["same_experts_as_first"] = sum(a == b for a, b in zip(r.pop("routing"), ref_routing))
    graph_pdl = [r for r in rows if r["launch"] == "graph" and r.get("pdl_attribute")]
    captured = [r for r in graph_pdl if "error" not in r]
    eager_ok = any(r["launch"] == "eager" and r.get("pdl_attribute") and "error" not in r for r in rows)
    if graph_pdl and not captured:
        what = "could not be captured in a CUDA graph" if eager_ok else "failed, in a CUDA graph and eagerly,"
        note = (f"PDL launches {what} here ({graph_pdl[0].get('error', '?')[:160]}): "
                + ("the PDL variants are timed with eager launches only." if eager_ok else "nothing of PDL measured."))
    elif any(r.get("programmatic_edges") == 0 for r in captured):
        note = ("The PDL launches were captured, but the graph has no programmatic edges: the capture made them full "
                "dependencies (no overlap inside the graph).")
    elif captured and all(r.get("programmatic_edges") is None for r in captured):
        note = "The PDL launches were captured in a CUDA graph (its edge types could not be read here)."
    else:
        note = "The PDL launches were captured in a CUDA graph with programmatic edges." if captured else "No PDL variant ran."
    print(note)
    env = {"device": torch.cuda.get_device_name(0), "capability": f"sm_{cap[0]}{cap[1]}", "torch": torch.__version__,
           "cuda": torch.version.cuda, "triton": triton.__version__, "copy_bandwidth_TBps": round(bw / 1e12, 3),
           "nominal_bandwidth_TBps": args.bandwidth, "step_bytes": nbytes, "floor_us": round(floor_us["nominal"], 1),
           "copy_floor_us": round(floor_us["copy"], 1), "launches_per_step": 7 * s.layers + 2, "reps": reps,
           "total_s": round(time.time() - t0, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    base = next((r["us"] for r in rows if r["variant"] == "engine" and r["launch"] == "graph" and "us" in r), None)
    md = [f"# PDL for the batch-1 decode kernels, MolmoE-1B shapes ({env['device']}, bf16, torch {env['torch']}, "
          f"CUDA {env['cuda']}, triton {env['triton']})", "",
          f"One decode step's weight streaming: {s.layers} blocks on their own weights (norm, q/k/v, output, router GEMVs, "
          f"routing, pairwise experts at top_k {s.top_k}), then the LM head: {env['launches_per_step']} launches, each "
          f"reading the previous one's output. Floor = {nbytes / 1e9:.3f} GB / {args.bandwidth} TB/s = "
          f"{env['floor_us']} us (copy floor at the measured {env['copy_bandwidth_TBps']} TB/s: {env['copy_floor_us']} us). "
          f"Median of {reps} replays (eager: {max(10, reps // 5)} steps). Rel. err: logits against the float32 "
          "reference after every intermediate buffer was set to NaN.", "", note, "",
          "| variant | launch | us/step | vs engine graph | x floor | x copy floor | rel. err | max abs diff vs engine | programmatic edges |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['variant']} | {r['launch']} | failed: {r['error'][:120]} | | | | | | |")
            continue
        edges = "" if r.get("edges") is None else f"{r['programmatic_edges']} of {r['edges']}"
        vs = f"{r['us'] / base:.3f}" if base else ""
        diff = r.get("max_abs_diff_vs_engine")
        md.append(f"| {r['variant']} | {r['launch']} | {r['us']} | {vs} | {r['x_floor']} | {r['x_copy_floor']} | "
                  f"{r['rel_err']:.1e} | {'' if diff is None else f'{diff:.1e}'} | {edges} |")
    md += ["", "Every row, with the experts each layer picked: pdl_decode.json."]
    write_report(args.out, "pdl_decode", {"env": env, "note": note, "rows": rows}, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
