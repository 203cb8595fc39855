"""Policy-chosen knobs through the real runner and records, on the fake backend (tests/fixtures/fakes.py):
grouping, batching, no reload between configurations, failures recorded per sample, and the
budget and oracle policies end to end over a sweep."""

from __future__ import annotations

import json
import sys
import textwrap
from collections import Counter

import pytest

from fixtures.fakes import FakeBackend, FakeMetric, FakeTask, evaluate_loaded, fake_data, true_decode_step_ms, true_prefill_ms
from harness.knobs import Knobs
from harness.latency.estimator import Estimate, LatencyEstimator

SPACE = [Knobs(4, 2, "low"), Knobs(5, 4, "medium"), Knobs(6, 2, "medium"), Knobs(8, 4, "low"), Knobs(8, 4, "high")]
FULL = Knobs(8, 4, "high")


class TrueEstimator(LatencyEstimator):
    """The fake backend's own batch-1 latency formulas: estimates equal measurements."""

    name = "fake-true"

    def predict(self, rows):
        out = []
        for r in rows:
            pre = true_prefill_ms(r.vision_tokens, r.text_tokens, r.num_active_blocks, r.top_k)
            dec = sum(true_decode_step_ms(r.vision_tokens, r.text_tokens, r.num_active_blocks, r.top_k, p)
                      for p in range(1, r.output_tokens + 1))
            out.append(Estimate(pre, dec, pre + dec))
        return out


def run(tmp_path, name, n=24, **kw):
    backend = kw.pop("backend", None) or FakeBackend()
    summary, lines = evaluate_loaded(backend, FakeTask(), fake_data(n), tmp_path / name, metric=FakeMetric(), **kw)
    return summary, {ln["id"]: ln for ln in lines}, backend


def test_random_policy_grouped_execution(tmp_path):
    summary, lines, backend = run(tmp_path, "b4", policy="random", policy_args={"seed": "5"}, knob_space=SPACE,
                                  batch_size=4)
    chosen = {sid: Knobs.from_dict(ln["knobs"]) for sid, ln in lines.items()}
    assert len(set(chosen.values())) >= 4 and set(chosen.values()) <= set(SPACE)
    # every configuration applied once (switch between groups, no re-application, no reload)
    applied = backend.applied
    assert sorted(applied) == sorted(set(chosen.values()))
    # batches: one configuration each, at most 4 samples, as many as ceil(group / 4)
    sizes = Counter(chosen.values())
    per_config = Counter(k for k, _ in backend.batches)
    for k, cnt in sizes.items():
        assert per_config[k] == -(-cnt // 4)
    assert all(b <= 4 for _, b in backend.batches)
    # records keep the chosen knobs and the policy's inputs; predictions are the backend's answer at them
    data = {s.id: s for s in fake_data(24).samples}
    for sid, ln in lines.items():
        assert ln["error"] is None and ln["policy_input"]["text_tokens"] > 0
        assert ln["prediction"] == backend.answer(FakeTask().prompt(data[sid]), chosen[sid])
    assert summary["knobs_histogram"] == {str(k): v for k, v in sorted((str(k), v) for k, v in sizes.items())}
    assert summary["policy"]["name"] == "random" and summary["policy"]["args"]["seed"] == 5


def test_predictions_do_not_depend_on_batch_size_or_grouping(tmp_path):
    outs = {}
    for bs in (1, 3, 16):
        _, lines, _ = run(tmp_path, f"bs{bs}", policy="random", policy_args={"seed": "2"}, knob_space=SPACE, batch_size=bs)
        outs[bs] = {sid: (ln["config"], ln["prediction"]) for sid, ln in lines.items()}
    assert outs[1] == outs[3] == outs[16]
    # a different grouping (other seed) gives each sample the answer of its own configuration
    _, other, backend = run(tmp_path, "seed9", policy="random", policy_args={"seed": "9"}, knob_space=SPACE, batch_size=16)
    assert any(other[s]["config"] != outs[1][s][0] for s in other)
    for sid, ln in other.items():
        if ln["config"] == outs[1][sid][0]:
            assert ln["prediction"] == outs[1][sid][1]


def test_a_policy_that_misbehaves_fails_only_its_samples(tmp_path, monkeypatch):
    (tmp_path / "bad_policies.py").write_text(textwrap.dedent("""
        from harness.knobs import Knobs

        class Picky:
            name = "picky"
            def choose(self, inputs):
                if any(i.sample_id == "s003" for i in inputs):
                    raise ValueError("cannot handle s003")
                return [Knobs(8, 9) if i.sample_id == "s005" else Knobs(8, 4) for i in inputs]
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bad_policies", raising=False)
    summary, lines, _ = run(tmp_path, "bad", n=8, policy="bad_policies:Picky", batch_size=4)
    assert "cannot handle s003" in lines["s003"]["error"] and "ValueError" in lines["s003"]["error"]
    assert "top_k=9 is out of range" in lines["s005"]["error"]
    assert [sid for sid, ln in lines.items() if ln["error"]] == ["s003", "s005"]
    assert summary["n_failed"] == 2 and summary["n"] == 8


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A batch-1 sweep of the fake task over SPACE, with measured (= true) and estimated latency."""
    root = tmp_path_factory.mktemp("sweep")
    for k in SPACE:
        run(root, k.slug, n=24, knobs=str(k), estimator=TrueEstimator(), batch_size=1)
    return root


def test_budget_policy_end_to_end(tmp_path, sweep):
    accs = {}
    for d in sweep.iterdir():
        s = json.loads((d / "summary.json").read_text())
        accs[s["config"]] = s["score"]
    assert max(accs, key=accs.get) == str(FULL) or accs[str(FULL)] == max(accs.values())
    # a generous budget: every sample gets the most accurate configuration of the sweep
    summary, lines, _ = run(tmp_path, "generous", policy="budget", knob_space=SPACE, estimator=TrueEstimator(),
                            accuracy_table=str(sweep), latency_budget_ms=1e6)
    best = max(accs.values())
    assert all(accs[ln["config"]] == best for ln in lines.values())
    assert summary["latency_budget"]["count"] == 0
    # a budget below the cheapest configuration: everything falls back to the cheapest
    summary, lines, _ = run(tmp_path, "tight", policy="budget", knob_space=SPACE, estimator=TrueEstimator(),
                            accuracy_table=str(sweep), latency_budget_ms=0.5)
    assert {ln["config"] for ln in lines.values()} == {"4,2,low"}
    assert summary["latency_budget"]["count"] == 24 and summary["latency_budget"]["rate"] == 1.0
    assert summary["policy"]["fallback_cheapest"] == 24
    # a budget in the middle of the full configuration's latencies: short prompts get it, long ones
    # get a cheaper configuration
    full_low = Knobs(8, 4, "low")
    costs = sorted(json.loads(x)["estimated"]["total_ms"] for x in (sweep / full_low.slug / "samples.jsonl").read_text().splitlines())
    mid = costs[len(costs) // 2]
    summary, lines, _ = run(tmp_path, "mid", policy="budget", knob_space=SPACE, estimator=TrueEstimator(),
                            accuracy_table=str(sweep), latency_budget_ms=mid)
    used = Counter(ln["config"] for ln in lines.values())
    assert str(full_low) in used and len(used) >= 2
    assert summary["policy"]["within_budget"] + summary["policy"]["fallback_cheapest"] == 24


def test_oracle_policy_end_to_end(tmp_path, sweep):
    per = {}
    for d in sweep.iterdir():
        for x in (d / "samples.jsonl").read_text().splitlines():
            ln = json.loads(x)
            per.setdefault(ln["id"], {})[ln["config"]] = (ln["scores"]["acc"], ln["estimated"]["total_ms"])
    summary, lines, _ = run(tmp_path, "oracle", policy="oracle", knob_space=SPACE, estimator=TrueEstimator(),
                            accuracy_table=str(sweep))
    answerable = [sid for sid, cfgs in per.items() if any(a >= 1.0 for a, _ in cfgs.values())]
    assert summary["score"] == pytest.approx(len(answerable) / len(per))
    for sid, ln in lines.items():
        ok = {c: ms for c, (a, ms) in per[sid].items() if a >= 1.0}
        pool = ok or {c: ms for c, (_, ms) in per[sid].items()}
        assert pool[ln["config"]] == pytest.approx(min(pool.values()))


def test_pareto_json_of_the_sweep_is_an_accuracy_table(tmp_path, sweep):
    from harness.reports.pareto import build_tables, to_json
    from harness.policies.table import load_accuracy_table
    from harness.reports.rundirs import load_runs

    doc = json.loads(to_json(build_tables(load_runs([sweep]))))
    p = tmp_path / "pareto.json"
    p.write_text(json.dumps(doc))
    t = load_accuracy_table(p)
    assert sorted(r.knobs for r in t.rows) == sorted(SPACE) and t.has_samples()
    for task in doc["tasks"]:  # run dirs gone: aggregate rows only, same scores
        for row in task["rows"]:
            row["run_dir"] = str(tmp_path / "moved")
    p.write_text(json.dumps(doc))
    t2 = load_accuracy_table(p)
    assert not t2.has_samples()
    assert sorted((r.task, r.knobs, r.score) for r in t2.rows) == sorted((r.task, r.knobs, r.score) for r in t.rows)
    summary, lines, _ = run(tmp_path, "from-pareto", policy="budget", knob_space=SPACE, estimator=TrueEstimator(),
                            accuracy_table=str(p), latency_budget_ms=1e6)
    assert summary["n_failed"] == 0 and len({ln["config"] for ln in lines.values()}) == 1


def test_estimated_batch1_is_the_batch1_estimate_of_the_same_sample(tmp_path):
    """At any --batch-size each line carries its own batch-1 estimate: equal to the estimate the
    same sample gets in a batch-1 run (and to its measurement there, for this exact estimator)."""
    _, alone, _ = run(tmp_path, "b1", policy="random", policy_args={"seed": "3"}, knob_space=SPACE,
                      estimator=TrueEstimator(), batch_size=1)
    summary, batched, _ = run(tmp_path, "b8", policy="random", policy_args={"seed": "3"}, knob_space=SPACE,
                              estimator=TrueEstimator(), batch_size=8)
    assert summary["batch_size"] == 8 and any(ln["batch_size"] > 1 for ln in batched.values())
    for sid, ln in batched.items():
        one = alone[sid]
        assert one["estimated_batch1"]["total_ms"] == pytest.approx(one["estimated"]["total_ms"])
        for part in ("prefill_ms", "decode_ms", "total_ms"):
            assert ln["estimated_batch1"][part] == pytest.approx(one["estimated"][part])
            assert ln["estimated_batch1"][part] == pytest.approx(one["measured"][part])
    block = summary["latency_ms"]["estimated_batch1"]
    assert block["total"]["n"] == 24 and set(block["total"]) >= {"mean", "p50", "p90", "p99"}


class DoubledBatchEstimator(LatencyEstimator):
    """A batch-aware fit that is off by 2x, to tell its figures from the batch-1 fit's."""

    name = "fake-batch"
    batch_aware = True

    def predict(self, rows):
        return [Estimate(2 * e.prefill_ms, 2 * e.decode_ms, 2 * e.total_ms, "batch" if r.batch_size > 1 else "sample")
                for e, r in zip(TrueEstimator().predict(rows), rows)]


def test_a_batch_of_one_in_a_batched_run_is_estimated_by_the_batch1_fit(tmp_path, monkeypatch):
    """A batch of one runs as a batch-1 call: its estimate is the batch-1 fit's (here exact), not an
    extrapolation of the run's batch fit, which still estimates the larger batches."""
    import harness.api as api

    monkeypatch.setattr(api, "batch1_estimator_for", lambda ctx, backend, est: (TrueEstimator(), None, None))
    summary, lines, _ = run(tmp_path, "b8", policy="random", policy_args={"seed": "3"}, knob_space=SPACE,
                            estimator=DoubledBatchEstimator(), batch_size=8)
    ones = [ln for ln in lines.values() if ln["batch_size"] == 1]
    more = [ln for ln in lines.values() if ln["batch_size"] > 1]
    assert ones and more
    for ln in ones:
        assert ln["estimated"]["per"] == "sample" == ln["measured"]["scope"]
        for part in ("prefill_ms", "decode_ms", "total_ms"):
            assert ln["estimated"][part] == pytest.approx(ln["estimated_batch1"][part]) == pytest.approx(ln["measured"][part])
    for ln in more:
        assert ln["estimated"]["per"] == "batch" and ln["estimated"]["total_ms"] != pytest.approx(ln["estimated_batch1"]["total_ms"])


def test_budget_counted_on_estimated_batch1_in_batched_runs(tmp_path):
    summary, lines, _ = run(tmp_path, "bud8", policy="random", policy_args={"seed": "3"}, knob_space=SPACE,
                            estimator=TrueEstimator(), batch_size=8, latency_budget_ms=30.0)
    b = summary["latency_budget"]
    assert b["latency"] == "estimated_batch1" and "batch 1" in b["latency_label"]
    own = [ln["estimated_batch1"]["total_ms"] for ln in lines.values()]
    assert b["n"] == 24 and b["over"] == sum(1 for x in own if x > 30.0) == b["count"]
    lo, hi = b["share_within_ci95"]
    assert lo <= b["share_within"] <= hi


def test_a_recompile_limit_hit_is_a_note_in_the_summary(tmp_path, monkeypatch):
    """A compiled function that ran out of torch's versions in this process ran uncompiled after it:
    the run says so next to its latency figures."""
    import harness.engine.compile_limits as cl

    monkeypatch.setattr(cl, "_HITS", [])
    summary, _, _ = run(tmp_path, "clean", n=4)
    assert not any("recompile limit" in n for n in summary["notes"])
    monkeypatch.setattr(cl, "_HITS", ["function: 'attn' (step.py:1)"])
    summary, _, _ = run(tmp_path, "hit", n=4)
    assert any("recompile limit for 'attn'" in n and "not the engine's" in n for n in summary["notes"])
