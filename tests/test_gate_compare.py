"""Regression gate: pass, accuracy fail, latency fail, missing samples and configurations, device differs,
model change, bad input."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "rundirs"))
from rundir_factory import make_run  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.reports.gate import read_baseline, run_gate  # noqa: E402
from harness.reports.rundirs import load_runs  # noqa: E402

IDS = [f"q{i:02d}" for i in range(40)]
GOOD = [1.0 if i % 4 else 0.0 for i in range(40)]  # 0.75


def cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, args)))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def baseline(tmp_path, capsys):
    base = tmp_path / "base"
    make_run(base, knobs="16,8,high", scores=GOOD, ids=IDS, latency_ms=100, estimated_ms=90)
    make_run(base, knobs="12,2,high", scores=GOOD[::-1], ids=IDS, latency_ms=60, estimated_ms=55)
    path = tmp_path / "leaderboard" / "baseline.json"
    code, out, _ = cli(["gate", "--write-baseline", path, base], capsys)
    assert code == 0 and "2 configuration(s)" in out
    return path


def test_baseline_file(baseline, tmp_path, capsys):
    entries = read_baseline(baseline)
    assert [(e["task"], e["config"]) for e in entries] == [("vqav2", "12,2,high"), ("vqav2", "16,8,high")]
    e = entries[1]
    assert e["scores"]["q00"] == 0.0 and e["scores"]["q01"] == 1.0 and len(e["scores"]) == 40
    assert e["latency_p50_ms"] == {"measured": 100.0, "estimated": 90.0}
    assert e["device"] == "cpu" and e["fingerprint"] and e["model"] == "reference"
    # deterministic: writing again from the same runs gives the same bytes
    again = tmp_path / "again.json"
    cli(["gate", "--write-baseline", again, tmp_path / "base"], capsys)
    assert again.read_bytes() == baseline.read_bytes()


def test_same_runs_pass(baseline, tmp_path, capsys):
    md = tmp_path / "summary.md"
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "base", "--markdown", md], capsys)
    assert code == 0 and "PASS" in out
    text = md.read_text()
    assert text.startswith("## harness gate: PASS") and "| vqav2 | 16,8,high |" in text


def test_accuracy_regression_fails(baseline, tmp_path, capsys):
    worse = [0.0 if i % 3 == 0 else s for i, s in enumerate(GOOD)]  # drops to ~0.55 on the same items
    make_run(tmp_path / "cand", knobs="16,8,high", scores=worse, ids=IDS, latency_ms=100)
    md = tmp_path / "s.md"
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "cand", "--markdown", md], capsys)
    assert code == 1 and "REGRESSION" in out
    assert md.read_text().startswith("## harness gate: FAIL")
    (res,) = [r for r in run_gate(load_runs([tmp_path / "cand"]), read_baseline(baseline)) if r.config == "16,8,high"]
    assert res.diff == pytest.approx(sum(worse) / 40 - 0.75)
    assert res.ci[1] < 0


def test_small_drop_within_tolerance_passes(baseline, tmp_path, capsys):
    one_worse = list(GOOD)
    one_worse[1] = 0.0  # -0.025 on 40 items, but the CI includes zero
    make_run(tmp_path / "cand", knobs="16,8,high", scores=one_worse, ids=IDS, latency_ms=100)
    (res, _) = sorted(run_gate(load_runs([tmp_path / "cand"]), read_baseline(baseline)), key=lambda r: r.config != "16,8,high")
    assert res.diff == pytest.approx(-0.025) and res.accuracy == "ok"
    # even with no tolerance, one changed item in 40 is not significant: the CI reaches zero
    assert run_gate(load_runs([tmp_path / "cand"]), read_baseline(baseline), tolerance=0.0)[1].accuracy == "ok"


def test_latency_regression_and_no_latency(baseline, tmp_path, capsys):
    make_run(tmp_path / "slow", knobs="16,8,high", scores=GOOD, ids=IDS, latency_ms=160, estimated_ms=90)
    make_run(tmp_path / "slow", knobs="12,2,high", scores=GOOD[::-1], ids=IDS, latency_ms=60, estimated_ms=55)
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "slow"], capsys)
    assert code == 1 and "1.60x" in out
    code, _, _ = cli(["gate", "--baseline", baseline, tmp_path / "slow", "--latency-tolerance", "2"], capsys)
    assert code == 0
    code, _, _ = cli(["gate", "--baseline", baseline, tmp_path / "slow", "--no-latency"], capsys)
    assert code == 0


def test_device_differs_is_not_comparable(baseline, tmp_path, capsys):
    # measured 10x slower on another device, estimate unchanged: the gate cannot see the slowdown
    # and must say so instead of printing "ok"
    for where in ("gpu", "gpu2"):
        make_run(tmp_path / where, knobs="12,2,high", scores=GOOD[::-1], ids=IDS, latency_ms=6, estimated_ms=55,
                 device="cuda", device_name="NVIDIA H100 80GB HBM3", dtype="float32")
    make_run(tmp_path / "gpu", knobs="16,8,high", scores=GOOD, ids=IDS, latency_ms=1000, estimated_ms=95,
             device="cuda", device_name="NVIDIA H100 80GB HBM3", dtype="float32")
    (res, _) = sorted(run_gate(load_runs([tmp_path / "gpu"]), read_baseline(baseline)), key=lambda r: r.config != "16,8,high")
    assert res.latency == "not comparable (device)" and res.latency_comparable is False and not res.failed
    assert res.latency_kind == "estimated" and res.ratio == pytest.approx(95 / 90)
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "gpu", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and {r["latency"] for r in doc["results"]} == {"not comparable (device)"}
    assert doc["results"][0]["latency_comparable"] is False
    assert any("not comparable" in c for c in doc["caveats"])
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "gpu"], capsys)
    assert code == 0 and "not comparable (device)" in out and " ok " not in out.split("latency")[-1]
    # a larger estimate (more tokens for the same configuration) still fails
    make_run(tmp_path / "gpu2", knobs="16,8,high", scores=GOOD, ids=IDS, latency_ms=10, estimated_ms=200,
             device="cuda", device_name="NVIDIA H100 80GB HBM3", dtype="float32")
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "gpu2"], capsys)
    assert code == 1 and "estimated" in out and "REGRESSION" in out
    # another dtype on the same device says which
    make_run(tmp_path / "bf16", knobs="16,8,high", scores=GOOD, ids=IDS, latency_ms=50, estimated_ms=90, dtype="bfloat16")
    (res,) = [r for r in run_gate(load_runs([tmp_path / "bf16"]), read_baseline(baseline)) if r.run_dir]
    assert res.latency == "not comparable (dtype)"


def test_missing_samples_fail_unless_allowed(baseline, tmp_path, capsys):
    make_run(tmp_path / "part", knobs="16,8,high", scores=GOOD[:30] + [1.0], ids=IDS[:30] + ["extra"],
             fingerprint=json.loads(baseline.read_text())["runs"][1]["fingerprint"], latency_ms=100)
    make_run(tmp_path / "part", knobs="12,2,high", scores=GOOD[::-1], ids=IDS, latency_ms=60)
    results = run_gate(load_runs([tmp_path / "part"]), read_baseline(baseline))
    (res,) = [r for r in results if r.config == "16,8,high"]
    assert res.n_common == 30 and res.missing_in_candidate == IDS[30:] and res.new_in_candidate == ["extra"]
    assert res.accuracy == "ok" and res.samples == "missing" and res.failed  # scores agree, samples lost: fails
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "part"], capsys)
    assert code == 1 and "10 MISSING" in out
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "part", "--allow-missing-samples"], capsys)
    assert code == 0 and "10 missing (allowed)" in out and "10 baseline sample(s) missing" in out
    # piped output (not a terminal): each table row on one line, no folded cells
    (row,) = [line for line in out.splitlines() if "16,8,high" in line]
    assert "10 missing (allowed)" in row and "gated on the rest" in row
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "part", "--allow-missing-samples", "--json"], capsys)
    assert json.loads(out)["results"][1]["n_missing"] == 10


def test_missing_configuration_fails_unless_allowed(baseline, tmp_path, capsys):
    make_run(tmp_path / "one", knobs="16,8,high", scores=GOOD, ids=IDS, latency_ms=100)
    (res, not_run) = sorted(run_gate(load_runs([tmp_path / "one"]), read_baseline(baseline)), key=lambda r: r.run_dir is None)
    assert not res.failed and not_run.config == "12,2,high" and not_run.accuracy == "not run" and not_run.failed
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "one"], capsys)
    assert code == 1 and "NOT RUN" in out
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "one", "--require-all"], capsys)
    assert code == 1  # the old flag is accepted and means the default
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "one", "--allow-missing-configs"], capsys)
    assert code == 0 and "not run, allowed by --allow-missing-configs" in out


def test_model_change_needs_flag_and_is_paired(baseline, tmp_path, capsys):
    worse = [0.0 if i % 3 == 0 else s for i, s in enumerate(GOOD)]
    make_run(tmp_path / "new", knobs="16,8,high", scores=worse, ids=IDS, latency_ms=100, model="hf:/ckpt/v2")
    make_run(tmp_path / "new", knobs="12,2,high", scores=GOOD[::-1], ids=IDS, latency_ms=60, model="hf:/ckpt/v2")
    code, _, err = cli(["gate", "--baseline", baseline, tmp_path / "new"], capsys)
    assert code == 2 and "model differs" in err and "--allow-model-change" in err and err.count("\n") == 1
    code, out, _ = cli(["gate", "--baseline", baseline, tmp_path / "new", "--allow-model-change"], capsys)
    assert code == 1 and "REGRESSION" in out and "model changed" in out
    results = run_gate(load_runs([tmp_path / "new"]), read_baseline(baseline), allow_model_change=True)
    (res,) = [r for r in results if r.config == "16,8,high"]
    assert res.base_model == "reference" and res.diff == pytest.approx(sum(worse) / 40 - 0.75)
    (ok,) = [r for r in results if r.config == "12,2,high"]
    assert not ok.failed and ok.n_common == 40


def test_retrained_weights_are_a_model_change(baseline, tmp_path, capsys):
    doc = json.loads(baseline.read_text())
    for e in doc["runs"]:
        e["model_fingerprint"] = "aaaa"
    baseline.write_text(json.dumps(doc))
    for knobs, sc in (("16,8,high", GOOD), ("12,2,high", GOOD[::-1])):
        run = make_run(tmp_path / "re", knobs=knobs, scores=sc, ids=IDS, latency_ms=100)
        summ = json.loads((run / "summary.json").read_text())
        summ["model_fingerprint"] = "bbbb"
        (run / "summary.json").write_text(json.dumps(summ))
    code, _, err = cli(["gate", "--baseline", baseline, tmp_path / "re", "--no-latency"], capsys)
    assert code == 2 and "reference@bbbb" in err and "reference@aaaa" in err
    code, _, _ = cli(["gate", "--baseline", baseline, tmp_path / "re", "--no-latency", "--allow-model-change"], capsys)
    assert code == 0


def test_failed_samples_count_as_wrong(baseline, tmp_path):
    make_run(tmp_path / "err", knobs="16,8,high", scores=GOOD, ids=IDS, errors={i: "backend failed" for i in range(1, 20)})
    (res,) = [r for r in run_gate(load_runs([tmp_path / "err"]), read_baseline(baseline)) if r.run_dir]
    assert res.failed_candidate == 19 and res.accuracy == "regression"


def test_bad_inputs(baseline, tmp_path, capsys):
    make_run(tmp_path / "other_items", knobs="16,8,high", scores=GOOD, ids=[f"x{i}" for i in range(40)])
    code, _, err = cli(["gate", "--baseline", baseline, tmp_path / "other_items"], capsys)
    assert code == 2 and "item set differs" in err and err.count("\n") == 1
    make_run(tmp_path / "other_model", knobs="16,8,high", scores=GOOD, ids=IDS, model="hf:x")
    code, _, err = cli(["gate", "--baseline", baseline, tmp_path / "other_model"], capsys)
    assert code == 2 and "model differs" in err
    make_run(tmp_path / "new_cfg", knobs="13,4,high", scores=GOOD, ids=IDS)
    code, _, err = cli(["gate", "--baseline", baseline, tmp_path / "new_cfg"], capsys)
    assert code == 2 and "no baseline entry" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"runs": []}')
    code, _, err = cli(["gate", "--baseline", bad, tmp_path / "base"], capsys)
    assert code == 2 and "not a gate baseline" in err
    code, _, err = cli(["gate", tmp_path / "base"], capsys)
    assert code == 2 and "exactly one of" in err
    code, _, err = cli(["gate", "--baseline", tmp_path / "nofile.json", tmp_path / "base"], capsys)
    assert code == 2 and "does not exist" in err


def test_improvement_passes_unless_two_sided(baseline, tmp_path):
    better = [1.0 if i % 3 else s for i, s in enumerate(GOOD)]
    make_run(tmp_path / "better", knobs="16,8,high", scores=better, ids=IDS, latency_ms=100)
    base = read_baseline(baseline)
    (res,) = [r for r in run_gate(load_runs([tmp_path / "better"]), base) if r.run_dir]
    assert res.accuracy == "improved" and not res.failed
    (res,) = [r for r in run_gate(load_runs([tmp_path / "better"]), base, two_sided=True) if r.run_dir]
    assert res.accuracy == "changed" and res.failed


def test_changed_predictions(baseline, tmp_path):
    run = make_run(tmp_path / "c", knobs="16,8,high", scores=GOOD, ids=IDS, latency_ms=100)
    lines = (run / "samples.jsonl").read_text().splitlines()
    import json as _json

    recs = [_json.loads(x) for x in lines]
    for r in recs[:4]:
        r["prediction"] = "something else"
    (run / "samples.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in recs))
    base = read_baseline(baseline)
    (res,) = [r for r in run_gate(load_runs([run]), base) if r.run_dir]
    assert res.n_changed_predictions == 4 and res.predictions == "ok" and not res.failed
    (res,) = [r for r in run_gate(load_runs([run]), base, max_changed=0.05) if r.run_dir]
    assert res.predictions == "changed" and res.failed  # 4/40 = 10% > 5%
    (res,) = [r for r in run_gate(load_runs([run]), base, max_changed=0.1) if r.run_dir]
    assert not res.failed
