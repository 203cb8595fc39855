"""Click options shared by the commands that load a model and run tasks (``harness run``,
``harness sweep``): one definition, in one help order, with per-command help text where the
meaning differs slightly (e.g. ``--limit`` is per task in a sweep)."""

from __future__ import annotations

import click

DTYPES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16")
EXPERTS_IMPLS = ("eager", "grouped_mm", "batched_mm")
ENGINES = ("auto", "fast", "eager")

# (parameter name, option declarations, click.option keyword arguments incl. the default help)
_SHARED = (
    ("model", ("--model", "-m"), dict(default="reference", show_default=True,
                                      help="reference | hf:<id-or-path> | molmoe:<id-or-path> | random:molmoe-1b")),
    ("data", ("--data",), dict(default="bundled", show_default=True, help="bundled | hub | PATH (parquet/jsonl/folder).")),
    ("limit", ("--limit",), dict(type=click.IntRange(min=1), help="Evaluate a seeded subset of this many samples.")),
    ("batch_size", ("--batch-size", "-b"), dict(type=click.IntRange(min=1), default=1, show_default=True,
                                                help="1 = latency mode (per-sample latency); larger batches report latency per batch.")),
    ("check_batch1", ("--check-batch1",), dict(type=click.IntRange(min=0), default=None,
                                              help="In a batched run, measure this many samples again alone (batch 1) as "
                                                   "evidence for estimated_batch1, shared out over the run directories "
                                                   "(default: 64 on CUDA when --batch-size > 1, else 0).")),
    ("host_overlap", ("--host-overlap",), dict(type=click.Choice(("auto", "on", "off")), default="auto", show_default=True,
                                               help="Prepare the next batch and record the last one on a worker thread "
                                                    "while the device runs (auto: on CUDA only; docs/latency.md).")),
    ("importance", ("--importance",), dict(type=str, help="Block importance JSON (which blocks survive when num_blocks < N).")),
    ("estimator", ("--estimator",), dict(help="builtin (default), none, a fit .json, or module:attr[@checkpoint].")),
    ("output", None, None),  # each command's own --output goes here
    ("device", ("--device",), dict(default="auto", show_default=True, help="auto (cuda if available), cpu, cuda[:N].")),
    ("dtype", ("--dtype",), dict(type=click.Choice(DTYPES), default="auto", show_default=True,
                                 help="auto = bfloat16 on GPU, float32 on CPU.")),
    ("seed", ("--seed",), dict(type=int, default=0, show_default=True,
                               help="Seed of policies and the bootstrap (the --limit subset has its own --subset-seed).")),
    ("subset_seed", ("--subset-seed",), dict(type=int, default=0, show_default=True,
                                             help="Seed of the --limit subset: the same samples whatever --seed is.")),
    ("style", ("--style",), dict(help="Prompt style of the task (see `harness tasks`).")),
    ("max_new_tokens", ("--max-new-tokens",), dict(type=click.IntRange(min=1), help="Override the task's output length limit.")),
    ("max_failed", ("--max-failed",), dict(type=click.FloatRange(0, 1), default=None,
                                           help="Exit 1 when more than this share of a run's samples fail (default: only when all fail).")),
    ("include_path", ("--include-path",), dict(multiple=True, help="Folder of plugin modules (tasks, metrics) to import.")),
    ("engine", ("--engine",), dict(type=click.Choice(ENGINES), default="auto", show_default=True,
                                   help="auto = fast on CUDA (compiled block step, CUDA graphs, every knob "
                                        "configuration without recompiling), eager on CPU; eager = the model's own forward.")),
    ("experts_impl", ("--experts-impl",), dict(type=click.Choice(EXPERTS_IMPLS), default=None,
                                               help="transformers experts implementation (default grouped_mm).")),
    ("model_config", ("--model-config",), dict(help="Harness settings of the model (tiers, prompt template): a TOML file or a name in configs/models, e.g. molmoe-1b-molmo-eval (Molmo's evaluation resolution); recorded in the model name.")),
    ("trust_remote_code", ("--trust-remote-code",), dict(is_flag=True, help="Allow molmoe: checkpoints to run their own Python files (model, config and processor classes) in this process; only for checkpoints you trust.")),
    ("dist_timeout", ("--dist-timeout",), dict(type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
                                               help="Under torchrun: minutes a rank waits for a message from another (a plan, a merge) before the job fails.")),
)


def model_run_options(*, output, **help_text):
    """Decorator adding the shared options (model, data, limit, batch size, importance, estimator,
    batch-1 check, ``output`` -- the command's own ``--output`` option decorator --, device, dtype, seed, subset seed, style,
    max new tokens, max failed share, include path, engine, experts implementation, model config, trust remote code, torchrun timeout). ``help_text`` replaces the help
    of an option by parameter name, e.g. ``limit="... per task."``."""
    unknown = set(help_text) - {name for name, _, _ in _SHARED}
    if unknown:
        raise TypeError(f"model_run_options: no shared option(s) {', '.join(sorted(unknown))}")

    def decorate(f):
        for name, decls, kwargs in reversed(_SHARED):
            if decls is None:
                f = output(f)
            else:
                f = click.option(*decls, **{**kwargs, "help": help_text.get(name, kwargs["help"])})(f)
        return f

    return decorate
