"""torch.compile's settings for the fast engine's compiled functions, and what a run says when
torch still runs out of versions of one.

torch keeps one compiled version of a function per shape kind it meets and, past its per-function
limit (8 by default), runs the function uncompiled for every new shape without an error: inside the
engine's CUDA graphs that is one kernel per operation, so the latency measured from then on is not
the engine's. :func:`configure_compile` raises the limit to what the engine's shape kinds need
(:func:`recompile_limit`) and turns a hit into the harness's one-line warning and a note in every
later ``summary.json`` (:func:`limit_note`).
"""

from __future__ import annotations

import logging

from harness.decode import STATIC_BUCKET


def recompile_limit(attention: str) -> int:
    """The versions torch.compile may keep of each of the engine's compiled functions: per row kind
    (one row or several; torch specialises a size of 1) one prompt pass and one decode step per
    specialisation of the decode attention's constants over the cache widths the decode loop makes
    (:func:`harness.engine.triton_attention.specialisations`; one without the Triton attention),
    doubled for guards this count does not see. torch's default, 8, is fewer than a batched run
    meets: the function then runs uncompiled for every shape after the eighth (one kernel per
    operation, captured so into the step's graph) without an error, and which shapes those are
    depends on the order they came in (tests/test_engine_fast.py traces it on the CPU)."""
    decode = 1
    if attention == "triton":
        from harness.engine.triton_attention import specialisations

        decode = specialisations(STATIC_BUCKET, STATIC_BUCKET)
    return 2 * 2 * (decode + 1)


_HITS: list[str] = []  # the functions that hit the limit in this process, in order


class _LimitHits(logging.Filter):
    """Repeats torch's recompile-limit warning as the harness's one line, once per function, and
    keeps the function for :func:`limit_note`: torch prints it once among the compile logs and then
    runs the function uncompiled for every new shape."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("torch._dynamo hit config."):
            head = text.splitlines()
            where = head[1].strip() if len(head) > 1 else "a compiled function"
            if where not in _HITS:
                from harness.errors import warn

                _HITS.append(where)
                warn(f"torch.compile hit its recompile limit ({head[0].split('hit config.')[1]}) for {where.removeprefix('function: ')}: "
                     "the shapes after it run uncompiled, so latencies measured from here on are not the engine's; "
                     "please report it with the run's command")
        return True


_ENGINES = [0]  # engines of this process whose functions are compiled: torch counts their versions together


def configure_compile(attention: str) -> int:
    """torch.compile's settings for one more engine's functions: batch, length and width are
    separate sizes even when equal (no duck shapes), and the per-function recompile limit at least
    :func:`recompile_limit` for each engine configured in this process (never lowered: the versions
    of one function are counted over every engine of the process, whose weights and model facts are
    other guards); returns the limit in force."""
    import torch._dynamo.config as dynamo_config
    import torch.fx.experimental._config as fx_config

    fx_config.use_duck_shape = False
    convert = logging.getLogger("torch._dynamo.convert_frame")
    if not any(isinstance(f, _LimitHits) for f in convert.filters):
        convert.addFilter(_LimitHits())
    _ENGINES[0] += 1
    need = recompile_limit(attention) * _ENGINES[0]
    # the names since torch 2.7; before, cache_size_limit and accumulated_cache_size_limit
    for names, value in ((("recompile_limit", "cache_size_limit"), need),
                         (("accumulated_recompile_limit", "accumulated_cache_size_limit"), 8 * need)):
        name = next((n for n in names if hasattr(dynamo_config, n)), None)
        if name is not None and getattr(dynamo_config, name) < value:
            setattr(dynamo_config, name, value)
    return int(getattr(dynamo_config, "recompile_limit", getattr(dynamo_config, "cache_size_limit", need)))


def limit_note() -> str | None:
    """The note for a run's summary when a compiled function hit torch's recompile limit in this
    process (None when none did)."""
    if not _HITS:
        return None
    names = ", ".join(h.removeprefix("function: ") for h in _HITS)
    return (f"torch.compile hit its recompile limit for {names} in this process: the shapes after it ran uncompiled, "
            "so the latencies measured after it are not the engine's (docs/engine.md, versions of the compiled step)")
