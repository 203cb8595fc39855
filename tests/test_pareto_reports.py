"""Pareto tables: flags on a hand-checked set, dominated-by, outputs, bad input."""

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "rundirs"))
from rundir_factory import make_run  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.reports.pareto import build_tables, frontier  # noqa: E402
from harness.reports.rundirs import load_runs  # noqa: E402


def cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, args)))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# score = mean of the per-sample list; measured / estimated total latency per config
HAND = {
    "16,8,high": ([1, 1, 1, 0], 200, 190),  # best score: optimal both ways
    "14,6,high": ([1, 1, 0, 0], 150, 160),  # optimal (tie with 13,4 measured)
    "13,4,high": ([1, 0, 1, 0], 150, 165),  # same score+latency as 14,6 measured: both optimal; estimated: dominated by 14,6
    "12,2,high": ([1, 0, 0, 0], 100, 170),  # fastest measured: optimal; estimated: dominated
    "12,4,high": ([0, 0, 0, 1], 120, 100),  # measured: dominated by 12,2 (equal score, slower); estimated: fastest
    "15,8,high": ([0, 1, 1, 0], 210, 200),  # dominated by 16,8 (highest-scoring dominator) both ways
}
EXPECTED = {  # config: (optimal measured, dominated_by measured, optimal estimated, dominated_by estimated)
    "16,8,high": (True, None, True, None),
    "14,6,high": (True, None, True, None),
    "13,4,high": (True, None, False, "14,6,high"),
    "12,2,high": (True, None, False, "14,6,high"),
    "12,4,high": (False, "12,2,high", True, None),
    "15,8,high": (False, "16,8,high", False, "16,8,high"),
}


@pytest.fixture
def hand_runs(tmp_path):
    root = tmp_path / "sweep" / "vqav2"
    for knobs, (scores, lat, est) in HAND.items():
        make_run(root, knobs=knobs, scores=scores, latency_ms=lat, estimated_ms=est)
    return tmp_path / "sweep"


def test_frontier_definition():
    pts = [(0.5, 100.0), (0.5, 100.0), (0.4, 100.0), (0.6, 300.0), None, (0.6, 200.0)]
    got = frontier(pts)
    assert got[0] == (True, None) and got[1] == (True, None)  # equal points do not dominate each other
    assert got[2] == (False, 0)  # lower score at equal latency; first of the equal dominators
    assert got[3] == (False, 5)  # equal score, slower
    assert got[4] == (None, None)
    assert got[5] == (True, None)


def test_hand_checked_flags_and_dominated_by(hand_runs):
    (table,) = build_tables(load_runs([hand_runs]))
    assert [r.label for r in table.rows] == ["12,2,high", "12,4,high", "13,4,high", "14,6,high", "15,8,high", "16,8,high"]
    for row in table.rows:
        exp = EXPECTED[row.label]
        got = (row.pareto["measured"], row.dominated_by["measured"], row.pareto["estimated"], row.dominated_by["estimated"])
        assert got == exp, row.label
    row = next(r for r in table.rows if r.label == "16,8,high")
    assert row.score == 0.75
    assert row.latency["measured"]["total"]["p50"] == 200 and row.latency["measured"]["prefill"]["mean"] == pytest.approx(80)
    assert row.latency["estimated"]["decode"]["p50"] == pytest.approx(114)


def test_mean_stat_changes_the_frontier(tmp_path):
    root = tmp_path / "r"
    # p50 equal, but 12,2 has a long tail: on the mean it is slower than 14,6
    make_run(root, knobs="12,2", scores=[1, 0, 0, 0], latency_ms=[100, 100, 100, 1000])
    make_run(root, knobs="14,6", scores=[1, 1, 0, 0], latency_ms=[150, 150, 150, 150])
    p50 = {r.label: r.pareto["measured"] for r in build_tables(load_runs([root]))[0].rows}
    mean = {r.label: r.pareto["measured"] for r in build_tables(load_runs([root]), stat="mean")[0].rows}
    assert p50 == {"12,2": True, "14,6": True}
    assert mean == {"12,2": False, "14,6": True}


def test_outputs_written(hand_runs, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = cli(["pareto", hand_runs, "-o", out], capsys)
    assert code == 0
    assert "16,8,high" in stdout
    md = (out / "pareto.md").read_text()
    assert "| 12,4,high |" in md and "no (12,2,high)" in md
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert len(rows) == 6
    r = next(x for x in rows if x["config"] == "15,8,high")
    assert r["pareto_measured"] == "false" and r["dominated_by_measured"] == "16,8,high"
    assert float(r["score"]) == 0.5 and float(r["measured_total_p50_ms"]) == 210
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["format"] == "harness-pareto/1"
    (task,) = doc["tasks"]
    assert task["task"] == "vqav2"
    flags = {x["config"]: (x["pareto_measured"], x["dominated_by_measured"]) for x in task["rows"]}
    assert flags == {k: v[:2] for k, v in EXPECTED.items()}
    png = (out / "pareto-vqav2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_two_tasks_two_tables(tmp_path):
    make_run(tmp_path / "a", task="vqav2", knobs="14,6", scores=[1, 0])
    make_run(tmp_path / "b", task="chartqa", metric="ansl_em", knobs="14,6", scores=[0.5, 1.0])
    tables = build_tables(load_runs([tmp_path]))
    assert [t.task for t in tables] == ["chartqa", "vqav2"]
    assert tables[0].rows[0].score == 0.75


def test_no_estimator_gives_no_estimated_flags(tmp_path):
    make_run(tmp_path, knobs="14,6", scores=[1, 0], estimated_ms=None)
    (table,) = build_tables(load_runs([tmp_path]))
    assert table.rows[0].pareto == {"measured": True, "estimated": None}


@pytest.mark.parametrize("change,needle", [
    ({"model": "hf:other"}, "models differ"),
    ({"fingerprint": "f" * 64}, "item sets"),
    ({"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}, "devices"),
])
def test_incomparable_runs_are_refused(tmp_path, capsys, change, needle):
    make_run(tmp_path, knobs="14,6", scores=[1, 0], ids=["a", "b"])
    make_run(tmp_path, knobs="16,8", scores=[1, 1], ids=["a", "b"], **change)
    code, _, err = cli(["pareto", tmp_path], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert needle in err and "b14-k6" in err and "b16-k8" in err


def test_bad_inputs(tmp_path, capsys):
    code, _, err = cli(["pareto", tmp_path / "nope"], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli(["pareto", tmp_path / "empty"], capsys)
    assert code == 2 and "holds no run directory" in err
    run = make_run(tmp_path / "c", knobs="14,6")
    (run / "summary.json").write_text('{"task": "vqav2", ')
    code, _, err = cli(["pareto", run], capsys)
    assert code == 2 and "not valid JSON" in err and err.count("\n") == 1
    (run / "summary.json").write_text('{"task": "vqav2"}')
    code, _, err = cli(["pareto", run], capsys)
    assert code == 2 and "lacks" in err and "metric" in err


def test_duplicate_configuration_is_refused(tmp_path):
    make_run(tmp_path / "x", knobs="14,6")
    make_run(tmp_path / "y", knobs="14,6")
    with pytest.raises(HarnessError, match="appears twice"):
        build_tables(load_runs([tmp_path]))


def test_policy_runs_are_rows(tmp_path):
    make_run(tmp_path, knobs="14,6", scores=[1, 0], latency_ms=100)
    make_run(tmp_path, knobs=None, policy={"name": "budget", "args": {"latency_budget_ms": 90}}, scores=[1, 1],
             latency_ms=90, name="policy-budget")
    (table,) = build_tables(load_runs([tmp_path]))
    labels = [r.label for r in table.rows]
    assert labels == ["14,6", "policy:budget(latency_budget_ms=90)"]
    assert table.rows[0].dominated_by["measured"] == "policy:budget(latency_budget_ms=90)"


def test_unfinished_runs_are_skipped_with_a_warning(hand_runs, capsys):
    (hand_runs / "vqav2" / "b13-k4-high" / "summary.json").unlink()
    code, out, err = cli(["pareto", hand_runs], capsys)
    assert code == 0 and "skipped 1 unfinished run dir" in err and "b13-k4-high" in err
    assert "13,4,high" not in out


def test_fixture_factory_matches_the_runner_records(run_fake, tmp_path):
    """The hand-built fixtures use the runner's own key names (guards against drift)."""
    real_summary, real_lines, _ = run_fake(knobs="8,4", out=tmp_path / "real")
    fake = make_run(tmp_path / "fixture", knobs="8,4,medium")
    fake_summary = json.loads((fake / "summary.json").read_text())
    fake_line = json.loads((fake / "samples.jsonl").read_text().splitlines()[0])
    assert set(fake_summary) <= set(real_summary), set(fake_summary) - set(real_summary)
    assert set(fake_line) <= set(real_lines[0]), set(fake_line) - set(real_lines[0])
    assert set(fake_summary["latency_ms"]["measured"]["total"]) <= set(real_summary["latency_ms"]["measured"]["total"])
    real = load_runs([tmp_path / "real"])[0]
    assert real.label == "8,4,medium" and real.score == real_summary["score"]
    assert real.lat("measured") == real_summary["latency_ms"]["measured"]["total"]["p50"]
    scores, failed = real.sample_scores()
    assert len(scores) == real_summary["n"] and failed == []
