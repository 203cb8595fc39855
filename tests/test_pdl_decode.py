"""benchmarks/pdl_decode.py without a GPU: the decode-step chain of every variant (the engine's
kernels and the PDL copies, PDL instructions off) in Triton's CPU interpreter on tiny shapes
against the float32 torch reference; the PDL copies compiled for sm_90 with PDL on (the wait
after the early weight loads, before the vector's); and the script's one-line exit off CUDA."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fixtures.scripts import BENCHMARKS

SCRIPT = BENCHMARKS / "pdl_decode.py"
ROOT = BENCHMARKS.parent

_LOAD = """
import dataclasses, importlib.util, sys
import torch
spec = importlib.util.spec_from_file_location("pdl_decode", sys.argv[1])
m = importlib.util.module_from_spec(spec)
sys.modules["pdl_decode"] = m  # dataclasses look their module up
spec.loader.exec_module(m)
from harness.engine import triton_moe as tm
"""

_INTERPRETED = _LOAD + """
torch.manual_seed(0)
s = m.Shapes(hidden=32, qkv=96, experts=8, inter=16, top_k=4, vocab=40, layers=2)
graphed = [v for v in m.VARIANTS if v.graph]
assert [v.name for v in graphed] == ["engine", "pdl", "pdl, wait first", "pdl kernels, plain launch"]
multi = dict(gemv_bk=16, pair=tm.Config(pair_bn=4, pair_bk=8, pair_warps=4))  # several K tiles: the loops after the wait
# (dtype, tiles, top_k at run time, variants): float32 is checked tightly; the interpreter rounds float32 to
# bfloat16 toward zero (a GPU to nearest), so bfloat16 against the reference only loosely, against the engine exactly
for dt, tiles, k, variants, tol in ((torch.float32, multi, 4, graphed, 1e-5), (torch.float32, {}, 2, graphed[:2], 1e-5),
                                    (torch.bfloat16, multi, 4, graphed[:2], 5e-2)):
    c = m.make_chain(s, "cpu", dt, **tiles)
    c.kt.fill_(k)
    first = None
    for v in variants:
        v = dataclasses.replace(v, use_pdl=False)  # no inline assembly in the interpreter; launch_pdl is dropped
        err, out, idx = m.check(c, lambda: m.step(c, v))
        assert err < tol and bool(torch.isfinite(out.float()).all()), (dt, k, v.name, err)
        if first is None:
            first = (out, idx)
        else:  # the same tiles and accumulation order as the engine's kernels: the same numbers
            assert torch.equal(out, first[0]) and idx == first[1], (dt, k, v.name)
        assert all(len(set(row[:k])) == k for row in idx)  # distinct experts in the used slots
    assert int(c.cnt.abs().sum()) == 0  # the down kernel's last-to-arrive counters are back at zero
# the check sees a kernel that did not write its output: a step that launches nothing leaves NaN
err, _, _ = m.check(c, lambda: None)
assert not err < 1.0, err
# the reference depends on the chosen experts: other indices, another answer
c = m.make_chain(s, "cpu", torch.float32)
m.check(c, lambda: m.step(c, graphed[0]))
good = m.reference(c)
c.buf["topi"][1][0] = (c.buf["topi"][1][0] + 1) % s.experts
assert m.rel_err(m.reference(c), good) > 1e-3
# the floor of issue 32: MolmoE-1B's step reads 2.36 GB, 0.554 ms at 4.25 TB/s
assert abs(m.step_bytes(m.MOLMOE) / 4.25e12 - 0.5548e-3) < 1e-6, m.step_bytes(m.MOLMOE)
print("ok")
"""

_COMPILED = _LOAD + """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

def ptx(fn, sig, consts, warps=4):
    ints = [i for i, (name, t) in enumerate(sig.items()) if t.startswith("*") or name.startswith("stride")]
    src = ASTSource(fn=fn, signature={**sig, **{n: "constexpr" for n in consts}}, constexprs=consts,
                    attrs={(i,): [["tt.divisibility", 16]] for i in ints})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "launch_pdl": True})
    assert k.metadata.launch_pdl
    return k.asm["ptx"].splitlines()

def first(lines, text):
    return next(i for i, line in enumerate(lines) if text in line)

gemv = dict(x_ptr="*bf16", w_ptr="*bf16", y_ptr="*bf16", N="i32", stride_n="i32")
down = dict(h_ptr="*bf16", w_ptr="*bf16", idx_ptr="*i64", wt_ptr="*bf16", k_ptr="*i32", part_ptr="*fp32", y_ptr="*fp32", cnt_ptr="*i32")
norm = dict(r_ptr="*fp32", y_ptr="*fp32", w_ptr="*bf16", r_out_ptr="*fp32", h_ptr="*bf16", eps="fp32")
cfg = tm.DEFAULT
pair = dict(H=2048, INTER=1024, KMAX=8, BN=cfg.pair_bn, BK=cfg.pair_bk, USE_PDL=True)
early = ((ptx(m._gemv_pdl, gemv, dict(K=2048, BN=2, BK=2048, USE_PDL=True, EARLY=True)), "evict_first"),
         (ptx(m._pair_down_pdl, down, dict(pair, EARLY=True)), "evict_first"),
         (ptx(m._add_norm, norm, dict(H=2048, BH=2048, USE_PDL=True, EARLY=True), 8), "ld.global"))
for lines, weight in early:  # dependents launched first, the weights loaded (evict-first), then the wait, then the vector
    wait = first(lines, "griddepcontrol.wait")
    assert first(lines, "griddepcontrol.launch_dependents") < wait
    assert any(i < wait and "ld.global" in line and weight in line for i, line in enumerate(lines))
    assert any(i > wait and "ld.global" in line and "evict_first" not in line for i, line in enumerate(lines))
late = ptx(m._gemv_pdl, gemv, dict(K=2048, BN=2, BK=2048, USE_PDL=True, EARLY=False))
assert first(late, "griddepcontrol.wait") < first(late, "ld.global")
up = ptx(m._pair_up_pdl, dict(x_ptr="*bf16", w_ptr="*bf16", idx_ptr="*i64", k_ptr="*i32", h_ptr="*bf16"), pair)
assert first(up, "griddepcontrol.wait") < first(up, "griddepcontrol.launch_dependents") < first(up, "ld.global")
route = ptx(m._route_pdl, dict(logit_ptr="*bf16", k_ptr="*i32", v_ptr="*bf16", i_ptr="*i64"), dict(E=64, BE=64, KMAX=8, RENORM=False, USE_PDL=True), 1)
assert first(route, "griddepcontrol.wait") < first(route, "ld.global")
plain = ptx(m._gemv_pdl, gemv, dict(K=2048, BN=2, BK=2048, USE_PDL=False, EARLY=True))
assert not any("griddepcontrol" in line for line in plain)
print("ok")
"""


def _run(code, env, *args, timeout=600):
    proc = subprocess.run([sys.executable, "-c", code, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_every_variant_matches_the_reference_in_the_interpreter():
    """The chain of each variant in Triton's interpreter (a fresh process: Triton reads
    TRITON_INTERPRET when first imported): the float32 reference within 1e-5, the PDL copies'
    logits and expert choices equal to the engine kernels', at top_k 4 and 2 of 4 slots; and the
    check itself fails a step that writes nothing or a reference with other experts."""
    pytest.importorskip("triton")
    _run(_INTERPRETED, {**os.environ, "TRITON_INTERPRET": "1"})


@pytest.mark.slow
def test_the_pdl_kernels_compile_for_hopper_with_the_wait_after_the_weight_loads():
    """No GPU needed: Triton compiles for sm_90 on the CPU. In the PTX of the PDL copies, the
    weights are loaded before ``griddepcontrol.wait`` and the vector after it; the wait-first
    variant, the routing and up kernels wait before any load; without USE_PDL nothing of it."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    _run(_COMPILED, env)


def test_off_cuda_the_script_says_so_in_one_line_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == ["pdl_decode.py needs a CUDA device (torch sees none): nothing measured"]
