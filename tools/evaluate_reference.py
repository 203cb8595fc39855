"""Evaluate the reference model on the bundled samples across knob configurations.

Writes ``leaderboard/reference-model.md`` (accuracy per task and config, the ScienceQA
accuracy-latency grid and its Pareto front) and a JSON of every number. Prompts, targets and
metrics come from the tasks and metrics packages; inputs are built by the backend's
:func:`harness.backends.prompt.build_input_ids` and pixels by :mod:`harness.backends.imaging`.

Generation goes through the harness ``hf:`` backend (``harness.backends.load``): its knob
application, its decode loop and its latency measurement (batch size 1 for latency figures; larger
batches for a fast accuracy-only pass, e.g. right after training).

    python -m tools.evaluate_reference --output leaderboard/reference-model.md
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.knobs import Knobs
from tools import reference_model as rm
from tools.train_reference import TASKS

MAIN_CONFIGS = ("16,8,high", "16,8,low", "12,8,high", "16,2,high", "14,6,medium", "12,2,low")


@dataclass
class TaskResult:
    task: str
    knobs: str
    n: int
    scores: dict
    predictions: list[dict] = field(default_factory=list)
    latency_ms: float | None = None  # mean per-sample total (batch 1), when measured


def load_task_samples(name: str, limit: int | None = None):
    from harness.tasks import get_task
    from harness.tasks.data import load_samples

    task = get_task(name)
    data = load_samples(task, "bundled", limit=limit)
    return task, [s for s in data.samples if s.error is None]


class BackendEngine:
    """The harness ``hf:`` backend: the same decode loop and timing as ``harness run``."""

    def __init__(self, spec: str = "reference", device: str = "cpu", batch: int = 1):
        from harness.backends import load

        self.backend = load(spec, device=device, dtype=torch.float32)
        self.batch = batch
        self.last_latency_ms: list[float] = []

    def apply_knobs(self, knobs: Knobs) -> None:
        self.backend.apply_knobs(knobs)

    def generate(self, prompts: list[str], images: list, max_new_tokens: int, tier: str, batch: int | None = None) -> list[str]:
        from harness.types import GenRequest

        batch = batch or self.batch
        texts, self.last_latency_ms = [], []
        reqs = [GenRequest(prompt=p, image=im) for p, im in zip(prompts, images)]
        for s in range(0, len(reqs), batch):
            outs = self.backend.generate(reqs[s : s + batch], max_new_tokens, tier)
            texts.extend(o.text for o in outs)
            if batch == 1:
                self.last_latency_ms.append(outs[0].timings.total_ms)
        return texts


def evaluate_task(engine, task, samples, knobs: Knobs, **gen_kwargs) -> TaskResult:
    from harness.metrics import get_metric

    engine.apply_knobs(knobs)
    prompts = [task.prompt(s) for s in samples]
    texts = engine.generate(prompts, [s.image for s in samples], task.max_new_tokens, knobs.tier, **gen_kwargs)
    preds = [task.postprocess(t) for t in texts]
    items = [task.metric_item(s, p) for s, p in zip(samples, preds)]
    result = get_metric(task.metric).score(items)
    lat = getattr(engine, "last_latency_ms", None)
    return TaskResult(task.name, str(knobs), len(samples), dict(result.aggregate),
                      [{"id": s.id, "prediction": p} for s, p in zip(samples, preds)],
                      sum(lat) / len(lat) if lat else None)


def quick_eval(model_dir, device: str, n_rows: int, configs=MAIN_CONFIGS) -> dict:
    """Exact match of the post-processed answer against ``task.target`` (and the task's own metric
    when the metrics package has it) on the first ``n_rows`` eval-split rows of every task: the
    rows the bundled samples are made of. A quick knob-response check right after training."""
    from harness.tasks import get_task
    from tools.synthetic import generate_rows

    import shutil

    from harness.configs import CONFIG_DIR

    if not Path(model_dir, "harness.toml").is_file():  # the reference model's tiers and prompt template
        shutil.copyfile(CONFIG_DIR / "models" / "reference.toml", Path(model_dir, "harness.toml"))
    engine = BackendEngine(f"hf:{model_dir}", device, batch=128)
    table = {}
    for name in TASKS:
        task = get_task(name)
        samples = [s for i, row in enumerate(generate_rows(name, "eval", n_rows, 0)) for s in task.samples_from_row(row, i)]
        for c in configs:
            knobs = Knobs.parse(c)
            engine.apply_knobs(knobs)
            texts = engine.generate([task.prompt(s) for s in samples], [s.image for s in samples], task.max_new_tokens, knobs.tier)
            preds = [task.postprocess(t) for t in texts]
            em = sum(p.strip().lower() == task.target(s).strip().lower() for p, s in zip(preds, samples)) / len(samples)
            entry = {"em_target": round(em, 3)}
            try:
                r = evaluate_task(engine, task, samples, knobs)
                entry[task.metric] = round(main_score(r, task.metric), 3)
            except Exception as exc:  # metric not available in this checkout
                entry["metric_error"] = f"{type(exc).__name__}: {exc}"[:80]
            table.setdefault(name, {})[c] = entry
            print(f"{name:13s} {c:12s} {entry}", flush=True)
        print(f"  e.g. {samples[0].id}: {preds[0]!r} (target {task.target(samples[0])!r})", flush=True)
    Path(model_dir, "quick_eval.json").write_text(json.dumps(table, indent=1), encoding="utf-8")
    return table


GOLDEN_KNOBS = "14,6,medium"
GOLDEN_ITEMS = {"scienceqa": 3, "vqav2": 3, "tallyqa": 2, "coco-caption": 1}


def write_golden(path: str | Path, spec: str = "reference") -> dict:
    """Predictions of a fixed config on the first bundled items of a few tasks (CPU, fp32), with
    the weights' sha256: the regression test compares a fresh run against this file."""
    import hashlib

    from harness.tasks import get_task
    from harness.tasks.data import load_samples

    from harness.types import GenRequest

    from harness.backends import load

    torch.set_num_threads(1)  # the regression test runs single-threaded too
    backend = load(spec, device="cpu", dtype=torch.float32)
    knobs = Knobs.parse(GOLDEN_KNOBS)
    backend.apply_knobs(knobs)
    items = []
    for name, n in GOLDEN_ITEMS.items():
        task = get_task(name)
        samples = load_samples(task, "bundled").samples[:n]
        outs = backend.generate([GenRequest(task.prompt(s), s.image, s.id) for s in samples], task.max_new_tokens, knobs.tier)
        items += [{"task": task.name, "id": s.id, "question": s.question, "prediction": task.postprocess(o.text)} for s, o in zip(samples, outs)]
    weights = rm.REFERENCE_DIR / "model.safetensors"
    data = {"knobs": GOLDEN_KNOBS, "device": "cpu", "dtype": "float32",
            "model_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "items": items}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data


def main_score(result: TaskResult, metric_name: str) -> float:
    from harness.metrics import get_metric

    return float(result.scores[get_metric(metric_name).subscores[0]])


def mark_pareto(grid: list[dict]) -> None:
    """Set ``g["pareto"]`` on every grid point: not dominated in (higher accuracy, lower latency),
    by the harness's own frontier (:func:`harness.reports.pareto.frontier`); points without a latency are
    never optimal."""
    import math

    from harness.reports.pareto import frontier

    points = [None if g["latency_ms"] is None or math.isnan(g["latency_ms"]) else (g["score"], g["latency_ms"]) for g in grid]
    for g, (optimal, _) in zip(grid, frontier(points)):
        g["pareto"] = bool(optimal)


def grid_configs() -> list[Knobs]:
    return [Knobs(b, k, t) for t in ("low", "medium", "high") for b in range(12, 17) for k in (2, 4, 6, 8)]


TARGETS_16_8_HIGH = {"scienceqa": 0.85, "textvqa": 0.6, "okvqa": 0.6, "vqav2": 0.6, "tallyqa": 0.6,
                     "stvqa": 0.5, "docvqa": 0.5, "coco-caption": 0.5}
DROP_TASKS = ("scienceqa", "textvqa", "okvqa", "vqav2")
MOVE_MIN_DROP = 0.01  # a knob "moves accuracy" when shrinking it alone costs 1 % of the score on average


def issue_checks(table: dict, grid: list[dict]) -> list[tuple[str, str, bool]]:
    """The issue's acceptance criteria, evaluated on the measured numbers."""
    out = []
    full, small = "16,8,high", "12,2,low"
    for name, target in TARGETS_16_8_HIGH.items():
        if name in table and full in table[name]:
            v = table[name][full]["score"]
            out.append((f"{name} at {full} >= {target}", f"{v:.3f}", v >= target))
    for name in DROP_TASKS:
        if name in table and full in table[name] and small in table[name]:
            d = table[name][full]["score"] - table[name][small]["score"]
            out.append((f"{name}: {small} at least 0.10 below {full}", f"{d:+.3f}", d >= 0.10))
    for alone, knob in (("12,8,high", "num_blocks"), ("16,2,high", "top_k"), ("16,8,low", "tier")):
        # relative drop per task (CIDEr is not on a 0-1 scale), so every task weighs the same
        drops = [1 - table[n][alone]["score"] / table[n][full]["score"]
                 for n in table if full in table[n] and alone in table[n] and table[n][full]["score"] > 0]
        if drops:
            lower = sum(d > 1e-9 for d in drops)
            mean = sum(drops) / len(drops)
            ok = mean >= MOVE_MIN_DROP and 2 * lower >= len(drops)
            out.append((f"{knob} alone lowers accuracy ({alone} vs {full}): mean relative drop >= "
                        f"{MOVE_MIN_DROP:.0%} and lower on at least half the tasks",
                        f"mean drop {mean:+.1%}, lower on {lower}/{len(drops)}", ok))
    if grid:
        n = sum(g["pareto"] for g in grid)
        out.append(("ScienceQA grid: >= 5 Pareto-optimal configs", str(n), n >= 5))
    return out


def write_markdown(path: Path, table: dict, grid: list[dict], meta: dict) -> None:
    from harness.tasks import get_task

    configs = list(next(iter(table.values())).keys()) if table else []
    lines = [
        "# Reference model on the bundled synthetic samples",
        "",
        f"Model: `reference` (harness/zoo/reference: LLaVA-style, CLIP-style vision tower + OLMoE 16 blocks x 64 experts, "
        f"top-8; trained on the synthetic training splits). Data: bundled synthetic samples (`--data bundled`), "
        f"not the real benchmarks: these numbers say nothing about MolmoE-1B. Engine: {meta['engine']}; device: {meta['device']}.",
        "",
        "## Main score per task and config (knobs = num_blocks,top_k,tier)",
        "",
        "| task | metric | n | " + " | ".join(configs) + " |",
        "|---|---|---|" + "---|" * len(configs),
    ]
    for name, row in table.items():
        t = get_task(name)
        n = next(iter(row.values()))["n"]
        lines.append(f"| {name} | {t.metric} | {n} | " + " | ".join(f"{row[c]['score']:.3f}" for c in configs) + " |")
    if grid:
        front = {g["knobs"] for g in grid if g["pareto"]}
        lines += [
            "",
            f"## ScienceQA: accuracy and measured CPU latency over the knob grid ({meta.get('latency_mode', '')})",
            "",
            f"{len(front)} Pareto-optimal configurations (higher accuracy, lower latency) marked with *.",
            "",
            "| knobs | mc | total ms/sample | pareto |",
            "|---|---|---|---|",
        ]
        for g in sorted(grid, key=lambda g: g["latency_ms"]):
            lines.append(f"| {g['knobs']} | {g['score']:.3f} | {g['latency_ms']:.1f} | {'*' if g['pareto'] else ''} |")
    checks = issue_checks(table, grid)
    if checks:
        lines += ["", "## Acceptance checks", "", "| check | measured | pass |", "|---|---|---|"]
        lines += [f"| {c} | {m} | {'yes' if ok else '**no**'} |" for c, m, ok in checks]
    lines += ["", f"Generated by `{meta['command']}` on {meta['created']}.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def run(args) -> dict:
    engine = BackendEngine(args.spec, args.device)
    configs = [Knobs.parse(c) for c in args.configs.split(";")] if args.configs else [Knobs.parse(c) for c in MAIN_CONFIGS]
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    table: dict[str, dict] = {}
    raw = []
    for name in tasks:
        task, samples = load_task_samples(name, args.limit)
        table[task.name] = {}
        for k in configs:
            t0 = time.time()
            r = evaluate_task(engine, task, samples, k, batch=args.batch)
            table[task.name][str(k)] = {"score": main_score(r, task.metric), "scores": r.scores, "n": r.n}
            raw.append(r.__dict__)
            print(f"{task.name:14s} {str(k):12s} {main_score(r, task.metric):.3f}  ({time.time() - t0:.1f}s)", flush=True)
    grid = []
    if args.grid:
        task, samples = load_task_samples("scienceqa", args.grid_limit)
        for k in grid_configs():
            r = evaluate_task(engine, task, samples, k, batch=1)
            grid.append({"knobs": str(k), "score": main_score(r, task.metric), "latency_ms": r.latency_ms or float("nan"), "n": r.n})
            print(f"grid {str(k):12s} mc={grid[-1]['score']:.3f} lat={grid[-1]['latency_ms']:.1f}ms", flush=True)
        mark_pareto(grid)
    meta = {
        "engine": "harness hf: backend, fp32",
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores",
        "latency_mode": "batch size 1, perf_counter_ns, prefill + decode",
        "command": "python -m tools.evaluate_reference " + " ".join(args.argv),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = {"meta": meta, "table": table, "grid": grid, "raw": raw}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    if args.output:
        write_markdown(Path(args.output), table, grid, meta)
    return out


def from_runs(paths: list[str], grid_paths: list[str], argv) -> dict:
    """The report from ``harness sweep`` run directories instead of an own evaluation: for every
    task the runs of the main configurations (``paths``), and every ScienceQA run of the knob grid
    (``grid_paths``: knobs, main score, measured p50 total latency). The numbers are the
    harness's own records."""
    from harness.errors import HarnessError
    from harness.reports.comparable import check_comparable
    from harness.reports.rundirs import find_run_dirs, load_runs

    def fixed(where):
        return [r for r in load_runs(find_run_dirs(where)) if r.config.knobs is not None] if where else []

    runs, grid_runs = fixed(paths), fixed(grid_paths)
    runs_all = runs + grid_runs
    if not runs:
        raise HarnessError("--from-runs: no fixed-configuration run directories found; pass the folder of a `harness sweep --grid reference-main`")
    check_comparable(runs_all, ("model",), "the reference-model report")  # one model, one set of weights
    table: dict[str, dict] = {}
    grid = []
    main = set(MAIN_CONFIGS)
    for r in sorted(runs, key=lambda r: (TASKS.index(r.task) if r.task in TASKS else 99, r.config.sort_key())):
        label = str(r.config.knobs)
        if label in main:
            table.setdefault(r.task, {})[label] = {"score": r.score, "scores": r.scores, "n": r.n}
    grid_runs = [r for r in grid_runs if r.task == "scienceqa"]
    check_comparable(grid_runs, ("fingerprint", "environment"), "the ScienceQA latency grid")
    for r in grid_runs:
        grid.append({"knobs": str(r.config.knobs), "score": r.score, "latency_ms": r.lat("measured", "total", "p50"), "n": r.n})
    mark_pareto(grid)
    for name in table:  # main configs in the report's column order
        table[name] = {c: table[name][c] for c in MAIN_CONFIGS if c in table[name]}
    first = runs[0]
    meta = {
        "engine": f"`harness sweep` run directories ({len(runs_all)} runs; model `{first.model}`, weights fingerprint "
                  f"`{str(first.summary.get('model_fingerprint'))[:12]}`)",
        "device": first.environment_label,
        "latency_mode": "measured p50 total ms per sample from each run's summary.json",
        "command": "python -m tools.evaluate_reference " + " ".join(argv),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    return {"meta": meta, "table": table, "grid": grid}


def parse_args(argv=None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description="Evaluate the reference model on the bundled samples")
    p.add_argument("--spec", default="reference", help="model spec (reference, hf:<dir>)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--configs", default="", help="';'-separated knobs, e.g. '16,8,high;12,2,low'")
    p.add_argument("--tasks", default="", help="comma-separated task names (default: all eight)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--grid", action="store_true", help="also run the ScienceQA grid 12..16 x {2,4,6,8} x tiers")
    p.add_argument("--grid-limit", type=int, default=None)
    p.add_argument("--output", default="", help="markdown file to write (e.g. leaderboard/reference-model.md)")
    p.add_argument("--json", default="", help="JSON file with every number and prediction")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--from-json", default="", help="only re-render --output from a JSON written by --json")
    p.add_argument("--write-golden", default="", help="only write the regression-test predictions to this file")
    p.add_argument("--from-runs", nargs="+", default=None, metavar="DIR",
                   help="render --output from `harness sweep` run directories (the reference-main grid)")
    p.add_argument("--grid-runs", nargs="+", default=None, metavar="DIR",
                   help="with --from-runs: the ScienceQA knob-grid sweep (the reference-full grid) for the latency table")
    args = p.parse_args(argv)
    args.argv = argv
    return args


def _main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.write_golden:
        write_golden(args.write_golden, args.spec)
    elif args.from_runs:
        data = from_runs(args.from_runs, args.grid_runs or [], args.argv)
        write_markdown(Path(args.output), data["table"], data["grid"], data["meta"])
        if args.json:
            Path(args.json).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    elif args.from_json:
        data = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        write_markdown(Path(args.output), data["table"], data["grid"], data["meta"])
    else:
        run(args)


if __name__ == "__main__":
    from harness.errors import HarnessError

    try:
        _main()
    except HarnessError as exc:  # bad input: one line, no traceback
        raise SystemExit(f"error: {exc}")
