""":class:`FastStepModel`: the fast engine behind the harness decode loop's ``StepModel`` protocol.

- Weights are the loaded transformers model's own tensors (:mod:`harness.engine.weights`); the
  knob switch of the backend decides which blocks run and each block's ``top_k``, read at every
  call (nothing to rebuild when knobs change).
- One compiled :func:`harness.engine.block.attn_block` serves every block and configuration:
  weights, caches and ``top_k`` are inputs; activation sizes (batch, prompt length, cache width)
  are dynamic, so compilations are bounded by shape *kinds* (batch 1 or more x decode or
  prefill), never by knob values.
- On CUDA each decode step is replayed from a CUDA graph per (active blocks, batch bucket, cache
  width), captured on first use from the already compiled code (capture compiles nothing);
  ``top_k`` lives in device tensors the expert kernels read, so one graph serves every ``top_k``.
  The graph holds the whole step of the decode loop (:meth:`FastStepModel.greedy_step`): the next
  mask column, the forward pass, the greedy choice and the loop's bookkeeping
  (:class:`harness.decode.LoopState`), so a step is one graph launch.
- Prompts are padded at their end to a multiple of :data:`PROMPT_BUCKET` tokens (causal attention:
  the padding sees the prompt, the prompt never sees the padding; the logits are read at the last
  real token; the padding's cache columns are masked and overwritten by the decode steps), and on
  CUDA the prompt pass is replayed from a CUDA graph per (active blocks, rows, padded length, cache
  width): no per-prompt host work of a few hundred launches and sixteen compiled calls, so a
  prefill costs its GPU time and follows the prompt length instead of the host's jitter. The
  vision encoder and projector replay from a graph per input shape (:class:`_GraphedVision`).
- Decode steps on CUDA: split-KV Triton attention (:mod:`harness.engine.triton_attention`;
  ``HARNESS_ENGINE_ATTN=sdpa``: PyTorch's) and, at batch 1, Triton GEMVs for the q/k/v, output,
  router and LM-head products (:mod:`harness.engine.triton_gemv`; ``HARNESS_ENGINE_GEMV=torch``:
  cuBLAS), each measured faster on an H200 (benchmarks/results/decode_kernels.md). Up to 8 tokens
  the down projection's kernel sums the expert slots (:mod:`harness.engine.triton_moe`).
- On the CPU the same code runs without graphs (compile backend ``eager`` by default: dynamo
  traces, nothing is code-generated) and the ``loop`` expert kernel.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.decode import LoopState, choose_greedy
from harness.engine.compile_limits import configure_compile
from harness.engine.block import add_expert_parts, allowed_mask, attention_bias, attn_block, rms_norm, rope_cos_sin
from harness.engine.moe import KERNELS, ROUTERS, parts_format, run_moe
from harness.errors import HarnessError
from harness.latency.measure import batch_bucket

ATTENTION = ("triton", "sdpa")  # decode attention: the Triton split-KV kernels, PyTorch's
GEMV = ("triton", "torch")  # batch-1 decode projections: the Triton GEMV, F.linear (cuBLAS)
PROMPT_BUCKET = 64  # prompt passes are padded to a multiple of this many tokens (CUDA graphs)


def _dynamic(t: torch.Tensor, *dims: int) -> torch.Tensor:
    """Batch, length and width are dynamic sizes of the compiled step (weights stay static)."""
    for d in dims:
        torch._dynamo.maybe_mark_dynamic(t, d)
    return t


def _checked(var: str, value: str, options) -> str:
    """``value`` of a kernel override, or the one-line error that names the variable and the choices."""
    if value not in options:
        raise HarnessError(f"unknown kernel {var}={value!r}; use one of {', '.join(options)} or unset it")
    return value


def decode_attention_kernel(asked: str | None, cuda: bool, head_dim: int) -> str:
    """The decode attention a run uses: off CUDA PyTorch's; on CUDA ``asked`` (HARNESS_ENGINE_ATTN)
    or by default the Triton kernels, which need a power-of-two head size (other models keep
    PyTorch's by default; asking for Triton's is then a one-line error)."""
    pow2 = head_dim > 0 and head_dim & (head_dim - 1) == 0
    if not cuda:
        return "sdpa"
    kernel = _checked("HARNESS_ENGINE_ATTN", asked or ("triton" if pow2 else "sdpa"), ATTENTION)
    if kernel == "triton" and not pow2:
        raise HarnessError(f"the Triton decode attention needs a power-of-two head size and this model's is {head_dim}; "
                           "use HARNESS_ENGINE_ATTN=sdpa or unset it")
    return kernel


@dataclass
class EngineCache:
    """Static KV cache of every block (one per (batch rows, width), reused; views into the storage every cache shares)."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    rows: int
    width: int
    length: int = 0  # columns written so far
    graph_inputs: dict = field(default_factory=dict)


class _Graphs:
    """CUDA graphs of the decode step, keyed by (active blocks, rows, width), one memory pool."""

    def __init__(self):
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict = {}

    def get(self, key, body):
        entry = self.graphs.get(key)
        if entry is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # compilation, kernel loading and autotuning happen here, not in capture
                    body()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool=self.pool):
                    out = body()
            except Exception:
                # a capture that fails (out of memory inside it) can leave its pool marked as recording,
                # which fails every later capture into it: the graphs still to come get a new pool
                self.pool = torch.cuda.graph_pool_handle()
                raise
            entry = self.graphs[key] = (graph, out)
        return entry


class _GraphedVision:
    """The vision encoder and projector of a model replayed from CUDA graphs, one per input shape
    (crops per tier and batch), in the same timed regions: their latency is their GPU time, not
    the host's launch of a few hundred kernels. A shape whose capture fails runs eagerly (with one
    warning), so a vision tower that cannot be captured still runs."""

    def __init__(self, vision, graphs: _Graphs):
        self.vision, self.graphs = vision, graphs
        self.inputs: dict = {}
        self.failed: set = set()

    def _replay(self, name: str, fn, *xs: torch.Tensor) -> torch.Tensor:
        key = ("vision", name) + tuple((tuple(x.shape), x.dtype) for x in xs)
        if key in self.failed:
            return fn(*xs)
        static = self.inputs.get(key)
        if static is None:
            static = self.inputs[key] = [torch.empty_like(x) for x in xs]
        for buf, x in zip(static, xs):
            buf.copy_(x)
        try:
            graph, out = self.graphs.get(key, lambda: fn(*static))
        except Exception as exc:  # noqa: BLE001 - any capture failure: run this shape eagerly
            from harness.errors import warn

            self.failed.add(key)
            warn(f"the {name} of this model could not be captured in a CUDA graph ({type(exc).__name__}: "
                 f"{str(exc)[:200]}); it runs eagerly")
            return fn(*xs)
        graph.replay()
        return out  # read before the next replay of this shape (the prompt pass consumes it)

    def features(self, *inputs):
        return self._replay("vision encoder", self.vision.features, *inputs)

    def project(self, *inputs):
        return self._replay("projector", self.vision.project, *inputs)


class FastStepModel:
    """The fast engine for one loaded model (``hf_step``: :class:`harness.backends.hf.HFStepModel`)."""

    name = "fast"
    serves_every_top_k = True  # top_k is a device tensor the kernels read: nothing is captured or compiled per value

    def __init__(self, hf_step, switch, compile_backend: str | None = "auto", moe_kernel: str | None = None,
                 cuda_graphs: bool | None = None, prompt_bucket: int | None = None, attention: str | None = None):
        self.hf = hf_step
        self.switch = switch
        self.w = hf_step.engine_weights(switch.all_blocks)  # the family's adapter (harness.engine.weights)
        self.spec = self.w.spec
        self.device, self.dtype = hf_step.device, hf_step.dtype
        cuda = self.device.type == "cuda"
        # expert kernels by measurement (benchmarks/results/moe_kernels.md): decode steps / prompts
        self.moe_kernel = moe_kernel or os.environ.get("HARNESS_ENGINE_MOE") or ("triton" if cuda else "loop")
        self.prefill_kernel = moe_kernel or os.environ.get("HARNESS_ENGINE_PREFILL_MOE") or ("triton" if cuda else "loop")
        _checked("HARNESS_ENGINE_MOE", self.moe_kernel, KERNELS)
        _checked("HARNESS_ENGINE_PREFILL_MOE", self.prefill_kernel, KERNELS)
        # decode steps' router product and routing: two kernels, or one (HARNESS_ENGINE_ROUTER=fused; with the
        # Triton expert kernels on CUDA; benchmarks/decode_kernels.py, router part)
        self.router = _checked("HARNESS_ENGINE_ROUTER", os.environ.get("HARNESS_ENGINE_ROUTER") or "split", ROUTERS) if cuda else "split"
        if self.router == "fused" and self.moe_kernel != "triton":
            raise HarnessError("HARNESS_ENGINE_ROUTER=fused needs the Triton expert kernels; unset it or use HARNESS_ENGINE_MOE=triton")
        self.cuda_graphs = cuda if cuda_graphs is None else bool(cuda_graphs and cuda)
        if self.cuda_graphs and self.moe_kernel == "loop":
            raise HarnessError("the 'loop' expert kernel synchronises with the host and cannot be captured in a CUDA graph; "
                               "use HARNESS_ENGINE_MOE=triton or grouped_mm on CUDA")
        # prompt passes: padded to a bucket and graph-replayed on CUDA unless HARNESS_ENGINE_PREFILL_GRAPHS=0
        # (then un-padded and launched op by op, as before)
        graphs_off = os.environ.get("HARNESS_ENGINE_PREFILL_GRAPHS", "") == "0"
        self.prefill_graphs = self.cuda_graphs and not graphs_off and self.prefill_kernel != "loop"
        if prompt_bucket is None:
            prompt_bucket = PROMPT_BUCKET if self.prefill_graphs else 0
        self.prompt_bucket = int(prompt_bucket)
        if compile_backend == "auto":
            compile_backend = "inductor" if cuda else "eager"
        self.compile_backend = compile_backend
        spec = self.spec

        # decode attention on CUDA: the split-KV Triton kernels (HARNESS_ENGINE_ATTN=sdpa: PyTorch's, the default
        # before; on an H200 its single-query kernel gives 16 programs to a whole cache); off CUDA PyTorch's
        self.attention = decode_attention_kernel(attention or os.environ.get("HARNESS_ENGINE_ATTN"), cuda, spec.head_dim)
        decode_attention, max_width, self._counters = None, 0, None
        if self.attention == "triton":
            from harness.engine.triton_arrive import counters as _counters
            from harness.engine.triton_attention import MAX_WIDTH as max_width, decode_attention

            self._counters = _counters

        # batch-1 products (q/k/v, output, router, LM head): the Triton GEMV unless HARNESS_ENGINE_GEMV=torch
        self.gemv = _checked("HARNESS_ENGINE_GEMV", os.environ.get("HARNESS_ENGINE_GEMV") or "triton", GEMV) if cuda else "torch"
        gemv = None
        if self.gemv == "triton":
            from harness.engine.triton_gemv import gemv
        self._gemv = gemv

        dtype = self.dtype

        def attn(*args, counters=None):
            return attn_block(spec, *args, decode_attention=decode_attention, attention_max_width=max_width, gemv=gemv,
                              counters=counters)

        def prologue(positions, mask, cols, inv_freq):  # RoPE tables and the attention bias of a pass
            cos, sin = rope_cos_sin(positions, inv_freq, spec.rope_scaling, torch.float32 if spec.rope_fp32 else dtype)
            return cos, sin, attention_bias(allowed_mask(mask, cols), dtype)

        def head(x, parts, last, norm, lm_head):  # the last block's experts, final norm, LM head
            x = add_expert_parts(x, parts)
            x = x[:, -1] if last is None else x.index_select(1, last)[:, 0]  # the last real token
            linear = gemv if gemv is not None and x.shape[0] == 1 else F.linear
            return linear(rms_norm(x, norm, spec.eps), lm_head)

        # the pieces of a pass around the blocks are compiled too: eagerly they are some forty small
        # kernels per decode step (tens of microseconds on a GPU); ``choose`` is the decode loop's
        # bookkeeping (harness.decode.choose_greedy), compiled into the step's graph
        fns = dict(attn=attn, prologue=prologue, head=head, choose=choose_greedy)
        if compile_backend:
            configure_compile(self.attention)  # every shape kind compiled, none left uncompiled
            fns = {k: torch.compile(f, backend=compile_backend, dynamic=None) for k, f in fns.items()}
        self._attn, self._prologue, self._head, self._choose = fns["attn"], fns["prologue"], fns["head"], fns["choose"]
        self._caches: dict = {}
        self._store: dict = {}  # name -> flat device storage shared by every cache: see _shared
        self._graphs = _Graphs() if self.cuda_graphs else None
        # the vision encoder and projector: graph-replayed per input shape on CUDA unless
        # HARNESS_ENGINE_VISION_GRAPHS=0
        vision = getattr(hf_step, "vision", None)
        self.vision_graphs = bool(self.cuda_graphs and vision is not None
                                  and os.environ.get("HARNESS_ENGINE_VISION_GRAPHS", "") != "0")
        self._vision = _GraphedVision(vision, self._graphs) if self.vision_graphs else None
        n = len(self.w.blocks)
        self._kt = torch.full((n, 1), spec.max_top_k, dtype=torch.int32, device=self.device)
        self._kt_host = [spec.max_top_k] * n

    # -- knobs --------------------------------------------------------------------------------
    def _top_k(self) -> list[int]:
        ks = [spec_k if r is None else int(r.top_k) for r, spec_k in zip(self.switch.routers, self._kt_host)]
        for i, k in enumerate(ks):
            if k != self._kt_host[i]:
                self._kt[i].fill_(k)
                self._kt_host[i] = k
        return ks

    # -- StepModel protocol -------------------------------------------------------------------
    def rows_for(self, batch_size: int) -> int:
        return batch_bucket(batch_size) if self.cuda_graphs else int(batch_size)

    def make_cache(self, batch_size, max_len, static=True):
        rows, width = self.rows_for(batch_size), int(max_len)
        cache = self._caches.get((rows, width))
        if cache is None:
            s = self.spec
            shape = (rows, s.kv_heads, width, s.head_dim)
            k, v = self._kv_storage(rows, width)
            view = lambda t: t[: math.prod(shape)].view(shape)  # noqa: E731
            cache = EngineCache([view(t) for t in k], [view(t) for t in v], rows, width)
            self._caches[(rows, width)] = cache
        cache.length = 0
        return cache

    def _shared(self, name: str, n: int, dtype) -> torch.Tensor:
        """Flat device storage of at least ``n`` elements under ``name``, shared by every cache (each
        is a contiguous view at its start): one call at a time uses a cache, so the K/V caches of
        every row count and width, and the prompt pass's input buffers, take the memory of the
        largest instead of adding up (at 32 rows MolmoE-1B's cache takes 4.2 MB a column: the
        caches of a batch-32 quick fit held apart ran an 80 GB card out of memory). A call never
        reads a column it has not written (the mask), so sharing changes no result. A larger ``n``
        allocates new storage; caches (and graphs) made before keep theirs: :meth:`reserve` first
        avoids that."""
        have = self._store.get(name)
        if have is None or have.numel() < n:
            have = self._store[name] = torch.zeros(int(n), dtype=dtype, device=self.device)
        return have

    def _kv_storage(self, rows: int, width: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Flat K and V storage of every block for a cache of ``rows`` x ``width`` (:meth:`_shared`)."""
        s = self.spec
        n = rows * s.kv_heads * width * s.head_dim
        blocks = range(len(self.w.blocks))
        return ([self._shared(f"k{i}", n, self.dtype) for i in blocks], [self._shared(f"v{i}", n, self.dtype) for i in blocks])

    def _prefill_inputs(self, rows: int, width: int) -> dict:
        """The prompt pass's input buffers for a cache of ``rows`` x ``width`` (:meth:`_shared`): every
        prompt graph of every cache reads the same addresses."""
        hid = self.spec.hidden
        cols = self._store.get("cols")
        if cols is None or cols.numel() < width:
            cols = self._store["cols"] = torch.arange(width, device=self.device)
        return dict(emb=self._shared("emb", rows * width * hid, self.dtype), pos=self._shared("pos", rows * width, torch.long),
                    mask=self._shared("mask", rows * width, torch.long), cols=cols[:width],
                    last=self._shared("last", 1, torch.long)[:1])

    def reserve(self, batch_size: int, width: int) -> None:
        """Allocate the shared storage for the largest cache a run will ask for (``batch_size`` rows
        bucketed as :meth:`rows_for`, ``width`` columns) before any cache or graph is made, so that
        no later cache needs new storage while earlier graphs hold the old."""
        rows = self.rows_for(batch_size)
        self._kv_storage(rows, int(width))
        self._prefill_inputs(rows, int(width))

    def padded_length(self, prompt_len: int) -> int:
        """The length a prompt pass runs at (:data:`PROMPT_BUCKET`; the prompt itself without padding)."""
        b = self.prompt_bucket
        return -(-int(prompt_len) // b) * b if b else int(prompt_len)

    def prefill(self, batch, attention_mask, position_ids, cache: EngineCache, timer):
        emb = self.hf.embed_inputs(batch, timer, self._vision)
        with timer.region("lm_prefill"):
            n, t = emb.shape[:2]
            if self.prompt_bucket:
                logits = self._padded_prefill(emb, attention_mask, position_ids, cache)
            else:
                cols = torch.arange(t, device=self.device)
                logits = self._forward(emb, attention_mask, position_ids, cols, cache, rows=n)
        cache.length = t
        return logits

    def step(self, tokens, attention_mask, position_ids, cache: EngineCache):
        """One decode step without a graph: the decode loop calls :meth:`greedy_step` instead,
        except for a model with more EOS ids than :data:`harness.decode.LoopState.EOS_SLOTS`."""
        n = tokens.shape[0]
        cols = torch.tensor([cache.length], device=self.device)
        out = self._forward(self.hf.embed(tokens), attention_mask, position_ids, cols, cache, rows=n)
        cache.length += 1
        return out

    def loop_state(self, cache: EngineCache) -> LoopState:
        """The decode loop's state buffers for this cache (one set per cache: the graphs of
        :meth:`greedy_step` read and write them in place)."""
        state = cache.graph_inputs.get("loop")
        if state is None:
            state = cache.graph_inputs["loop"] = LoopState(cache.rows, cache.width, cache.width, self.device)
        return state

    def greedy_step(self, state: LoopState, cache: EngineCache) -> None:
        """One decode step with the loop's bookkeeping (:class:`harness.decode.LoopState`): on CUDA
        one graph replay per step, per (active blocks, rows, width)."""
        rows = cache.rows
        self._top_k()

        def body():
            state.open_column()
            logits = self._forward(self.hf.embed(state.tok), state.mask, state.pos, state.col, cache, rows)
            rows_of = (_dynamic(t, 0) for t in (logits, state.finished, state.tok, state.pos))
            self._choose(_dynamic(state.out, 0, 1), *rows_of, state.done, state.col, state.idx, state.eos, state.pad)
            return logits

        if not self.cuda_graphs:
            body()
        else:
            key = ("greedy", tuple(self.switch.active), rows, cache.width)
            if key not in self._graphs.graphs:  # warm-up and capture run the body: the state is put back after
                saved = state.snapshot()
                self._graphs.get(key, body)
                state.restore(saved)
            self._graphs.graphs[key][0].replay()
        cache.length += 1

    # -- the forward pass ---------------------------------------------------------------------
    def _forward(self, x, mask, positions, cols, cache: EngineCache, rows: int, last=None):
        ks = self._top_k()
        s = self.spec
        cos, sin, bias = self._prologue(_dynamic(positions, 0, 1), _dynamic(mask, 0, 1), _dynamic(cols, 0), self.w.inv_freq)
        _dynamic(cos, 0, 2)
        _dynamic(sin, 0, 2)
        _dynamic(bias, 0, 2, 3)
        _dynamic(cols, 0)
        b, t = x.shape[:2]
        kernel = self.moe_kernel if t == 1 else self.prefill_kernel
        # the previous block's expert outputs, summed into x by the next block's compiled step (zeros
        # before the first block, so that every block runs the same compiled code)
        slots, parts_dtype = parts_format(kernel, s.max_top_k, self.dtype, b * t, prompt=t > 1)
        parts = torch.zeros((b * t, slots, s.hidden), dtype=parts_dtype, device=x.device)
        cnt = self._counters(self.device, rows * s.heads) if self._counters else None  # the decode attention's
        router_linear = self._gemv if self._gemv is not None and b * t == 1 else F.linear
        for i in self.switch.active:
            bw = self.w.blocks[i]
            kc, vc = _dynamic(cache.k[i][:rows], 0, 2), _dynamic(cache.v[i][:rows], 0, 2)
            x, h2 = self._attn(_dynamic(x, 0, 1), _dynamic(parts, 0), kc, vc, cos, sin, bias, cols, *bw.attn_inputs(), counters=cnt)
            parts = run_moe(kernel, s, h2, bw.router, ks[i], self._kt[i], bw.w13, bw.w2, parts_dtype, router_linear,
                            fused_router=self.router == "fused" and t == 1)
        return self._head(_dynamic(x, 0, 1), _dynamic(parts, 0), last, self.w.norm, self.w.lm_head)

    def _padded_prefill(self, emb, mask, positions, cache: EngineCache):
        """The prompt pass at :meth:`padded_length`, through input buffers shared by every prompt
        shape of the cache (views at their start); on CUDA replayed from a graph per (active blocks,
        rows, padded length, cache width)."""
        n, t, hid = emb.shape
        length = min(self.padded_length(t), cache.width)
        flat = cache.graph_inputs.get("prefill")
        if flat is None:  # views of the storage every cache shares, sized for its rows x width at least
            flat = cache.graph_inputs["prefill"] = self._prefill_inputs(cache.rows, cache.width)
        # contiguous views at the start of the shared buffers: every graph of this cache reads the same addresses
        bufs = dict(emb=flat["emb"][: n * length * hid].view(n, length, hid), pos=flat["pos"][: n * length].view(n, length),
                    mask=flat["mask"][: n * cache.width].view(n, cache.width), cols=flat["cols"][:length], last=flat["last"])
        # the padding's embeddings and positions are whatever an earlier prompt left (finite, never
        # seen by a real token); its mask columns are zero
        bufs["emb"][:, :t].copy_(emb)
        bufs["pos"][:, :t].copy_(positions)
        m = min(mask.shape[1], cache.width)
        if m < cache.width:
            bufs["mask"][:, m:].zero_()
        bufs["mask"][:, :m].copy_(mask[:, :m])
        bufs["last"].fill_(t - 1)

        def body():
            return self._forward(bufs["emb"], bufs["mask"], bufs["pos"], bufs["cols"], cache, rows=n, last=bufs["last"])

        if not self.prefill_graphs:
            return body()
        self._top_k()
        graph, out = self._graphs.get(("prefill", tuple(self.switch.active), n, length, cache.rows, cache.width), body)
        graph.replay()
        return out.clone()
