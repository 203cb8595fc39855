"""Expert kernels of the fast engine. Every kernel takes the top-``max_top_k`` routing of each
token and a runtime ``top_k`` and computes only the slots below it (skipped slots load no
weights), so one captured CUDA graph serves every ``top_k`` and the cost still follows it.

- ``loop``: one matmul pair per hit expert, as transformers' eager experts (the CPU path and the
  exactness reference; reads ``top_k`` on the host, so it is never captured in a graph);
- ``grouped_mm``: ``torch._grouped_mm`` over the (token, slot) pairs sorted by expert, skipped
  slots sorted past the last group (CUDA, bf16);
- ``triton``: the engine's Triton kernels (:mod:`harness.engine.triton_moe`): per-pair GEMV for a
  few tokens, expert-grouped tiles for many.

:func:`run_moe` (router product and routing included) returns the expert outputs as *parts*
``[N, S, H]`` (per slot, or one slot already summed) for the next block's compiled step to sum
into the residual stream (:func:`harness.engine.block.add_expert_parts`); the ``moe_*`` functions return the sum ``[N, H]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KERNELS = ("loop", "grouped_mm", "triton")


def moe_loop(x, topv, topi, top_k: int, w13, w2):
    """``x`` [N, H]; ``topv``/``topi`` [N, K]; only slots < ``top_k`` contribute."""
    n_exp = w13.shape[0]
    out = torch.zeros_like(x)
    idx, wts = topi[:, :top_k], topv[:, :top_k]
    hit = torch.zeros(n_exp, dtype=torch.bool, device=x.device)
    hit[idx.reshape(-1)] = True
    for e in hit.nonzero().flatten().tolist():
        tok, slot = torch.where(idx == e)
        g, u = F.linear(x[tok], w13[e]).chunk(2, dim=-1)
        y = F.linear(F.silu(g) * u, w2[e]) * wts[tok, slot, None]
        out.index_add_(0, tok, y.to(out.dtype))
    return out


def sort_pairs(topi, top_k_t, n_exp: int, with_skipped: bool = False):
    """(pair order sorted by expert with skipped slots last, per-expert counts [E], or [E + 1] with
    the skipped slots' count last) -- no host sync."""
    k = topi.shape[1]
    keep = torch.arange(k, device=topi.device)[None, :] < top_k_t
    key = torch.where(keep, topi, torch.full_like(topi, n_exp)).reshape(-1)
    order = torch.argsort(key, stable=True)
    counts = torch.zeros(n_exp + 1, dtype=torch.int32, device=topi.device)
    counts.scatter_add_(0, key, torch.ones_like(key, dtype=torch.int32))
    return order, counts if with_skipped else counts[:n_exp]


def _grouped_mm(a, b, offs):
    fn = getattr(F, "grouped_mm", None) or torch._grouped_mm
    return fn(a, b, offs=offs)


def moe_grouped_mm(x, topv, topi, top_k_t, w13, w2):
    return moe_grouped_mm_parts(x, topv, topi, top_k_t, w13, w2).float().sum(1).to(x.dtype)


def moe_grouped_mm_parts(x, topv, topi, top_k_t, w13, w2):
    """[N, K, H] in ``x``'s dtype, one row per slot (skipped slots are zeros). The routing weight
    scales the down projection's input (the same product, one pass over the smaller tensor); the
    rows go back to (token, slot) order by a plain copy, no atomic adds."""
    n, k = topi.shape
    order, counts = sort_pairs(topi, top_k_t, w13.shape[0])
    offs = torch.cumsum(counts, 0, dtype=torch.int32)
    xs = x[order // k]
    g, u = _grouped_mm(xs, w13.transpose(1, 2), offs).chunk(2, dim=-1)
    wt = topv.reshape(-1)[order].to(x.dtype)[:, None]
    y = _grouped_mm(F.silu(g) * u * wt, w2.transpose(1, 2), offs)
    valid = (torch.arange(order.shape[0], device=x.device) < offs[-1])[:, None]  # rows past the last group: unset
    y = torch.where(valid, y, torch.zeros((), dtype=y.dtype, device=y.device))
    return torch.empty_like(y).index_copy_(0, order, y).view(n, k, -1)


def _weights_dtype(spec, dtype):
    """The dtype of the routing weights the Triton kernels write: float32 for a family that keeps them so."""
    return torch.float32 if spec.weights_in_float else dtype


def route(kernel: str, spec, logits, top_k_t, dtype):
    """Routing weights and expert ids from router logits: the Triton kernel alongside the Triton
    expert kernels, :func:`harness.engine.block.route` (torch) otherwise."""
    if kernel == "triton":
        from harness.engine import triton_moe

        return triton_moe.route(logits, top_k_t, spec.max_top_k, spec.renormalize, _weights_dtype(spec, dtype))
    from harness.engine.block import route as torch_route

    return torch_route(spec, logits, top_k_t, dtype)


def _pairwise(kernel: str, tokens: int) -> bool:
    """Whether ``tokens`` rows take the Triton pairwise kernels (Triton is imported only for them)."""
    if kernel != "triton":
        return False
    from harness.engine import triton_moe

    return tokens <= triton_moe.DEFAULT.pair_max_tokens


def parts_format(kernel: str, max_top_k: int, dtype, tokens: int, prompt: bool) -> tuple[int, torch.dtype]:
    """(S, dtype) of the parts ``[N, S, H]`` that :func:`run_moe` returns for ``kernel`` and
    ``tokens`` rows: one already-summed float32 row for the ``loop`` kernel and the Triton pairwise
    kernels (few tokens: decode steps); otherwise per slot, in float32 for decode steps and in the
    model dtype for prompts, where the parts are large."""
    if kernel == "loop" or _pairwise(kernel, tokens):
        return 1, torch.float32
    if kernel == "triton" and not prompt:
        return max_top_k, torch.float32
    return max_top_k, dtype


ROUTERS = ("split", "fused")  # the router product then the routing kernel; both in one kernel (HARNESS_ENGINE_ROUTER)


def run_moe(kernel: str, spec, x, router, top_k: int, top_k_t, w13, w2, parts_dtype=torch.float32, linear=F.linear,
            fused_router: bool = False):
    """Router product (``linear``: ``F.linear`` or the engine's batch-1 GEMV), routing and expert
    outputs for ``x`` [N, H] (the normalised input of the experts) as parts ``[N, S, H]`` (see the
    module docstring and :func:`parts_format`). ``fused_router``: where the Triton pairwise kernels
    run (a few tokens), the router product and the routing in one kernel
    (:func:`harness.engine.triton_moe.router_route`, the same figures)."""
    if fused_router and _pairwise(kernel, x.shape[0]):
        from harness.engine import triton_moe

        topv, topi = triton_moe.router_route(x, router, top_k_t, spec.max_top_k, spec.renormalize, _weights_dtype(spec, x.dtype))
    else:
        topv, topi = route(kernel, spec, linear(x, router), top_k_t, x.dtype)
    if kernel == "loop":
        return moe_loop(x, topv, topi, top_k, w13, w2)[:, None].float()
    if kernel == "grouped_mm":
        return moe_grouped_mm_parts(x, topv, topi, top_k_t, w13, w2)
    from harness.engine import triton_moe

    if _pairwise(kernel, x.shape[0]):
        return triton_moe.moe_pairwise_parts(x, topv, topi, top_k_t, w13, w2)
    return triton_moe.moe_grouped_parts(x, topv, topi, top_k_t, w13, w2, out_dtype=parts_dtype)
