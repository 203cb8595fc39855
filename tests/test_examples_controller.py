"""The worked example of examples/ end to end: sweep -> train the learned controller -> run it as a
policy with its checkpoint -> ``harness compare`` against the sweep. Once on the fake backend (the
default suite), once on the bundled reference model on CPU (``-m slow``, under a minute)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "learned_controller.py"
REFERENCE = ROOT / "harness" / "zoo" / "reference" / "config.json"
sys.path.insert(0, str(ROOT / "examples"))
import train_controller  # noqa: E402


def _loop(cli, tmp_path, *, grid: str, limit: int, extra=(), budget: float | None = None):
    sweep, weights, run, out = tmp_path / "sweep", tmp_path / "weights.json", tmp_path / "learned", tmp_path / "cmp"
    assert cli("sweep", "--task", "scienceqa", "--grid", grid, "--limit", limit, *extra, "-q", "-o", sweep) == 0
    assert train_controller.main([str(sweep), "-o", str(weights), "--seed", "0"]) == 0
    doc = json.loads(weights.read_text())
    assert doc["format"] == "examples.learned_controller/1" and len(doc["configs"]) == len(list((sweep / "scienceqa").iterdir()))
    budget_args = ["--latency-budget-ms", budget] if budget else []
    assert cli("run", "--task", "scienceqa", "--limit", limit, *extra, *budget_args, "-q", "-o", run,
               "--policy", f"{EXAMPLE}:Controller@{weights}") == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["policy"]["name"] == "learned-controller" and summary["policy"]["checkpoint"]["path"] == str(weights)
    assert cli("compare", run, "--sweep", sweep, "-o", out) == 0
    return json.loads((out / "compare.json").read_text()), (out / "compare.md").read_text(), out


def test_example_loop_on_the_fake_backend(harness_cli, tmp_path, capsys):
    doc, md, out = _loop(harness_cli, tmp_path, grid="num_blocks=6,8 top_k=2,4 tier=low,high", limit=8,
                         extra=("--estimator", "none"), budget=40.0)
    capsys.readouterr()
    (task,) = doc["tasks"]
    assert task["task"] == "scienceqa" and task["n_compared"] == 8 and len(task["configs"]) == 8
    assert task["latency"]["kind"] == "measured"
    (p,) = task["policies"]
    assert p["policy"] == "learned-controller" and sum(p["configs_used"].values()) == 8
    assert p["frontier_hull"]["score"] is not None and p["frontier_hull"]["diff_ci95"] is not None
    assert p["budget"]["source"] == "the run's budget" and p["budget"]["budget_ms"] == 40.0
    assert p["controller_ms"]["policy"]["n"] == 8  # policy_ms recorded by the runner
    assert "frontier_step" in md and "## Definitions" in md
    assert (out / "compare-scienceqa.png").stat().st_size > 5000
    # the module form of the same spec, resolved from the checkout (python -m harness puts it on the path)
    from harness.policies import split_checkpoint
    assert split_checkpoint("examples.learned_controller:Controller@w.json") == ("examples.learned_controller:Controller", "w.json")


def test_controller_without_weights_fails_its_samples_in_one_message(harness_cli, tmp_path, capsys):
    code = harness_cli("run", "--task", "scienceqa", "--limit", 2, "--estimator", "none", "-q", "--json",
                       "-o", tmp_path / "r", "--policy", f"{EXAMPLE}:Controller")
    cap = capsys.readouterr()
    assert code == 1 and "has no weights" in cap.err and cap.err.count("\n") == 1


def test_a_weights_file_of_another_kind_is_one_line(harness_cli, tmp_path, capsys):
    bad = tmp_path / "w.json"
    bad.write_text('{"format": "something else"}')
    code = harness_cli("run", "--task", "scienceqa", "--limit", 2, "--estimator", "none", "-q",
                       "-o", tmp_path / "r", "--policy", f"{EXAMPLE}:Controller@{bad}")
    err = capsys.readouterr().err
    assert code == 2 and "is not a weights file" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.skipif(not REFERENCE.is_file(), reason="the bundled reference model is not built yet")
def test_example_loop_on_the_reference_model(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))

    def cli(*args):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        return exc.value.code

    doc, md, _ = _loop(cli, tmp_path, grid="num_blocks=12,16 top_k=2,8 tier=low", limit=6, extra=("--device", "cpu"))
    (task,) = doc["tasks"]
    assert task["model"] == "reference" and task["n_compared"] == 6 and task["latency"]["kind"] == "measured"
    (p,) = task["policies"]
    assert 0.0 <= p["score"] <= 1.0 and p["latency_ms"]["mean"] > 0
    assert p["controller_ms"]["host"]["n"] == 6
    print(md)  # the sample output docs/compare.md shows (pytest -s)
