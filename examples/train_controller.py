"""Train the example learned controller (examples/learned_controller.py) from a sweep.

    python examples/train_controller.py runs/sweep -o runs/weights.json [--task scienceqa]

Reads the sweep's fixed-configuration run directories through the harness's one reader
(``harness.reports.rundirs``); per configuration it fits, on every sample of the sweep,

- a logistic model of "answered correctly" (the oracle's rule, ``harness.policies.oracle.is_correct``)
  on the features of ``learned_controller.features`` (standardised), by full-batch gradient
  descent with an L2 penalty from a seeded start;
- a ridge least-squares model of the sample's own latency (``harness.latency.aggregate.per_sample_ms``:
  measured at batch 1, else ``estimated_batch1``) on a constant, its vision tokens and text tokens.

Writes weights.json (format ``examples.learned_controller/1``). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # learned_controller beside this file
from learned_controller import FORMAT, feature_names, features, latency_inputs, sigmoid  # noqa: E402

from harness.errors import HarnessError  # noqa: E402


def read_sweep(sweep: str, task: str | None):
    """-> (task, [(run, {id: line}, {id: score}, {id: latency ms}, latency source)])."""
    from harness.latency.aggregate import per_sample_ms
    from harness.reports.rundirs import load_runs

    runs = [r for r in load_runs([sweep], what="sweep run directories") if r.config.knobs is not None]
    tasks = sorted({r.task for r in runs})
    if not runs:
        raise HarnessError(f"'{sweep}' holds no fixed-configuration run; pass the output folder of `harness sweep`")
    if task is None:
        if len(tasks) > 1:
            raise HarnessError(f"'{sweep}' holds tasks {', '.join(tasks)}; pick one with --task")
        task = tasks[0]
    runs = [r for r in runs if r.task == task]
    if not runs:
        raise HarnessError(f"'{sweep}' has no run of task '{task}' (it has: {', '.join(tasks)})")
    out = []
    for r in runs:
        lines = {str(ln["id"]): ln for ln in r.sample_records()}
        scores, _failed = r.sample_scores()
        lat, source = per_sample_ms([ln for ln in lines.values() if not ln.get("error")], int(r.batch_size or 1) > 1)
        if not lat:
            raise HarnessError(f"run '{r.path}' has no per-sample latency (batched without estimated_batch1?); "
                               "re-run the sweep at --batch-size 1 or with an estimator")
        out.append((r, lines, scores, lat, source))
    return task, out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, epochs: int, lr: float, rng) -> tuple[np.ndarray, float]:
    w = rng.normal(0.0, 0.01, size=x.shape[1])
    b = 0.0
    n = len(y)
    for _ in range(epochs):
        p = sigmoid(x @ w + b)
        g = p - y
        w -= lr * (x.T @ g / n + l2 * w)
        b -= lr * float(g.mean())
    return w, b


def fit_latency(A: np.ndarray, t: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge least squares of latency on ``[1, vision tokens, text tokens]``: the columns centred and
    scaled, the intercept unpenalised (a column that never varies, e.g. the vision tokens of a fixed
    low tier, gets a zero slope), returned in the original units."""
    x = A[:, 1:]
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd == 0] = np.inf
    z = (x - mu) / sd
    beta = np.linalg.solve(z.T @ z + ridge * len(t) * np.eye(z.shape[1]), z.T @ (t - t.mean()))
    slopes = beta / sd
    return np.concatenate([[t.mean() - float(slopes @ mu)], slopes])


def train(sweep: str, task: str | None = None, *, seed: int = 0, l2: float = 0.01, epochs: int = 500,
          lr: float = 0.5, trade_off: float = 0.1, ridge: float = 0.1) -> dict:
    from harness.policies.oracle import is_correct

    task, rows = read_sweep(sweep, task)
    # samples every configuration scored; their features from the sample lines' policy_input
    ids = sorted(set.intersection(*(set(s) for _, _, s, _, _ in rows)))
    if len(ids) < 2:
        raise HarnessError(f"'{sweep}' has {len(ids)} sample(s) scored by every configuration of '{task}'; need more")
    first_lines = rows[0][1]
    tiers = sorted({t for i in ids for t in ((first_lines[i].get("policy_input") or {}).get("vision_tokens_by_tier") or {})})
    pin = {i: first_lines[i].get("policy_input") or {} for i in ids}
    missing = [i for i in ids if not pin[i]]
    if missing:
        raise HarnessError(f"sample lines of '{rows[0][0].path}' lack policy_input (e.g. '{missing[0]}'); re-run the "
                           "sweep with this harness")
    X = np.asarray([features(pin[i].get("text_tokens"), pin[i].get("image_size"), pin[i].get("vision_tokens_by_tier"), tiers)
                    for i in ids])
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale == 0] = 1.0
    Xs = (X - mean) / scale
    rng = np.random.default_rng(seed)
    configs = []
    for run, lines, scores, lat, source in rows:
        y = np.asarray([float(is_correct(scores[i], run.metric, None)) for i in ids])
        w, b = fit_logistic(Xs, y, l2, epochs, lr, rng)
        have = [i for i in ids if i in lat]
        A = np.asarray([latency_inputs(pin[i].get("text_tokens"), (lines[i].get("vision_tokens")
                                                                    or (pin[i].get("vision_tokens_by_tier") or {}).get(run.config.knobs.tier, 0)))
                        for i in have])
        t = np.asarray([lat[i] for i in have])
        coef = fit_latency(A, t, ridge)
        configs.append({"config": str(run.config.knobs), "w": w.tolist(), "b": b, "latency": coef.tolist(),
                        "latency_min_ms": float(t.min()), "latency_mean_ms": float(t.mean()),
                        "train_accuracy": float(y.mean()), "run_dir": str(run.path), "latency_source": source})
    return {"format": FORMAT, "task": task, "features": feature_names(tiers), "tiers": tiers,
            "mean": mean.tolist(), "scale": scale.tolist(), "trade_off": trade_off,
            "ref_ms": max(c["latency_mean_ms"] for c in configs), "configs": configs,
            "trained_on": {"sweep": str(sweep), "n_samples": len(ids), "seed": seed, "l2": l2, "epochs": epochs,
                           "ridge": ridge}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="output folder of `harness sweep`")
    ap.add_argument("-o", "--output", default="weights.json", help="weights file to write (default weights.json)")
    ap.add_argument("--task", help="task to train on (needed when the sweep holds several)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--trade-off", type=float, default=0.1,
                    help="default score given up per ref_ms of predicted latency (--policy-arg trade_off overrides)")
    args = ap.parse_args(argv)
    try:
        doc = train(args.sweep, args.task, seed=args.seed, l2=args.l2, epochs=args.epochs, trade_off=args.trade_off)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(doc['configs'])} configurations, {doc['trained_on']['n_samples']} samples of "
          f"{doc['task']}, features {', '.join(doc['features'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
