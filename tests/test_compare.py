"""``harness compare``: every figure on hand-computed run directories; the frontier functions
(step, hull, ties, a policy faster or slower than every configuration), gap closed, the Wilson
interval, the paired bootstrap's reproducibility, the latency a task is compared on, refusals."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "rundirs"))
from rundir_factory import make_run  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.reports import compare  # noqa: E402
from harness.reports.frontier import Point, curve_area, gap_closed, hull_at, step_at, upper_hull  # noqa: E402
from harness.reports.rundirs import load_runs  # noqa: E402
from harness.stats import paired_bootstrap_diff, paired_win_share, wilson_interval  # noqa: E402

IDS = ["s0", "s1", "s2", "s3"]


def cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, args)))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def patch(run: Path, summary: dict | None = None, **fields) -> Path:
    """Set per-sample fields (one value per line, a dict value may be None) and summary keys."""
    path = run / "samples.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for key, values in fields.items():
        for ln, v in zip(lines, values):
            ln[key] = v
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    if summary:
        s = json.loads((run / "summary.json").read_text())
        s.update(summary)
        (run / "summary.json").write_text(json.dumps(s))
    return run


def b1(values):
    return [{"prefill_ms": 0.4 * v, "decode_ms": 0.6 * v, "total_ms": v} for v in values]


# -- the frontier on its own --------------------------------------------------------------------
A, B, C = Point("A", 100, 0.5), Point("B", 200, 0.7), Point("C", 300, 0.75)
D = Point("D", 150, 0.55)  # under the segment A-B: on the step frontier, not on the hull
E = Point("E", 250, 0.75)  # C's score, faster: C leaves the hull


def test_hull_drops_points_under_it_and_interpolates():
    assert upper_hull([A, B, C, D]) == [A, B, C]
    h = hull_at([A, B, C, D], 150)
    assert (h.lo, h.hi, h.weight_hi, h.clamped) == (A, B, 0.5, None)
    assert h.score == pytest.approx(0.6)  # 0.5 * 0.5 + 0.5 * 0.7
    h = hull_at([A, B, C, D], 200)
    assert (h.lo, h.hi, h.weight_hi, h.score) == (B, B, 0.0, 0.7)  # exactly on a vertex: one configuration


def test_step_at_a_latency_and_its_ties():
    pts = [A, B, C, D, E]
    assert step_at(pts, 150) == D and step_at(pts, 199.9) == D and step_at(pts, 200) == B
    assert step_at(pts, 300) == E  # E and C tie on score: the faster one
    twin = Point("A2", 100, 0.5)
    assert step_at([A, twin], 100) == A and step_at([twin, A], 100) == twin  # equal points: the first
    assert upper_hull([A, twin]) == [A]
    assert step_at(pts, 99) is None  # faster than every configuration: no step


def test_hull_clamped_left_and_right_and_flat_after_the_best():
    pts = [A, B, C, E]
    left = hull_at(pts, 50)
    assert (left.lo, left.hi, left.score, left.clamped) == (A, A, 0.5, "faster") and "clamped" in left.note
    assert upper_hull(pts) == [A, B, E]
    flat = hull_at(pts, 280)  # beyond E (the best) but within the slowest configuration: flat, not clamped
    assert (flat.lo, flat.score, flat.clamped) == (E, 0.75, None) and "flat" in flat.note
    right = hull_at(pts, 350)
    assert (right.lo, right.score, right.clamped) == (E, 0.75, "slower") and "slower than every" in right.note


def test_collinear_points_stay_vertices():
    p0, p1, p2 = Point("p0", 0, 0.0), Point("p1", 1, 0.5), Point("p2", 2, 1.0)
    assert upper_hull([p0, p1, p2]) == [p0, p1, p2]
    h = hull_at([p0, p1, p2], 1.5)
    assert (h.lo, h.hi, h.weight_hi, h.score) == (p1, p2, 0.5, 0.75)


def test_gap_closed():
    assert gap_closed(0.8, 0.6, 1.0) == (pytest.approx(0.5), None)
    assert gap_closed(0.5, 0.6, 1.0)[0] == pytest.approx(-0.25)
    value, why = gap_closed(0.7, 0.6, 0.6)  # the oracle equals the hull: nothing to close
    assert value is None and "no headroom" in why
    value, why = gap_closed(0.7, 0.6, 0.5)
    assert value is None and "below the hull" in why


def test_curve_area():
    assert curve_area([100, 300], [0.4, 0.65], 100, 300) == pytest.approx(105.0)
    assert curve_area([100, 200, 400], [0.25, 0.5, 0.75], 100, 300) == pytest.approx(37.5 + 56.25)


# -- statistics ---------------------------------------------------------------------------------
def test_wilson_interval_hand_computed():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.49016, abs=1e-5), pytest.approx(0.94331, abs=1e-5))
    lo, hi = wilson_interval(0, 5)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.434484, abs=1e-5)
    assert wilson_interval(0, 0) is None


def test_paired_bootstrap_reproducible_for_a_seed():
    a = [1, 0, 1, 1, 0, 1, 0.5, 1, 0, 1]
    b = [0, 0, 1, 0, 1, 1, 0.0, 1, 0, 0]
    assert paired_bootstrap_diff(a, b, seed=3) == paired_bootstrap_diff(a, b, seed=3)
    assert paired_win_share(a, b, seed=3) == paired_win_share(a, b, seed=3)
    assert paired_win_share(a, b, seed=3, n_boot=500) != paired_win_share(a, b, seed=6, n_boot=500)
    assert paired_win_share([1, 1], [0, 0]) == 1.0 and paired_win_share([0, 1], [0, 1]) == 0.5
    # one positive difference among four: a resample misses it with probability (3/4)^4 and then ties
    assert paired_win_share([0, 0, 0.6, 0], [0] * 4, n_boot=4000) == pytest.approx(1 - 0.75 ** 4 / 2, abs=0.03)
    assert math.isnan(paired_win_share([], []))


# -- a hand-computed comparison -----------------------------------------------------------------
# sweep: score per sample, measured latency 100 / 200 / 400 ms; hull vertices all three
SWEEP = {"12,2,low": ([1, 0, 0, 0], 100), "14,4,low": ([1, 1, 0, 0], 200), "16,8,high": ([1, 1, 1, 0], 400)}
POLICY = {"name": "learned", "args": {"trade_off": 0.1}}


def make_sweep(root: Path, batch1_factor: float | None = 0.9, **kw) -> Path:
    for knobs, (scores, lat) in SWEEP.items():
        run = make_run(root / "sweep" / "vqav2", knobs=knobs, scores=scores, ids=IDS, latency_ms=lat, **kw)
        if batch1_factor is not None:
            patch(run, estimated_batch1=b1([lat * batch1_factor] * 4))
    return root / "sweep"


def make_policy(root: Path, name="pol-a", scores=(1, 1, 0.6, 0), lat=(200, 200, 400, 400), batch1=True,
                policy=POLICY, summary=None, **kw) -> Path:
    run = make_run(root / "policies", knobs=None, policy=policy, name=name, scores=list(scores), ids=IDS,
                   latency_ms=list(lat), **kw)
    fields = {"config": ["14,4,low", "14,4,low", "16,8,high", "16,8,high"]}
    if batch1:
        fields.update(estimated_batch1=b1([0.9 * v for v in lat]), policy_ms=[1.0, 2.0, 3.0, 4.0], host_ms=[10.0] * 4)
    return patch(run, summary=summary, **fields)


@pytest.fixture
def setup(tmp_path):
    return make_sweep(tmp_path), make_policy(tmp_path)


def build(policies, sweep, **kw):
    return compare.build(load_runs(policies), load_runs([sweep]), **kw)


def test_hand_computed_figures(setup):
    sweep, pol = setup
    (t,) = build([pol], sweep, budget_ms=350)
    d = t.doc
    assert d["latency"]["kind"] == "measured" and d["n_compared"] == 4
    assert [c["config"] for c in d["configs"]] == ["12,2,low", "14,4,low", "16,8,high"]
    assert all(c["on_hull"] and c["on_step_frontier"] for c in d["configs"])
    (p,) = d["policies"]
    assert p["score"] == pytest.approx(0.65) and p["label"] == "policy:learned(trade_off=0.1)"
    assert p["latency_ms"]["mean"] == 300 and p["latency_ms"]["p50"] == 300 and p["latency_ms"]["p90"] == 400
    assert p["configs_used"] == {"14,4,low": 2, "16,8,high": 2}
    step = p["frontier_step"]
    assert step["config"] == "14,4,low" and step["score"] == 0.5 and step["diff"] == pytest.approx(0.15)
    assert step["diff_ci95"][0] <= 0.15 <= step["diff_ci95"][1]
    assert step["p_beats"] == pytest.approx(1 - 0.75 ** 4 / 2, abs=0.04)
    hull = p["frontier_hull"]  # halfway between 200 and 400 ms: 0.5 x 14,4,low + 0.5 x 16,8,high
    assert (hull["lo"], hull["hi"], hull["weight_hi"]) == ("14,4,low", "16,8,high", 0.5)
    assert hull["score"] == pytest.approx(0.625) and hull["diff"] == pytest.approx(0.025)  # per sample [0, 0, .1, 0]
    o = d["oracle"]  # s0 -> 12,2,low; s1 -> 14,4,low; s2 -> 16,8,high; s3 unanswered -> the cheapest, 12,2,low
    assert o["score"] == 0.75 and o["latency_ms"]["mean"] == 200 and (o["answered"], o["unanswerable"]) == (3, 1)
    assert o["configs_used"] == {"12,2,low": 2, "14,4,low": 1, "16,8,high": 1}
    assert p["gap_closed"] == pytest.approx((0.65 - 0.625) / (0.75 - 0.625))  # 0.2
    bud = p["budget"]
    assert bud["source"] == "--budget-ms"
    m, e = bud["measured"], bud["estimated_batch1"]
    assert (m["within"], m["n"], m["share_within"]) == (2, 4, 0.5)
    assert tuple(m["share_within_ci95"]) == pytest.approx(wilson_interval(2, 4))
    assert m["overshoot_mean_ms"] == pytest.approx(50) and m["overshoot_p90_ms"] == pytest.approx(50)
    assert (e["within"], e["overshoot_mean_ms"]) == (2, pytest.approx(10))  # 0.9 x 400 = 360 > 350
    cost = p["controller_ms"]
    assert cost["policy"]["mean"] == pytest.approx(2.5) and cost["policy"]["p90"] == pytest.approx(3.7)
    assert cost["host"]["mean"] == 10 and cost["policy_share_of_model"] == pytest.approx(2.5 / 300)


def test_area_under_several_runs_of_one_policy(tmp_path):
    sweep = make_sweep(tmp_path)
    a = make_policy(tmp_path)
    b = make_policy(tmp_path, name="pol-b", scores=(1, 0.6, 0, 0), lat=(100,) * 4,
                    policy={"name": "learned", "args": {"trade_off": 1.0}})
    (t,) = build([a, b], sweep)
    (c,) = t.doc["curves"]
    assert c["policy"] == "learned" and c["range_ms"] == [100, 300]
    assert c["policy_area"] == pytest.approx(105.0) and c["hull_area"] == pytest.approx(93.75)
    assert c["difference"] == pytest.approx((105 - 93.75) / 200)
    fast = next(p for p in t.doc["policies"] if p["run_dir"] == str(b))
    assert fast["frontier_step"]["config"] == "12,2,low" and fast["frontier_hull"]["score"] == 0.25
    assert fast["gap_closed"] == pytest.approx((0.4 - 0.25) / (0.75 - 0.25))


def test_policy_faster_and_slower_than_every_configuration(tmp_path):
    sweep = make_sweep(tmp_path)
    fast = make_policy(tmp_path, name="fast", lat=(50,) * 4)
    slow = make_policy(tmp_path, name="slow", lat=(500,) * 4, policy={"name": "other"})
    (t,) = build([fast, slow], sweep)
    pf = next(p for p in t.doc["policies"] if p["run_dir"] == str(fast))
    ps = next(p for p in t.doc["policies"] if p["run_dir"] == str(slow))
    assert pf["frontier_step"]["config"] is None and "faster than every" in pf["frontier_step"]["note"]
    assert pf["frontier_hull"]["clamped"] == "faster" and pf["frontier_hull"]["lo"] == "12,2,low"
    assert pf["frontier_hull"]["diff"] == pytest.approx(0.65 - 0.25)
    assert any("clamped" in n for n in pf["notes"])
    assert ps["frontier_step"]["config"] == "16,8,high" and ps["frontier_hull"]["clamped"] == "slower"
    assert ps["frontier_hull"]["score"] == 0.75
    assert t.doc["curves"] == []  # two different policies: no curve


def test_gap_closed_undefined_when_the_oracle_equals_the_hull(tmp_path):
    # every sample answered by the slowest configuration only: the oracle is 16,8,high itself
    for knobs, scores, lat in (("12,2,low", [0, 0, 0, 0], 100), ("16,8,high", [1, 1, 1, 1], 400)):
        make_run(tmp_path / "sweep", knobs=knobs, scores=scores, ids=IDS, latency_ms=lat)
    pol = make_policy(tmp_path, lat=(400,) * 4, batch1=False)
    (t,) = build([pol], tmp_path / "sweep")
    (p,) = t.doc["policies"]
    assert t.doc["oracle"]["score"] == 1.0 and p["frontier_hull"]["score"] == 1.0
    assert p["gap_closed"] is None and "no headroom" in p["gap_closed_reason"]
    assert "not measured" in p["controller_ms"]["note"]
    assert p["budget"] is None


def test_the_runs_own_budget_and_no_estimated_batch1(tmp_path):
    sweep = make_sweep(tmp_path, batch1_factor=None)
    pol = make_policy(tmp_path, batch1=False, summary={"latency_budget": {"budget_ms": 250.0}})
    (t,) = build([pol], sweep)
    bud = t.doc["policies"][0]["budget"]
    assert bud["source"] == "the run's budget" and bud["budget_ms"] == 250
    assert bud["measured"]["within"] == 2 and bud["estimated_batch1"]["n"] == 0
    assert "no estimated_batch1" in bud["estimated_batch1"]["note"]


def test_busy_cpu_measurements_are_noted(tmp_path):
    sweep = make_sweep(tmp_path)
    pol = make_policy(tmp_path, summary={"host_load": {"load_1m": [5.0, 5.0], "cpus": 2, "busy": True}})
    (t,) = build([pol], sweep)
    assert any("1 of 4 runs were measured on a busy CPU" in n for n in t.doc["notes"])
    (t,) = build([pol], sweep, latency="estimated_batch1")  # the estimate is not disturbed by the load
    assert not any("busy" in n for n in t.doc["notes"])


def test_batched_policy_is_compared_on_estimated_batch1(tmp_path):
    sweep = make_sweep(tmp_path)
    pol = make_policy(tmp_path, batch_size=4)
    (t,) = build([pol], sweep)
    d = t.doc
    assert d["latency"]["kind"] == "estimated_batch1" and "batched" in d["latency"]["reason"]
    p = d["policies"][0]
    assert p["latency_ms"]["mean"] == pytest.approx(270)  # 0.9 x 300, on the same basis as the sweep (0.9 x)
    assert p["frontier_hull"]["weight_hi"] == pytest.approx(0.5)
    assert p["budget"] is None
    with pytest.raises(Exception, match="batched run has no per-sample measurement"):
        build([pol], sweep, latency="measured")


def test_old_batched_runs_fall_back_with_a_label(tmp_path):
    sweep = make_sweep(tmp_path, batch1_factor=None)
    pol = make_policy(tmp_path, batch1=False, batch_size=4)
    (t,) = build([pol], sweep)
    assert t.doc["latency"]["kind"] == "measured_per_batch"
    assert "not its own" in t.doc["latency"]["label"]


def test_outputs_and_cli(setup, tmp_path, capsys):
    sweep, pol = setup
    out = tmp_path / "out"
    code, stdout, err = cli(["compare", pol, "--sweep", sweep, "--budget-ms", 350, "-o", out], capsys)
    assert code == 0, err
    assert "frontier_hull" in stdout and "measured at batch 1" in stdout
    md = (out / "compare.md").read_text()
    assert "## vqav2 (vqa_score)" in md and "0.50 x 14,4,low + 0.50 x 16,8,high" in md
    assert "## Definitions" in md and "gap_closed" in md and "| 0.20 |" in md
    assert "50.0% within 350 ms" in md
    doc = json.loads((out / "compare.json").read_text())
    assert doc["format"] == "harness-compare/1" and doc["tasks"][0]["policies"][0]["gap_closed"] == pytest.approx(0.2)
    png = (out / "compare-vqav2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    code, stdout, _ = cli(["compare", pol, "--sweep", sweep, "--json", "--seed", 5, "--n-boot", 500], capsys)
    again = json.loads(stdout)
    assert code == 0 and again["seed"] == 5 and again["n_boot"] == 500
    code, stdout2, _ = cli(["compare", pol, "--sweep", sweep, "--json", "--seed", 5, "--n-boot", 500], capsys)
    assert stdout2 == stdout  # reproducible for a seed


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("change,needle", [
    ({"model": "hf:other"}, "models differ"),
    ({"fingerprint": "f" * 64}, "item sets"),
    ({"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}, "devices differ"),
    ({"dtype": "bfloat16"}, "devices differ"),
])
def test_incomparable_runs_are_refused(tmp_path, capsys, change, needle):
    sweep = make_sweep(tmp_path)
    pol = make_policy(tmp_path, **change)
    code, _, err = cli(["compare", pol, "--sweep", sweep], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err and "pol-a" in err


def test_bad_inputs(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    pol = make_policy(tmp_path)
    other = make_run(tmp_path / "other", task="chartqa", metric="ansl_em", knobs=None, policy=POLICY, name="c",
                     scores=[1, 0])
    cases = [
        (["compare", tmp_path / "nope", "--sweep", sweep], "does not exist"),
        (["compare", other, "--sweep", sweep], "no fixed configuration of task 'chartqa'"),
        (["compare", pol, "--sweep", tmp_path / "policies"], "holds no fixed-configuration run"),
        (["compare", pol, "--sweep", sweep, "--n-boot", 10], "too few resamples"),
    ]
    for args, needle in cases:
        code, _, err = cli(args, capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, (args, err)


def test_no_shared_sample_ids_is_refused(tmp_path, capsys):
    sweep = make_sweep(tmp_path, fingerprint="a" * 64)
    run = make_run(tmp_path / "p", knobs=None, policy=POLICY, name="p", scores=[1, 0], ids=["x", "y"],
                   fingerprint="a" * 64)
    code, _, err = cli(["compare", run, "--sweep", sweep], capsys)
    assert code == 2 and "share no scored sample id" in err and err.count("\n") == 1


def test_duplicate_configuration_in_the_sweep_is_refused(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "again", knobs="12,2,low", scores=[1, 0, 0, 0], ids=IDS, latency_ms=100)
    pol = make_policy(tmp_path)
    code, _, err = cli(["compare", pol, "--sweep", sweep], capsys)
    assert code == 2 and "appears twice" in err
