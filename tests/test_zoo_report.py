"""leaderboard/reference-model.md from `harness sweep` run directories: the numbers are the
harness's own records, the checks follow them, and runs of different weights are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from tools import evaluate_reference as er


def _sweep(out: Path, grid: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--grid", grid, "--task", "scienceqa", "--model", "reference", "--device", "cpu",
              "--limit", "4", "--output", str(out), "--quiet"])
    assert exc.value.code == 0


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    _sweep(root / "main", "num_blocks=12,16 top_k=2,8 tier=low,high")
    _sweep(root / "grid", "num_blocks=12,16 top_k=2 tier=low,high")
    return root


def _summaries(path: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in path.rglob("summary.json")}


def test_report_numbers_are_the_runs_own(sweeps, tmp_path):
    data = er.from_runs([str(sweeps / "main")], [str(sweeps / "grid")], ["--from-runs", "x"])
    table = data["table"]["scienceqa"]
    # only the report's main configurations, in its column order
    assert list(table) == [c for c in er.MAIN_CONFIGS if c in {"16,8,high", "16,8,low", "12,8,high", "16,2,high", "12,2,low"}]
    by_slug = _summaries(sweeps / "main")
    assert table["16,8,high"]["n"] == 4
    for knobs, slug in (("16,8,high", "b16-k8-high"), ("12,2,low", "b12-k2-low")):
        assert table[knobs]["score"] == pytest.approx(by_slug[slug]["score"])
    grid = data["grid"]
    assert sorted(g["knobs"] for g in grid) == ["12,2,high", "12,2,low", "16,2,high", "16,2,low"]
    assert all(g["latency_ms"] > 0 for g in grid) and any(g["pareto"] for g in grid)
    # the cheapest point is always on the front unless another is as cheap and better
    cheapest = min(grid, key=lambda g: g["latency_ms"])
    assert cheapest["pareto"] or any(g["score"] > cheapest["score"] and g["latency_ms"] <= cheapest["latency_ms"] for g in grid)
    out = tmp_path / "report.md"
    er.write_markdown(out, data["table"], data["grid"], data["meta"])
    text = out.read_text()
    assert "`harness sweep` run directories" in text and "Acceptance checks" in text
    assert "scienceqa: 12,2,low at least 0.10 below 16,8,high" in text
    assert f"{len(grid)} runs" not in text  # the count covers both sweeps
    assert "12 runs" in text  # 8 main + 4 grid


def test_report_refuses_runs_of_other_weights(sweeps, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(sweeps / "grid", other)
    summary = next(other.rglob("summary.json"))
    data = json.loads(summary.read_text())
    data["model_fingerprint"] = "0" * 64
    summary.write_text(json.dumps(data))
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="models differ"):
        er.from_runs([str(sweeps / "main")], [str(other)], [])


def test_report_configs_are_the_sweep_grid():
    from harness.sweep import load_grid

    assert [str(k) for k in load_grid("reference-main").configs] == list(er.MAIN_CONFIGS)


def test_report_needs_runs(tmp_path):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="holds no run directory"):
        er.from_runs([str(tmp_path)], [], [])


def test_issue_checks_judge_each_knob_by_a_real_drop():
    from tools.evaluate_reference import issue_checks

    def table(alone_scores):
        full = {"scienceqa": 0.99, "textvqa": 0.8, "coco-caption": 6.0, "tallyqa": 0.8}
        return {n: {"16,8,high": {"score": v}, "12,8,high": {"score": v * alone_scores[n]},
                    "16,2,high": {"score": v}, "16,8,low": {"score": v * 0.5}} for n, v in full.items()}

    def verdict(checks, knob):
        return next(ok for name, _, ok in checks if name.startswith(f"{knob} alone"))

    # blocks cost 2 % on every task: moves; top_k identical everywhere: does not; tier halves: moves
    checks = issue_checks(table({"scienceqa": 0.98, "textvqa": 0.98, "coco-caption": 0.98, "tallyqa": 0.98}), [])
    assert verdict(checks, "num_blocks") and not verdict(checks, "top_k") and verdict(checks, "tier")
    # up on two tasks, down on two, net zero: noise, not a knob effect
    checks = issue_checks(table({"scienceqa": 0.95, "textvqa": 1.05, "coco-caption": 0.95, "tallyqa": 1.05}), [])
    assert not verdict(checks, "num_blocks")
    # one task collapses, the rest unchanged: a large mean but only 1 of 4 tasks lower
    checks = issue_checks(table({"scienceqa": 0.5, "textvqa": 1.0, "coco-caption": 1.0, "tallyqa": 1.0}), [])
    assert not verdict(checks, "num_blocks")
