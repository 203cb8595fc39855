"""``--check-batch1 N``: the evidence beside ``estimated_batch1`` in a batched run.

A controller decides for one request, so each sample line of a batched run carries its estimated
latency alone (``estimated_batch1``). That figure is only as good as the batch-1 fit behind it, so
after the batches N of the run's samples are run again alone, at batch 1, under the usual protocol
(warm-up per engine key, then one timed call each), and the estimates are compared with those
single measurements: ``summary.json`` ``batch1_check`` holds ``n``, ``mape_total``,
``within_10pct``, ``bias`` and the MAPE of each part; ``batch1_check.jsonl`` holds each checked
sample's measurement (with its decode steps and the untimed warm-up calls before it) next to its estimate.

The N samples are chosen by the subset seed and spread over the configurations the run used: the
configurations in order, each one's samples in a seeded hash order, taken round-robin, so the same
seed checks the same samples and every configuration is checked before any is checked twice.
Default: 64 on CUDA for batched runs, 0 (off) otherwise.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from harness.knobs import Knobs

DEFAULT_CUDA = 64
MISS = 0.10  # a check whose total MAPE exceeds this says how to re-make the fit
FILE = "batch1_check.jsonl"


def default_n(device: str, batch_size: int) -> int:
    return DEFAULT_CUDA if str(device).startswith("cuda") and int(batch_size) > 1 else 0


def _order(seed: int, sample_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x1fbatch1-check\x1f{sample_id}".encode("utf-8")).digest()


def pick(lines: Sequence[dict], n: int, seed: int) -> list[dict]:
    """The sample lines to check (see the module docstring); only lines with a prediction and an
    ``estimated_batch1``."""
    by: dict[str, list[dict]] = {}
    for ln in lines:
        if not ln.get("error") and ln.get("config") and ln.get("estimated_batch1"):
            by.setdefault(str(ln["config"]), []).append(ln)
    queues = [sorted(by[c], key=lambda ln: _order(seed, str(ln["id"]))) for c in sorted(by)]
    out: list[dict] = []
    depth = 0
    while len(out) < n and any(depth < len(q) for q in queues):
        out.extend(q[depth] for q in queues if depth < len(q) and len(out) < n)
        depth += 1
    return out


def run_check(runner, record, lines: Sequence[dict], samples: Sequence, n: int, seed: int, max_new: int) -> dict | None:
    """Measure the picked samples alone on ``runner``'s backend; write ``batch1_check.jsonl`` into
    the run directory and return the ``batch1_check`` block (None when n is 0 or nothing qualifies)."""
    from harness.jsonio import atomic_write_text, dumps_line
    from harness.latency.evaluation import error_stats
    from harness.runner import _Item
    from harness.types import GenRequest

    chosen = pick(lines, int(n), int(seed)) if int(n) > 0 else []
    if not chosen:
        return None
    by_id = {str(s.id): (i, s) for i, s in enumerate(samples)}
    rows = []
    style = runner.options.style
    for ln in sorted(chosen, key=lambda x: (x["config"], str(x["id"]))):  # configurations switch as rarely as in the run
        index, sample = by_id[str(ln["id"])]
        knobs = Knobs.parse(ln["config"])
        prompt = runner.task.prompt(sample, style) if style is not None else runner.task.prompt(sample)
        item = _Item(index, sample, request=GenRequest(prompt=prompt, image=sample.image, sample_id=str(sample.id)))
        try:
            runner.apply(knobs)
            runner.prepare_inputs(knobs, [item])
            warmed = runner.warm(knobs, [item], max_new)
            out = runner.backend.generate([item.request], max_new, knobs.tier)[0]
        except Exception as exc:  # a sample that fails alone is reported, not fatal
            rows.append({"id": ln["id"], "config": ln["config"], "error": f"{type(exc).__name__}: {exc}"})
            continue
        t = out.timings
        measured = {"prefill_ms": float(t.prefill_ms), "decode_ms": float(t.decode_ms),
                    "total_ms": float(t.prefill_ms) + float(t.decode_ms),
                    "decode_step_ms": [round(float(x), 4) for x in (t.decode_step_ms or [])]}
        rows.append({"id": ln["id"], "config": ln["config"], "measured": measured, "estimated_batch1": ln["estimated_batch1"],
                     "output_tokens": out.output_tokens, "batch_output_tokens": ln.get("output_tokens"),
                     "same_prediction": runner.task.postprocess(out.text) == ln.get("prediction"), "error": None,
                     # the untimed calls before it (None: its engine key was warm already), total ms each
                     "warmup_ms": None if warmed is None else [round(float(x), 3) for x in warmed.last_ms]})
    atomic_write_text(record.folder / FILE, "".join(dumps_line(r) + "\n" for r in rows))
    ok = [r for r in rows if not r.get("error")]
    block = {"n": len(ok), "n_failed": len(rows) - len(ok), "asked": int(n), "seed": int(seed),
             "configurations": len({r["config"] for r in ok}), "file": FILE,
             "same_prediction": (sum(1 for r in ok if r["same_prediction"]) / len(ok)) if ok else None,
             "against": "single batch-1 measurements of these samples after the run (warm-up per engine key)"}
    for part in ("total", "prefill", "decode"):
        s = error_stats([r["estimated_batch1"][f"{part}_ms"] for r in ok], [r["measured"][f"{part}_ms"] for r in ok])
        if part == "total":
            block.update({"mape_total": s["mape"], "within_10pct": s["within_10pct"], "within_5pct": s["within_5pct"],
                          "bias": s["bias"]})
        else:
            block[f"mape_{part}"] = s["mape"]
    return block


def miss_note(block: dict | None, refit_command: str | None) -> str | None:
    """A note when the check misses by more than 10% (total MAPE), with the command that re-makes the fit."""
    if not block or block.get("mape_total") is None or block["mape_total"] <= MISS:
        return None
    how = f"; re-make the batch-1 fit: {refit_command}" if refit_command else ""
    return (f"batch-1 check: estimated_batch1 misses single batch-1 measurements by {100 * block['mape_total']:.1f}% "
            f"(MAPE over {block['n']} samples, more than {100 * MISS:.0f}%){how}")
