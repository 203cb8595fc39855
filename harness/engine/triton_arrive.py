""""Last to arrive" reductions: a kernel whose programs each write a partial result and whose last
program to finish a group combines the group's partials, so the combine needs no second kernel
(on an H200 a second small kernel costs about 2 us, at every block of every decode step).

Each group has an int32 counter in a persistent buffer (:func:`counters`). A program writes its
partial, then adds one to its group's counter (an atomic with acquire-release semantics, so its
writes are visible to whoever reads the counter after it); the program that sees ``expected - 1``
is the last, reads the partials back (past the non-coherent L1 cache) in a fixed order, so the
result does not depend on which program came last, and resets the counter to zero for the next
launch. Buffers are never freed: CUDA graphs keep their addresses.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BUFFERS: dict = {}


def counters(device, n: int) -> torch.Tensor:
    """At least ``n`` zeroed int32 counters on ``device``, the same buffer for every call that fits
    (a larger request gets a new buffer; the old one stays allocated for graphs that use it)."""
    key = str(torch.device(device))
    have = _BUFFERS.get(key)
    if have is None or have[-1].numel() < n:
        size = max(4096, triton.next_power_of_2(int(n)))
        _BUFFERS.setdefault(key, []).append(torch.zeros(size, dtype=torch.int32, device=device))
    return _BUFFERS[key][-1]


@triton.jit
def last_to_arrive(counter_ptr, expected):
    """True in the program that arrives ``expected``-th at ``counter_ptr`` (which it resets)."""
    seen = tl.atomic_add(counter_ptr, 1, sem="acq_rel")
    last = seen == expected - 1
    if last:
        tl.atomic_xchg(counter_ptr, 0)
    return last
