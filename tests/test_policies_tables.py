"""budget and oracle policies over accuracy tables from a (synthetic) sweep of run directories."""

from __future__ import annotations

import json

import pytest

from harness.backends.base import ModelInfo
from harness.errors import HarnessError
from harness.knobs import Knobs
from harness.latency.estimator import Estimate, LatencyEstimator
from harness.policies import PolicyContext, PolicyFailure, PolicyInput, build, choose_safely
from harness.policies.oracle import is_correct
from harness.policies.table import load_accuracy_table

INFO = ModelInfo(name="tiny", family="olmoe", n_blocks=16, default_top_k=8, max_top_k=8, min_blocks=12,
                 tiers=("low", "medium", "high"), default_tier="high")
SPACE = [Knobs(12, 2, "low"), Knobs(14, 4, "medium"), Knobs(16, 8, "high")]
ACC = {"12,2,low": 0.40, "14,4,medium": 0.60, "16,8,high": 0.75}
OUT_TOKENS = {"12,2,low": 4, "14,4,medium": 6, "16,8,high": 8}


class LinearEstimator(LatencyEstimator):
    """ms = (vision + text) * blocks * top_k / 100 + output_tokens * blocks * top_k / 10."""

    name = "linear-test"

    def __init__(self):
        self.calls = 0

    def predict(self, rows):
        self.calls += 1
        out = []
        for r in rows:
            pre = (r.vision_tokens + r.text_tokens) * r.num_active_blocks * r.top_k / 100.0
            dec = r.output_tokens * r.num_active_blocks * r.top_k / 10.0
            out.append(Estimate(pre, dec, pre + dec))
        return out


def cost(knobs: Knobs, text: int, out: int) -> float:
    vis = {"low": 16, "medium": 64, "high": 144}[knobs.tier]
    a, k = knobs.num_blocks, knobs.top_k
    return (vis + text) * a * k / 100.0 + out * a * k / 10.0


def write_run(folder, task, knobs: str, per_sample: dict[str, float], metric="vqa_score", model="tiny",
              measured: dict[str, float] | None = None, out_tokens: int = 5):
    folder.mkdir(parents=True)
    score = sum(per_sample.values()) / len(per_sample)
    summary = {"task": task, "metric": metric, "model": model, "data": {"fingerprint": "f" * 64, "source": "bundled"},
               "knobs": Knobs.parse(knobs).to_dict(), "policy": None, "n": len(per_sample), "n_failed": 0,
               "score": score, "scores": {metric: score}, "latency_ms": {"measured": None, "estimated": None},
               "device": "cpu", "created": "2026-11-26T09:00:00+00:00"}
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = []
    for sid, s in per_sample.items():
        lines.append({"id": sid, "task": task, "knobs": Knobs.parse(knobs).to_dict(), "prediction": "x",
                      "score": s, "scores": {metric: s}, "output_tokens": out_tokens, "text_tokens": 50,
                      "vision_tokens": 16, "measured": {"total_ms": (measured or {}).get(sid, 10.0)},
                      "estimated": None, "error": None})
    (folder / "samples.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


@pytest.fixture
def sweep(tmp_path):
    """A 3-config sweep of task 'vqav2' (ids s0..s3) plus a run of another model and a policy run."""
    root = tmp_path / "sweep"
    # per-sample vqa scores: s0 answered by every config, s1 only by 14,4 and 16,8, s2 only by 16,8, s3 by none
    per = {
        "12,2,low": {"s0": 1.0, "s1": 0.3, "s2": 0.0, "s3": 0.0},
        "14,4,medium": {"s0": 1.0, "s1": 0.6, "s2": 0.5, "s3": 0.0},
        "16,8,high": {"s0": 1.0, "s1": 1.0, "s2": 0.9, "s3": 0.3},
    }
    for k in SPACE:
        scores = dict(per[str(k)])
        # summary score is taken from the run; make it the table accuracy used by budget
        write_run(root / f"vqav2-{k.slug}", "vqav2", str(k), scores, out_tokens=OUT_TOKENS[str(k)])
        s = json.loads((root / f"vqav2-{k.slug}" / "summary.json").read_text())
        s["score"] = ACC[str(k)]
        (root / f"vqav2-{k.slug}" / "summary.json").write_text(json.dumps(s))
    write_run(root / "other-model", "vqav2", "12,2,low", {"s0": 1.0}, model="other")
    pol = root / "policy-run"
    write_run(pol, "vqav2", "12,2,low", {"s0": 1.0})
    s = json.loads((pol / "summary.json").read_text())
    s["knobs"], s["policy"] = None, {"name": "random", "args": {}}
    (pol / "summary.json").write_text(json.dumps(s))
    return root


def ctx(table=None, estimator="default", **kw):
    return PolicyContext(model_info=INFO, knob_space=kw.pop("space", SPACE),
                         estimator=LinearEstimator() if estimator == "default" else estimator,
                         accuracy_table=None if table is None else str(table), seed=0,
                         max_new_tokens=kw.pop("max_new_tokens", 20), **kw)


def inp(i, text=50, budget=None, task="vqav2"):
    return PolicyInput(sample_id=f"s{i}", task=task, question="q", image_size=(64, 64), text_tokens=text,
                       vision_tokens_by_tier={"low": 16, "medium": 64, "high": 144}, latency_budget_ms=budget)


# -- table --------------------------------------------------------------------------------------
def test_table_reads_sweep_dirs_and_skips_policy_runs(sweep):
    t = load_accuracy_table(sweep)
    assert t.models() == ["other", "tiny"]
    mine = t.select_model(INFO)
    assert sorted(str(r.knobs) for r in mine.rows) == sorted(ACC)
    row = next(r for r in mine.rows if str(r.knobs) == "14,4,medium")
    assert row.score == 0.60 and row.mean_output_tokens == 6 and row.samples["s1"].score == 0.6
    assert row.samples["s0"].measured_ms == 10.0


def test_table_errors(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        load_accuracy_table(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="holds no run directory"):
        load_accuracy_table(tmp_path / "empty")
    j = tmp_path / "t.json"
    j.write_text(json.dumps({"rows": [{"task": "vqav2", "config": "x"}]}))
    with pytest.raises(HarnessError, match="no fixed-configuration results"):
        load_accuracy_table(j)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(HarnessError, match="not valid JSON"):
        load_accuracy_table(bad)


def test_select_model_refuses_a_table_of_other_models(sweep, tmp_path):
    t = load_accuracy_table(sweep)
    other = ModelInfo(name="third", family="olmoe", n_blocks=16, default_top_k=8, max_top_k=8)
    with pytest.raises(HarnessError, match="holds models other, tiny, not 'third'"):
        t.select_model(other)


def test_pareto_json_rows(tmp_path):
    doc = {"format": "harness-pareto/1", "tasks": [{"task": "vqav2", "metric": "vqa_score", "model": "tiny", "rows": [
        {"config": str(k), "knobs": k.to_dict(), "model": "tiny", "run_dir": str(tmp_path / "gone"), "score": ACC[str(k)]}
        for k in SPACE] + [{"config": "policy:random", "knobs": None, "policy": "random", "score": 0.5}]}]}
    p = tmp_path / "pareto.json"
    p.write_text(json.dumps(doc))
    t = load_accuracy_table(p)
    assert sorted((r.task, str(r.knobs), r.score) for r in t.rows) == sorted(("vqav2", k, a) for k, a in ACC.items())
    assert not t.has_samples()


def test_pareto_json_uses_the_run_dirs_it_names(sweep, tmp_path):
    run_dir = sweep / f"vqav2-{SPACE[1].slug}"
    doc = {"tasks": [{"task": "vqav2", "rows": [{"knobs": SPACE[1].to_dict(), "score": 0.6, "run_dir": str(run_dir)}]}]}
    p = tmp_path / "pareto.json"
    p.write_text(json.dumps(doc))
    t = load_accuracy_table(p)
    assert t.has_samples() and t.rows[0].mean_output_tokens == 6


# -- budget -------------------------------------------------------------------------------------
def test_budget_needs_estimator_table_and_budget_before_loading(sweep):
    with pytest.raises(HarnessError, match="needs a latency estimator"):
        build("budget", {}, ctx(sweep, estimator=None))
    with pytest.raises(HarnessError, match="needs --accuracy-table"):
        build("budget", {}, ctx(None))
    with pytest.raises(HarnessError, match="needs a latency budget; pass --latency-budget-ms"):
        build("budget", {}, ctx(sweep))
    with pytest.raises(HarnessError, match="no results for task 'gqa'"):
        build("budget", {"budget_ms": "9"}, ctx(sweep, tasks=("vqav2", "gqa")))
    with pytest.raises(HarnessError, match="no configuration of accuracy table .* is in the knob space"):
        build("budget", {"budget_ms": "9"}, ctx(sweep, space=[Knobs(13, 2, "low")]))
    with pytest.raises(HarnessError, match="margin='1.5' is not a valid"):
        build("budget", {"margin": "1.5"}, ctx(sweep))
    with pytest.raises(HarnessError, match="output_tokens='median' is not one of table, max"):
        build("budget", {"output_tokens": "median"}, ctx(sweep))


def test_budget_picks_best_accuracy_that_fits(sweep):
    p = build("budget", {}, ctx(sweep, latency_budget_ms=1.0))  # per-sample budgets override it
    costs = {str(k): cost(k, 50, OUT_TOKENS[str(k)]) for k in SPACE}
    assert costs["12,2,low"] < costs["14,4,medium"] < costs["16,8,high"]
    big = costs["16,8,high"] + 1
    mid = (costs["14,4,medium"] + costs["16,8,high"]) / 2
    low = (costs["12,2,low"] + costs["14,4,medium"]) / 2
    tiny = costs["12,2,low"] / 2
    got = choose_safely(p, [inp(0, budget=b) for b in (big, mid, low, tiny)], INFO)
    assert got == [Knobs(16, 8, "high"), Knobs(14, 4, "medium"), Knobs(12, 2, "low"), Knobs(12, 2, "low")]
    d = p.describe()
    assert d["within_budget"] == 3 and d["fallback_cheapest"] == 1


def test_budget_uses_each_samples_prompt_length(sweep):
    p = build("budget", {"budget_ms": "400"}, ctx(sweep))
    short, long_ = 50, 400
    assert cost(Knobs(16, 8, "high"), short, 8) <= 400 < cost(Knobs(16, 8, "high"), long_, 8)
    got = p.choose([inp(0, text=short), inp(1, text=long_)])
    assert got[0] == Knobs(16, 8, "high") and got[1] != Knobs(16, 8, "high")


def test_budget_output_tokens_max_is_more_conservative(sweep):
    k = Knobs(16, 8, "high")
    b = (cost(k, 50, 8) + cost(k, 50, 20)) / 2  # fits with the sweep's 8 tokens, not with max_new_tokens=20
    assert build("budget", {"budget_ms": "1"}, ctx(sweep)).choose([inp(0, budget=b)]) == [k]
    assert build("budget", {"budget_ms": "1", "output_tokens": "max"}, ctx(sweep)).choose([inp(0, budget=b)]) != [k]


def test_budget_margin_and_context_budget(sweep):
    k = Knobs(16, 8, "high")
    b = cost(k, 50, 8) * 1.05
    assert build("budget", {}, ctx(sweep, latency_budget_ms=b)).choose([inp(0)]) == [k]
    assert build("budget", {"margin": "0.1"}, ctx(sweep, latency_budget_ms=b)).choose([inp(0)]) != [k]


def test_budget_unknown_task_fails_those_samples(sweep):
    p = build("budget", {"budget_ms": "1"}, ctx(sweep))
    est = p.context.estimator
    out = choose_safely(p, [inp(0), inp(1, budget=1e9, task="gqa"), inp(2, budget=1e9)], INFO)
    assert out[0] == Knobs(12, 2, "low")  # 1 ms fits nothing: the cheapest
    assert isinstance(out[1], PolicyFailure) and "task 'gqa'" in str(out[1])
    assert out[2] == Knobs(16, 8, "high")
    assert est.calls == 1  # one estimator call per task per batch


def test_budget_estimator_failure_is_a_policy_failure(sweep):
    class Broken(LatencyEstimator):
        name = "broken"

        def predict(self, rows):
            raise ValueError("no fit")

    p = build("budget", {"budget_ms": "50"}, ctx(sweep, estimator=Broken()))
    out = choose_safely(p, [inp(0)], INFO)
    assert "latency estimator 'broken' failed: ValueError: no fit" in str(out[0])


# -- oracle -------------------------------------------------------------------------------------
def test_is_correct_default_rule():
    assert is_correct(1.0, "em", None) and not is_correct(0.99, "mc", None)
    assert is_correct(0.6, "vqa_score", None) and not is_correct(0.5, "vqa_score", None)
    assert is_correct(0.5, "vqa_score", 0.5) and not is_correct(None, "em", None)


def test_oracle_cheapest_correct_configuration(sweep):
    p = build("oracle", {}, ctx(sweep))
    assert p.cost == "estimated"
    got = choose_safely(p, [inp(i) for i in range(5)], INFO)  # s4 is not in the sweep
    assert got == [Knobs(12, 2, "low"),     # everyone answers s0: the cheapest
                   Knobs(14, 4, "medium"),  # s1: 14,4 (0.6 > 0.5) is cheaper than 16,8
                   Knobs(16, 8, "high"),    # s2: 14,4 has exactly 0.5 -> not correct
                   Knobs(12, 2, "low"),     # s3: nobody -> cheapest
                   Knobs(12, 2, "low")]     # unseen -> cheapest
    assert p.describe()["answered"] == 3 and p.describe()["unanswerable"] == 1 and p.describe()["unseen"] == 1


def test_oracle_threshold_and_measured_cost(sweep, tmp_path):
    p = build("oracle", {"threshold": "0.5"}, ctx(sweep))
    assert p.choose([inp(2)]) == [Knobs(14, 4, "medium")]
    # measured cost: make 16,8,high the fastest for s0 in the records
    root = tmp_path / "m"
    for k, ms in zip(SPACE, (30.0, 20.0, 5.0)):
        write_run(root / k.slug, "vqav2", str(k), {"s0": 1.0, "s1": 0.0}, measured={"s0": ms, "s1": ms})
    p = build("oracle", {"cost": "measured"}, ctx(root))
    assert p.choose([inp(0)]) == [Knobs(16, 8, "high")]
    p = build("oracle", {}, ctx(root, estimator=None))  # auto without an estimator = measured
    assert p.cost == "measured" and p.choose([inp(0)]) == [Knobs(16, 8, "high")]
    assert build("oracle", {}, ctx(root)).choose([inp(0)]) == [Knobs(12, 2, "low")]  # estimated: cheapest by model


def test_oracle_config_errors(sweep, tmp_path):
    with pytest.raises(HarnessError, match="needs --accuracy-table"):
        build("oracle", {}, ctx(None))
    with pytest.raises(HarnessError, match="cost=estimated needs a latency estimator"):
        build("oracle", {"cost": "estimated"}, ctx(sweep, estimator=None))
    with pytest.raises(HarnessError, match="cost='fast' is not one of"):
        build("oracle", {"cost": "fast"}, ctx(sweep))
    p = tmp_path / "pareto.json"
    p.write_text(json.dumps({"rows": [{"task": "vqav2", "knobs": "12,2,low", "score": 0.4}]}))
    with pytest.raises(HarnessError, match="needs per-sample results"):
        build("oracle", {}, ctx(p))
