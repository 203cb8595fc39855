"""Train the bundled reference MoE VLM on the synthetic training splits of all eight tasks.

Seeded and self-contained (torch, transformers, tokenizers, PIL, numpy and this repo only), so it
runs on a bare GPU box with ``PYTHONPATH=.``::

    python -m tools.train_reference --device cuda --time-budget 330 --output OUT/reference
    python -m tools.train_reference --device cpu --steps 3 --batch 4 --corpus-rows 20 --output /tmp/ref  # smoke

Knob-aware training, so reduced configurations degrade gracefully instead of collapsing: every
optimizer step samples one configuration, applied exactly as the harness applies knobs (skipped
blocks removed from the executed layer list, ``mlp.gate.top_k`` set on every kept block after
block 0): with probability ``--p-full`` the full ``16,8``; else ``num_blocks`` uniform in 12..16
(the prefix ``0..num_blocks-1``, which is what the harness runs without an importance file) and
``top_k`` uniform in 2..8. The tier (64/128/192 px) is drawn per micro-batch. The loss is on the
answer tokens (and EOS) only, plus OLMoE's load-balancing loss on the router logits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from tools import reference_model as rm
from tools.train_data import TASKS, StreamingBatches, load_examples, parse_weights

# -- training ----------------------------------------------------------------------------------
def sample_knobs(rng: random.Random, p_full: float, min_blocks: int, min_top_k: int) -> tuple[int, int]:
    if rng.random() < p_full:
        return rm.N_BLOCKS, rm.DEFAULT_TOP_K
    return rng.randint(min_blocks, rm.N_BLOCKS), rng.randint(min_top_k, rm.DEFAULT_TOP_K)


def router_balance_loss(router_logits: list[torch.Tensor], top_k: int, mask: torch.Tensor) -> torch.Tensor:
    """Switch-style load balancing over the kept blocks (OLMoE's auxiliary loss)."""
    from transformers.models.olmoe.modeling_olmoe import load_balancing_loss_func

    return load_balancing_loss_func(tuple(router_logits), rm.N_EXPERTS, top_k, mask)


def router_spread_loss(router_logits: list[torch.Tensor], top_k: int, mask: torch.Tensor) -> torch.Tensor:
    """Negative mean entropy of each real token's renormalised top-``top_k`` router weights.

    Added with a positive coefficient it spreads every token over its ``top_k`` experts instead of
    one or two dominant ones, so the experts share the work and dropping experts (a smaller
    ``top_k`` at evaluation) costs accuracy."""
    keep = mask.reshape(-1).bool()
    spread = []
    for g in router_logits:
        w = g.float().softmax(-1).topk(top_k, dim=-1).values
        w = w / w.sum(-1, keepdim=True)
        ent = -(w * w.clamp_min(1e-9).log()).sum(-1)
        spread.append(ent[keep].mean())
    return -torch.stack(spread).mean()


class MasterWeights:
    """Parameters in the model's dtype (bf16 on a GPU, so OLMoE's grouped_mm runs its native
    kernel), an fp32 master copy that the optimizer updates; fp32 models use their own params."""

    def __init__(self, model):
        self.model = model
        self.params = list(model.parameters())  # tied embeddings appear once
        self.separate = any(p.dtype != torch.float32 for p in self.params)
        self.masters = [p.detach().float().clone().requires_grad_(True) for p in self.params] if self.separate else self.params
        self.names = {id(p): n for n, p in model.named_parameters()}

    def groups(self, wd: float):
        decay, no_decay = [], []
        for p, m in zip(self.params, self.masters):
            n = self.names[id(p)]
            (decay if p.ndim >= 2 and "embed" not in n else no_decay).append(m)
        return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]

    def grads_to_masters(self) -> None:
        if self.separate:
            for p, m in zip(self.params, self.masters):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None

    @torch.no_grad()
    def masters_to_model(self) -> None:
        if self.separate:
            torch._foreach_copy_(self.params, [m.to(p.dtype) for p, m in zip(self.params, self.masters)])

    @torch.no_grad()
    def fp32_copy(self):
        import copy

        clone = copy.deepcopy(self.model).float()
        for p, m in zip(clone.parameters(), self.masters):
            p.copy_(m)
        return clone


def pick_mode(model, batch, device, precisions=("fp32", "bf16"), impls=("grouped_mm", "batched_mm", "eager")) -> tuple[str, str]:
    """The fastest (parameter dtype, experts implementation) that runs forward+backward here."""
    best, best_t = None, float("inf")
    for prec in precisions:
        model.to(torch.bfloat16 if prec == "bf16" else torch.float32)
        found = False
        for impl in impls:
            if found or (impl == "eager" and best is not None):
                continue  # only fall back to slower implementations when the faster one fails
            model.config.text_config._experts_implementation = impl
            try:
                for _ in range(3):
                    t0 = time.perf_counter()
                    loss = step_loss(model, batch, device, list(range(rm.N_BLOCKS)), rm.DEFAULT_TOP_K, 0.01)
                    loss.backward()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    dt = time.perf_counter() - t0
                ok = bool(torch.isfinite(loss))
            except Exception as exc:  # an implementation this torch/device lacks
                print(f"{prec}/{impl}: unusable ({type(exc).__name__}: {str(exc)[:120]})", flush=True)
                continue
            finally:
                model.zero_grad(set_to_none=True)
            print(f"{prec}/{impl}: {dt * 1000:.1f} ms/step, loss {loss.item():.3f}", flush=True)
            found = ok
            if ok and dt < best_t:
                best, best_t = (prec, impl), dt
    if best is None:
        raise RuntimeError("no experts implementation works on this device")
    model.to(torch.bfloat16 if best[0] == "bf16" else torch.float32)
    model.config.text_config._experts_implementation = best[1]
    return best


def set_norm_topk_prob(model, on: bool) -> None:
    """Whether each block's top-k router weights are renormalised to sum to 1 (in the config that
    ``save_pretrained`` writes, and in every router already built)."""
    model.config.text_config.norm_topk_prob = on
    for layer in rm.language_layers(model):
        layer.mlp.gate.norm_topk_prob = on


def set_context(model, tokenizer, positions: int) -> None:
    """The model's context (``max_position_embeddings``, and the tokenizer's ``model_max_length``)
    as ``save_pretrained`` writes them. The positions are RoPE (``rope_type`` default: its
    frequencies do not depend on this number), so it is a limit only and changes no output."""
    model.config.text_config.max_position_embeddings = int(positions)
    tokenizer.model_max_length = int(positions)


@torch.no_grad()
def reinit_experts(model, generator: torch.Generator | None = None, width: int | None = None) -> int:
    """Draw fresh router and expert weights for every block the ``top_k`` knob applies to (1..15),
    from the model's own init distribution; everything else keeps its trained weights. Returns the
    number of re-drawn parameters. Used to retrain the MoE layers at full ``top_k`` from a model
    whose experts had become redundant under training with small ``top_k``.

    ``width`` (a new expert MLP size) rebuilds the experts of all 16 blocks, block 0 included,
    since a saved config has one ``intermediate_size``."""
    cfg = model.config.text_config
    layers = rm.language_layers(model)
    redraw = layers[1:]
    if width and width != cfg.intermediate_size:
        cfg.intermediate_size = width
        for layer in layers:
            old = next(layer.mlp.experts.parameters())
            layer.mlp.experts = type(layer.mlp.experts)(cfg).to(device=old.device, dtype=old.dtype)
        redraw = layers
    std = cfg.initializer_range
    n = 0
    for layer in redraw:
        for p in layer.mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.dtype) * std)
            n += p.numel()
    return n


def step_loss(model, batch, device, active: list[int], top_k: int, aux_coef: float, spread_coef: float = 0.0) -> torch.Tensor:
    pixels, ids, labels, mask = (t.to(device, non_blocking=True) for t in batch)
    gate_logits: list[torch.Tensor] = []
    hooks = []
    if aux_coef > 0 or spread_coef > 0:
        for i in active:
            hooks.append(rm.language_layers(model)[i].mlp.gate.register_forward_hook(lambda m, a, out: gate_logits.append(out[0])))
    try:
        with rm.knobs_applied(model, active, top_k):
            autocast = device.type == "cuda" and next(model.parameters()).dtype == torch.float32
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                embeds = rm.embed_inputs(model, ids, pixels)
                hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
                sel = labels[:, 1:] != -100
                logits = model.lm_head(hidden[:, :-1][sel]).float()
            loss = torch.nn.functional.cross_entropy(logits, labels[:, 1:][sel])
            if aux_coef > 0 and gate_logits:
                loss = loss + aux_coef * router_balance_loss([g.float() for g in gate_logits], top_k, mask)
            if spread_coef > 0 and gate_logits:
                loss = loss + spread_coef * router_spread_loss(gate_logits, top_k, mask)
    finally:
        for h in hooks:
            h.remove()
    return loss


def train(args) -> dict:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device(args.device)
    t_start = time.time()

    if args.init_from:  # continue training a saved model (keeps its tokenizer and weights)
        from transformers import AutoTokenizer, LlavaForConditionalGeneration

        tokenizer = AutoTokenizer.from_pretrained(args.init_from)
        model = LlavaForConditionalGeneration.from_pretrained(args.init_from, dtype=torch.float32).to(device)
        set_context(model, tokenizer, rm.Shape().max_positions)  # older weights were saved with 512
        counts = {}
        print(f"continuing from {args.init_from}", flush=True)
    else:
        examples = load_examples(args.corpus_rows, args.seed + 1, args.workers, standin=args.standin)
        counts = {t: sum(e.task == t for e in examples) for t in TASKS}
        print(f"tokenizer corpus: {len(examples)} examples {counts} in {time.time() - t_start:.1f}s", flush=True)
        corpus = [e.prompt for e in examples] + [" " + e.target for e in examples]
        tokenizer = rm.build_tokenizer(corpus, vocab_size=args.vocab)
        del examples
        model = rm.build_model(tokenizer).to(device)
    if args.reinit_experts:
        n = reinit_experts(model, torch.Generator().manual_seed(args.seed), args.expert_width or None)
        print(f"re-drew {n / 1e6:.2f}M router and expert weights (expert MLP {model.config.text_config.intermediate_size})", flush=True)
    if args.norm_topk_prob != "keep":  # switch the routers' renormalisation of the top-k weights
        set_norm_topk_prob(model, args.norm_topk_prob == "true")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}", flush=True)

    sizes = [rm.tier_sizes()[t] for t in ("low", "medium", "high")]
    stream = StreamingBatches(tokenizer, args.batch, sizes, args.seed, standin=args.standin, reuse=args.reuse,
                              weights=parse_weights(args.task_weights))
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=args.loader_workers, pin_memory=device.type == "cuda",
        persistent_workers=args.loader_workers > 0, prefetch_factor=6 if args.loader_workers > 0 else None,
    )
    it = iter(loader)
    if device.type == "cuda":
        precision, impl = pick_mode(model, next(it), device, precisions=("fp32", "bf16") if args.precision == "auto" else (args.precision,))
    else:
        precision, impl = args.precision if args.precision != "auto" else "fp32", args.cpu_experts
        model.to(torch.bfloat16 if precision == "bf16" else torch.float32)
        model.config.text_config._experts_implementation = impl
    print(f"training with {precision} parameters, experts implementation {impl}", flush=True)

    weights = MasterWeights(model)
    opt = torch.optim.AdamW(weights.groups(args.wd), lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    total = {"steps": args.steps or 10**9}

    def lr_at(step: int) -> float:
        """Warm-up, a long constant phase, then cosine decay over the last ``--decay`` fraction."""
        if step < args.warmup:
            return (step + 1) / args.warmup
        start = int(total["steps"] * (1 - args.decay))
        if step < start:
            return 1.0
        frac = min(1.0, (step - start) / max(1, total["steps"] - start))
        return 0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(args.seed)
    model.train()
    t_train = time.time()
    history = []
    step = 0
    ema = None
    waited = 0.0  # seconds spent waiting for the data loader (is the GPU starved?)
    while step < total["steps"]:
        t_wait = time.perf_counter()
        batch = next(it)
        waited += time.perf_counter() - t_wait
        nb, k = sample_knobs(rng, args.p_full, args.min_blocks, args.min_top_k)
        loss = step_loss(model, batch, device, list(range(nb)), k, args.aux, args.router_spread)
        loss.backward()
        weights.grads_to_masters()
        torch.nn.utils.clip_grad_norm_(weights.masters, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        weights.masters_to_model()
        sched.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if args.time_budget and step in (50, 300):  # re-estimated once past the warm-up steps' overhead
            per = (time.time() - t_train) / step
            total["steps"] = max(step + 1, int(args.time_budget / per))
            print(f"{per * 1000:.1f} ms/step -> {total['steps']} steps in {args.time_budget}s", flush=True)
        if step % args.log_every == 0 or step == total["steps"]:
            history.append({"step": step, "loss_ema": round(ema, 4), "lr": sched.get_last_lr()[0], "t": round(time.time() - t_train, 1),
                            "data_wait_s": round(waited, 1)})
            print(json.dumps(history[-1]), flush=True)
        if args.checkpoint_every and step % args.checkpoint_every == 0 and step < total["steps"]:
            save_model(weights.fp32_copy(), tokenizer, max(sizes), Path(args.output))
            print(f"checkpoint at step {step}", flush=True)
    train_s = time.time() - t_train

    out = Path(args.output)
    save_model(weights.fp32_copy(), tokenizer, max(sizes), out)
    info = {
        "steps": step, "batch": args.batch, "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t_start, 1),
        "examples_seen": step * args.batch, "tokenizer_corpus_per_task": counts, "params": n_params, "experts_implementation": impl, "precision": precision,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "seed": args.seed,
        "args": vars(args), "loss_history": history,
    }
    (out / "training.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    print(f"saved to {out} after {step} steps ({train_s:.0f}s training)", flush=True)
    return info


def save_model(model, tokenizer, image_size: int, out: Path) -> None:
    """fp16 safetensors + config, tokenizer and image processor, all ``from_pretrained``-loadable."""
    import copy

    out.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to("cpu").to(torch.float16)
    half.save_pretrained(out)
    tokenizer.save_pretrained(out)
    rm.image_processor(image_size).save_pretrained(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="model directory to write")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps (0: as many as --time-budget allows)")
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds of training; sets the step count after 50 steps")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="parameter dtype (bf16 keeps fp32 master weights)")
    p.add_argument("--decay", type=float, default=0.35, help="fraction of steps in the final cosine decay")
    p.add_argument("--reuse", type=int, default=2, help="times each generated example is used")
    p.add_argument("--corpus-rows", type=int, default=1500, help="rows per task for training the tokenizer")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="data generation processes")
    p.add_argument("--loader-workers", type=int, default=min(14, max(0, (os.cpu_count() or 2) - 2)), help="processes generating training batches")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--aux", type=float, default=0.01, help="router load-balancing loss weight")
    p.add_argument("--router-spread", type=float, default=0.0, help="weight of the router-entropy term that spreads each token over its top_k experts (0: off)")
    p.add_argument("--norm-topk-prob", choices=("keep", "true", "false"), default="keep",
                   help="renormalise the top-k router weights (OLMoE and MolmoE-1B: false); keep: as the model has it")
    p.add_argument("--p-full", type=float, default=0.5, help="probability of training a step at 16,8")
    p.add_argument("--task-weights", default="", help="override shares of the training stream, e.g. 'textvqa=2,coco-caption=0.5' (defaults: TASK_WEIGHTS)")
    p.add_argument("--min-blocks", type=int, default=12)
    p.add_argument("--min-top-k", type=int, default=2)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--cpu-experts", default="grouped_mm")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=1000, help="save the model every N steps (0: only at the end)")
    p.add_argument("--eval-rows", type=int, default=0, help="after training, score N eval-split rows per task at a few configs")
    p.add_argument("--eval-configs", default="", help="';'-separated configs for --eval-rows (default: the report's main configs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default="", help="continue training this saved model directory (e.g. harness/zoo/reference)")
    p.add_argument("--reinit-experts", action="store_true", help="with --init-from: fresh router and expert weights in blocks 1..15")
    p.add_argument("--expert-width", type=int, default=0, help="with --reinit-experts: a new expert MLP size for all blocks (0: keep)")
    p.add_argument("--standin", action="store_true", help="use the built-in stand-in data (smoke tests only)")
    args = p.parse_args(argv)
    if args.expert_width and not args.reinit_experts:
        p.error("--expert-width needs --reinit-experts (new experts must be drawn at the new size)")
    return args


if __name__ == "__main__":
    _args = parse_args()
    train(_args)
    if _args.eval_rows:
        from tools.evaluate_reference import MAIN_CONFIGS, quick_eval

        quick_eval(_args.output, _args.device, _args.eval_rows, configs=tuple(_args.eval_configs.split(";")) if _args.eval_configs else MAIN_CONFIGS)
